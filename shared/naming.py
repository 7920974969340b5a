"""Every name the pipeline derives: run ids, the finalize message, work containers and the
blobs in them, task ids, input file names, result and control paths, the owner tag.

Pure functions of their arguments, so intake, the monitor, finalize, cleanup, the sweep and the
triggers always agree on them.
"""
from __future__ import annotations

import hashlib
import json
import posixpath
import re
import unicodedata
from dataclasses import dataclass

from shared.errors import BatchdropError

# ---------------------------------------------------------------- run ids

NAME_MAX_CHARS = 40
RUN_ID_HEX_DIGITS = 16
RUN_ID_CANDIDATES = 4
# "<name>-<hex>": today's ids end in 16 hex digits, runs made before then in 8. Used with
# fullmatch only ("$" would let a trailing newline through).
RUN_ID_PATTERN = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,48}[a-z0-9])?-(?:[0-9a-f]{16}|[0-9a-f]{8})")


def sanitise_name(text: str) -> str:
    """A run-name-safe form of `text`: only [a-z0-9-], no leading, trailing or repeated
    '-', at most 40 characters, never empty ("job" stands in).

    Accents are folded first ("Café" -> "cafe"); every other character becomes '-'.
    """
    folded = unicodedata.normalize("NFKD", text)
    folded = "".join(ch for ch in folded if not unicodedata.combining(ch)).lower()
    name = re.sub(r"[^a-z0-9]+", "-", folded).strip("-")
    name = name[:NAME_MAX_CHARS].rstrip("-")
    return name or "job"


def default_name(blob_name: str) -> str:
    """The job file's blob name without folders and without its last extension."""
    stem, _ = posixpath.splitext(posixpath.basename(blob_name.rstrip("/")))
    return stem


def run_id(name: str, container: str, blob_name: str, etag: str) -> str:
    """"<name>-<16 hex>": the same blob version (container, name, ETag) always gives the
    same id, and a new upload (new ETag) a new one. Quotes around the ETag are ignored,
    so '"0x8D"' and '0x8D' are the same version.

    The hex is 64 bits of a sha256 of that identity (a collision among a billion uploads of
    one name is about 3% likely; `run_id_candidates` gives the ids to try then). An id is at
    most 57 characters (40 + 1 + 16) of [a-z0-9-]: a valid Batch job id.
    """
    return run_id_candidates(name, container, blob_name, etag)[0]


def run_id_candidates(name: str, container: str, blob_name: str, etag: str) -> list[str]:
    """The RUN_ID_CANDIDATES (4) ids one blob version may take, always the same ones in the
    same order; the first is `run_id(...)`. Should a run record under one turn out to belong
    to another job file (a hash collision), intake takes the next: the i-th id uses the i-th
    16 hex digits of the same sha256."""
    normalised_etag = etag.strip().strip('"')
    identity = f"{container}\0{blob_name}\0{normalised_etag}".encode("utf-8", "surrogatepass")
    digest = hashlib.sha256(identity).hexdigest()
    stem, width = sanitise_name(name), RUN_ID_HEX_DIGITS
    return [f"{stem}-{digest[i * width:(i + 1) * width]}" for i in range(RUN_ID_CANDIDATES)]


def is_run_id(text: object) -> bool:
    """Whether `text` has the form of a run id (today's or an older 8-hex one)."""
    return isinstance(text, str) and RUN_ID_PATTERN.fullmatch(text) is not None


# ---------------------------------------------------------------- the finalize queue


def finalize_message(run_id: str) -> str:
    """The body of a "finalize this run" message: the run id itself."""
    return run_id


def run_id_of_message(body: str) -> str:
    """The run id a finalize message names; BatchdropError when the body is not one (the
    message is then poisoned by the queue's retries, never given to finalize)."""
    text = body.strip()
    if not is_run_id(text):
        raise BatchdropError(f"finalize message is not a run id: {text[:80]!r}")
    return text


@dataclass(frozen=True)
class IntakeRequest:
    """A re-driven intake (shared.watch): handle this version of this job file again."""

    container: str
    name: str
    etag: str


def intake_message(request: IntakeRequest) -> str:
    return json.dumps({"container": request.container, "name": request.name, "etag": request.etag})


def intake_request_of_message(body: str) -> IntakeRequest:
    """The job file an intake message names; BatchdropError when the body is not one."""
    try:
        doc = json.loads(body)
        fields = (doc["container"], doc["name"], doc["etag"])
    except (ValueError, TypeError, KeyError):
        raise BatchdropError(f"intake message is not a job file request: {body[:80]!r}") from None
    if not all(isinstance(f, str) and f for f in fields):
        raise BatchdropError(f"intake message is not a job file request: {body[:80]!r}")
    return IntakeRequest(*fields)


# ---------------------------------------------------------------- work containers and their blobs

# Azure Storage: container names are at most 63 characters.
_CONTAINER_MAX = 63
# Metadata key marking a container as a run's work container; its value is the run id.
WORK_METADATA = "batchdroprun"
CONFIG_BLOB = "config.json"  # in the input container: a job file's inline config


def work_containers(prefix: str, run_id: str) -> tuple[str, str]:
    """(input container, output container) of a run: separate, so task SAS can be read-only /
    write-only.

    "<prefix>-<name>-<hex>-in" / "-out": the run id's hex part keeps them unique, and its name
    part is shortened as needed so the result is a valid container name (at most 63 characters,
    single hyphens) whatever the prefix and the run name's length.
    """
    name, _, digest = run_id.rpartition("-")
    room = _CONTAINER_MAX - len(prefix) - len(digest) - len("---out")
    short = name[:max(0, room)].strip("-")
    base = "-".join(part for part in (prefix, short, digest) if part)
    return f"{base}-in", f"{base}-out"


