"""The user contract as a client sees it: job files go into the intake container, inputs into the
data container, and each run's documents are read from ``results/<run>/`` (docs/jobfile.md).

Nothing here knows how the pipeline works inside; it reads and writes only what the contract
names, so it works the same against the local stack and a deployment. Azure SDK errors become
`CliError`s here, each saying which endpoint and what to do.
"""
from __future__ import annotations

import difflib
import json
import os
import secrets
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)

from batchdrop_cli.config import HOW_TO_CONFIGURE, Target
from batchdrop_cli.errors import NOT_FOUND, UNREACHABLE, CliError
from shared import jobfile
from shared.naming import RunPaths

TERMINAL = ("succeeded", "failed", "cancelled", "rejected")
PENDING_WINDOW = timedelta(minutes=30)  # how long after a drop an unknown run id may still be on its way
Progress = Callable[[int, int | None], None]  # (bytes so far, total)


def utc_stamp() -> str:
    """A folder name that sorts by time and does not repeat: 20261202T175001Z-3fa9c1."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


@dataclass(frozen=True)
class RunStatus:
    """status.json as read (the document itself in `doc`, keys the CLI does not know kept)."""

    doc: dict[str, Any]

    @property
    def run_id(self) -> str:
        return str(self.doc.get("run_id", ""))

    @property
    def state(self) -> str:
        return str(self.doc.get("state", "?"))

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    def count(self, key: str) -> int:
        tasks = self.doc.get("tasks") or {}
        try:
            return int(tasks.get(key) or 0)
        except (TypeError, ValueError):
            return 0

    @property
    def total(self) -> int:
        return self.count("total")

    @property
    def done(self) -> int:
        """Tasks that finished, one way or another."""
        return self.count("succeeded") + self.count("failed") + self.count("stopped")

    def time(self, key: str) -> datetime | None:
        value = self.doc.get(key)
        return parse_time(value) if isinstance(value, str) else None

    @property
    def started(self) -> datetime | None:
        return self.time("created_at")

    @property
    def ended(self) -> datetime | None:
        if not self.terminal:
            return None
        return self.time("finished_at") or self.time("updated_at")

    def duration_s(self, now: datetime | None = None) -> float | None:
        start = self.started
        if start is None:
            return None
        end = self.ended or now or datetime.now(UTC)
        return max(0.0, (end - start).total_seconds())


class Contract:
    """The intake, data and results containers of one deployment (or the local stack)."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.settings = target.settings
        self.service = target.blob_service()

    # ------------------------------------------------------------------ errors

    @contextmanager
    def talking(self, container: str) -> Iterator[None]:
        """Turn the SDK's exceptions into CliErrors naming the endpoint and what to do."""
        try:
            yield
        except CliError:
            raise
        except (ServiceRequestError, ServiceResponseError) as e:
            raise CliError(f"cannot reach blob storage at {self.target.endpoint} (settings from {self.target.source}): "
                           f"{_first_line(e)}", UNREACHABLE, hint=HOW_TO_CONFIGURE) from None
        except ClientAuthenticationError as e:
            raise CliError(f"not signed in to, or not allowed on, blob storage at {self.target.endpoint}: "
                           f"{_first_line(e)}", UNREACHABLE,
                           hint="sign in with `az login`; batchdrop needs Storage Blob Data Contributor on the "
                                "intake and data containers and Storage Blob Data Reader on results") from None
        except ResourceNotFoundError as e:
            if getattr(e, "error_code", None) == "ContainerNotFound":
                raise CliError(f"container {container!r} does not exist at {self.target.endpoint} (settings from "
                               f"{self.target.source})", UNREACHABLE,
                               hint="`make up` creates the containers locally; in Azure, check the account and "
                                    "the *_CONTAINER settings") from None
            raise
        except HttpResponseError as e:
            if e.status_code == 403:
                raise CliError(f"blob storage at {self.target.endpoint} refused access to {container!r} "
                               f"({getattr(e, 'error_code', None) or 403})", UNREACHABLE,
                               hint="batchdrop needs Storage Blob Data Contributor on the intake and data "
                                    "containers and Storage Blob Data Reader on results") from None
            raise

    # ------------------------------------------------------------------ results

    @property
    def results(self) -> str:
        return self.settings.results_container

    def read_json(self, name: str) -> dict | None:
        data = self.read_bytes(self.results, name)
        if data is None:
            return None
        try:
            doc = json.loads(data)
        except ValueError:
            return None
        return doc if isinstance(doc, dict) else None

    def read_bytes(self, container: str, name: str, *, tail: int | None = None) -> bytes | None:
        """The blob's bytes (only its last `tail` bytes when given), or None when it does not exist."""
        with self.talking(container):
            client = self.service.get_blob_client(container, name)
            try:
                if tail is None:
                    return client.download_blob().readall()
                size = client.get_blob_properties().size
                if not size:
                    return b""
                return client.download_blob(offset=max(0, size - tail), length=min(size, tail)).readall()
            except ResourceNotFoundError as e:
                if getattr(e, "error_code", None) == "ContainerNotFound":
                    raise
                return None

    def status(self, run_id: str) -> RunStatus | None:
        doc = self.read_json(RunPaths(run_id).status)
        return None if doc is None else RunStatus(doc)

    def require_status(self, run_id: str) -> RunStatus:
        """The run's status, or CliError(NOT_FOUND) listing the closest recent runs (or saying that
        its job file is in intake, not picked up yet)."""
        found = self.status_or_pending(run_id)
        if found is None:
            raise CliError(f"run {run_id} has not started yet: intake has not picked up its job file so far",
                           NOT_FOUND, hint=f"wait for it with `batchdrop watch {run_id}`")
        return found

    def status_or_pending(self, run_id: str) -> RunStatus | None:
        """The run's status; None for a run whose job file is in intake but not picked up yet; else
        CliError(NOT_FOUND) listing the closest recent runs."""
        found = self.status(run_id) if _plausible(run_id) else None
        if found is not None:
            return found
        pending = self.pending(run_id) if jobfile.is_run_id(run_id) else None
        if pending is not None:
            return None
        raise CliError(f"unknown run id {run_id!r}: there is no {self.results}/{run_id}/status.json at "
                       f"{self.target.endpoint}", NOT_FOUND, hint=self._suggestions(run_id))

    def pending(self, run_id: str, within: timedelta = PENDING_WINDOW) -> str | None:
        """The job file in intake (dropped within `within`) that will become run `run_id`, if any.

        A run id is its job file's name, hashed with the blob's container, name and ETag; the name
        part of the id stands in for the job file's own name (sanitising is idempotent)."""
        name = run_id.rsplit("-", 1)[0]
        container = self.settings.intake_container
        since = datetime.now(UTC) - within
        with self.talking(container):
            for blob in self.service.get_container_client(container).list_blobs():
                if blob.last_modified is None or blob.last_modified < since:
                    continue
                if run_id in jobfile.run_id_candidates(name, container, blob.name, str(blob.etag)):
                    return f"{container}/{blob.name}"
        return None

    def _suggestions(self, run_id: str) -> str:
        ids = self.run_ids()
        if not ids:
            return f"there are no runs in {self.results!r} yet (settings from {self.target.source})"
        prefixed = [i for i in ids if i.startswith(run_id)]
        close = difflib.get_close_matches(run_id, ids, n=5, cutoff=0.5)
        picked = list(dict.fromkeys(prefixed + close))[:5]
        label = "closest runs"
        if not picked:
            recent = self.statuses(ids[-200:]) if len(ids) > 200 else self.statuses(ids)
            recent.sort(key=lambda s: s.started or datetime.min.replace(tzinfo=UTC), reverse=True)
            picked = [s.run_id for s in recent[:5]]
            label = "most recent runs"
        described = []
        for status in self.statuses(picked):
            described.append(f"{status.run_id} ({status.state})")
        return f"{label}: " + ", ".join(described) + "; all runs: `batchdrop runs`"

    def run_ids(self) -> list[str]:
        """Every run folder under the results container, in name order."""
        with self.talking(self.results):
            container = self.service.get_container_client(self.results)
            return [item.name.rstrip("/") for item in container.walk_blobs(delimiter="/")
                    if item.name.endswith("/")]

    def statuses(self, run_ids: list[str]) -> list[RunStatus]:
        """The status of each run that has one (read in parallel), in the order given."""
        if not run_ids:
            return []
        with ThreadPoolExecutor(max_workers=min(16, len(run_ids))) as pool:
            found = list(pool.map(self.status, run_ids))
        return [s for s in found if s is not None]

    def run_blobs(self, run_id: str) -> list[tuple[str, int]]:
        """(name relative to the run's folder, size) of every blob in results/<run>/."""
        prefix = f"{run_id}/"
        with self.talking(self.results):
            container = self.service.get_container_client(self.results)
            return [(b.name[len(prefix):], b.size) for b in container.list_blobs(name_starts_with=prefix)]

    def download(self, run_id: str, relative: str, target: Path, size: int, progress: Progress) -> None:
        """One blob of results/<run>/ into `target` (written beside it, then renamed); its size is checked."""
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        with self.talking(self.results):
            client = self.service.get_blob_client(self.results, f"{run_id}/{relative}")
            with open(partial, "wb") as out:
                stream = client.download_blob(max_concurrency=4, progress_hook=progress)
                stream.readinto(out)
        written = partial.stat().st_size
        if written != size:
            partial.unlink(missing_ok=True)
            raise CliError(f"{self.results}/{run_id}/{relative}: got {written:,} bytes, the blob has {size:,}",
                           UNREACHABLE, hint="download again")
        os.replace(partial, target)

    # ------------------------------------------------------------------ inputs, read as a job file names them

    def chunks(self, container: str, name: str) -> Iterator[bytes]:
        """A blob's bytes in chunks (bounded memory); CliError(NOT_FOUND) when it does not exist."""
        with self.talking(container):
            try:
                yield from self.service.get_blob_client(container, name).download_blob(max_concurrency=2).chunks()
            except ResourceNotFoundError as e:
                if getattr(e, "error_code", None) == "ContainerNotFound":
                    raise
                raise CliError(f"blob {container}/{name} does not exist at {self.target.endpoint}", NOT_FOUND,
                               hint="upload it first (`batchdrop upload`), or give a local file with --input") from None

    def names(self, container: str, prefix: str, limit: int | None = None) -> list[str]:
        """Names of the blobs under `prefix`, in name order (at most `limit` + 1 with a limit)."""
        with self.talking(container):
            listing = self.service.get_container_client(container).list_blobs(name_starts_with=prefix)
            found = []
            for blob in listing:
                found.append(blob.name)
                if limit is not None and len(found) > limit:
                    break
        return sorted(found)

    # ------------------------------------------------------------------ intake and data

    def drop(self, blob_name: str, data: bytes) -> str:
        """Put a job file (or cancel request) into intake under a new name; returns its ETag.
        Never overwrites: a blob of that name already there is an error."""
        container = self.settings.intake_container
        with self.talking(container):
            try:
                props = self.service.get_blob_client(container, blob_name).upload_blob(data, overwrite=False)
            except ResourceExistsError:
                raise CliError(f"{container}/{blob_name} already exists; not overwriting it", UNREACHABLE) from None
        return str(props["etag"])

    def upload(self, local: Path, container: str, blob_name: str, progress: Progress) -> int:
        """Upload a local file (in parallel blocks); returns its size, checked against the blob's."""
        size = local.stat().st_size
        with self.talking(container):
            client = self.service.get_blob_client(container, blob_name)
            with open(local, "rb") as data:
                client.upload_blob(data, length=size, overwrite=True, max_concurrency=4, progress_hook=progress)
            stored = client.get_blob_properties().size
        if stored != size:
            raise CliError(f"{container}/{blob_name} holds {stored:,} bytes after the upload of {size:,}",
                           UNREACHABLE, hint="upload again")
        return size

    def upload_bytes(self, data: bytes, container: str, blob_name: str) -> None:
        with self.talking(container):
            self.service.get_blob_client(container, blob_name).upload_blob(data, overwrite=True)

    def locate(self, candidates: list[str], job_file: str, etag: str,
               fallback: tuple[str, ...] = ()) -> tuple[str, RunStatus | None]:
        """Which of a dropped job file's candidate run ids is its run, as intake decides: the first
        whose record is absent or was made from this upload (another job file's record under an
        id is a hash collision, and intake takes the next).

        `fallback`: the ids under the job file's blob name, which intake uses when it cannot read
        the file far enough to name the run (a deployment whose settings reject what the local
        validation passed); one of them counts only once a record made from this upload is there."""
        version = etag.strip().strip('"')

        def made(status: RunStatus) -> bool:
            made_by = str(status.doc.get("job_file_etag", "")).strip('"')
            return status.doc.get("job_file") == job_file and made_by == version

        free = None
        for candidate in candidates:
            status = self.status(candidate)
            if status is None:
                free = candidate
                break
            if made(status):
                return candidate, status
        for candidate in fallback:
            status = self.status(candidate)
            if status is None:
                break
            if made(status):
                return candidate, status
        return free or candidates[0], None


def _plausible(text: str) -> bool:
    """A string that could name a blob folder (anything else cannot be a run id)."""
    return bool(text) and "/" not in text and len(text) <= 200


def _first_line(error: Exception) -> str:
    text = str(getattr(error, "message", None) or error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__


def wait_until(predicate: Callable[[], Any], timeout_s: float | None, interval_s: float) -> Any:
    """Poll `predicate` until it returns something truthy; None when `timeout_s` ran out."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if deadline is not None and time.monotonic() >= deadline:
            return None
        time.sleep(interval_s)