def is_work_container(prefix: str, container: str, tagged_run_id: str | None) -> bool:
    """Whether `container` is the work container of the run its metadata names: both the tag
    written at creation and the name derived from it must agree, so a user's container that
    merely shares the prefix is never taken for one."""
    return bool(tagged_run_id) and container in work_containers(prefix, tagged_run_id or "")


def task_id(index: int) -> str:
    """Zero-padded so that name order is task order."""
    return f"t{index:06d}"


def task_index(task: str) -> int:
    """The index a task id (or a rerun of it) was made from; -1 for a task that has none (the merge task)."""
    digits = base_task_id(task)[1:]
    return int(digits) if digits.isdigit() else -1


RERUN_SEPARATOR = "-r"


def attempt_id(task: str, reruns: int) -> str:
    """The Batch task that runs `task` after `reruns` reruns (a task that succeeded cannot be
    reactivated, so a task whose output was lost runs again as a copy under a new id)."""
    return task if reruns <= 0 else f"{task}{RERUN_SEPARATOR}{reruns}"


def base_task_id(task: str) -> str:
    """The task a Batch task id runs: "t000003" for "t000003" and "t000003-r2"."""
    base, sep, n = task.partition(RERUN_SEPARATOR)
    return base if sep and n.isdigit() else task


def shard_name(index: int, input_file: str) -> str:
    """Where task `index`'s input lives in the run's input container."""
    return f"shards/{index:06d}.{input_file.rsplit('.', 1)[-1]}"


def input_file_of_blob(blob_name: str) -> str:
    """The input file name a task sees for a pre-split blob: "input.<the blob's extension>",
    or "input.bin" when its name has none or the extension is not plain letters and digits
    (blob names are not validated like the job file, and this name goes into the task's
    shell command line)."""
    base = blob_name.rsplit("/", 1)[-1]
    ext = base.rsplit(".", 1)[-1] if "." in base else ""
    return f"input.{ext}" if _PLAIN_EXTENSION.fullmatch(ext) else "input.bin"


_PLAIN_EXTENSION = re.compile(r"[A-Za-z0-9]{1,20}")


# Output container layout, as the task models upload into it (shared/batch.py).
def task_outputs(task: str) -> str:
    """Prefix of what a succeeded task left in OUTPUT_DIR."""
    return f"tasks/{task}/"


def task_logs(task: str) -> str:
    """Prefix of a failed task's stdout.txt / stderr.txt."""
    return f"logs/{task}/"


def merged_output(output_file: str) -> str:
    """Where the user's merge task leaves its output."""
    return f"merged/{output_file}"


MANIFEST_FILE = "batchdrop-manifest.txt"  # in a task's working directory, beside OUTPUT_DIR (not an output itself)


def task_manifest(task_id: str) -> str:
    """The manifest (shared/manifest.py) of what a succeeded task, or the merge task ("merge"),
    left in OUTPUT_DIR."""
    return f"manifests/{task_id}.txt"


# ---------------------------------------------------------------- results and control containers


@dataclass(frozen=True)
class RunPaths:
    """Where a run's documents live inside the results container (the user contract)."""

    run_id: str

    @property
    def status(self) -> str:
        return f"{self.run_id}/status.json"

    @property
    def report(self) -> str:
        return f"{self.run_id}/report.json"

    @property
    def error(self) -> str:
        return f"{self.run_id}/error.json"

    @property
    def report_html(self) -> str:
        return f"{self.run_id}/report.html"

    @property
    def tasks(self) -> str:
        return f"{self.run_id}/tasks/"

    def output(self, ext: str) -> str:
        return f"{self.run_id}/output.{ext}"

    def task_prefix(self, task: str) -> str:
        return f"{self.run_id}/tasks/{task}/"


ACTIVE_PREFIX = "active/"  # control container: one marker per run the monitor watches
QUEUED_PREFIX = "queued/"  # control container: one marker per run waiting for admission (its place in line)
SWEEP_MARKER = "sweep/last.json"  # control container: when the orphan sweep last ran
MONITOR_CURSOR = "monitor/cursor.json"  # control container: where a monitor tick that ran out of time stopped


CLAIMS_PREFIX = "claims/"  # control container: one leased blob per run and step (shared.claims)


JOB_FILE_PREFIX = "jobfiles/"  # control container: the job file each run was accepted from, kept while it runs


def kept_job_file(run_id: str) -> str:
    return f"{JOB_FILE_PREFIX}{run_id}.json"


OUTCOMES_PREFIX = "outcomes/"  # control container: a merging run's task outcomes, for finalize's later parts


def kept_outcomes(run_id: str) -> str:
    return f"{OUTCOMES_PREFIX}{run_id}.json"


def active_marker(run_id: str) -> str:
    return f"{ACTIVE_PREFIX}{run_id}"


def queued_marker(run_id: str) -> str:
    return f"{QUEUED_PREFIX}{run_id}"


def claim_blob(run_id: str, step: str) -> str:
    return f"{CLAIMS_PREFIX}{run_id}/{step}"


def owner_tag(blob_service_url: str, results_container: str) -> str:
    """Which deployment a Batch job belongs to: the URL of its results container (no SAS)."""
    return f"{blob_service_url.split('?', 1)[0].rstrip('/')}/{results_container}"
