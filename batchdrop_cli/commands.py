"""What each `batchdrop` command does (its options and help are in `batchdrop_cli.main`).

Each function returns the command's exit code or raises `CliError`; the commands talk to storage
only through `Contract` (the user contract) and to Batch only through `LiveLogs` (optional).
"""
from __future__ import annotations

import json
import math
import os
import re
import sys
import tempfile
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from batchdrop_cli import plan as planning
from batchdrop_cli.client import Contract, RunStatus, utc_stamp
from batchdrop_cli.config import Target, offline_settings, resolve
from batchdrop_cli.errors import INVALID, NOT_FOUND, OK, REFUSED, UNREACHABLE, CliError
from batchdrop_cli.live import LiveLogs
from batchdrop_cli.view import console, duration, local_time, size, styled_state, transfer
from batchdrop_cli.watch import EXIT_BY_STATE, error_message, follow
from shared import jobfile, paramsweep, planner
from shared.errors import JobFileError
from shared.pricing import PriceTable, PriceTableError
from shared.settings import Settings


def _target(settings_file: str | None, account: str | None) -> Target:
    return resolve(settings_file=settings_file, account=account)


def _read_local(path: Path, what: str = "file") -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CliError(f"{what} {path} does not exist", NOT_FOUND) from None
    except IsADirectoryError:
        raise CliError(f"{path} is a directory, not a {what}", INVALID) from None
    except OSError as e:
        raise CliError(f"cannot read {path}: {e.strerror}", NOT_FOUND) from None


def _parse(raw: bytes, blob_name: str,
           settings: Settings) -> jobfile.JobSpec | jobfile.CancelRequest | jobfile.RerunRequest:
    """The intake's own validation (raises JobFileError with the message error.json would carry)."""
    return jobfile.parse_intake_file(raw, blob_name=blob_name, max_bytes=settings.max_job_file_bytes,
                                     policy=jobfile.ReadPolicy.from_settings(settings))


def _invalid(path: Path, error: JobFileError) -> int:
    click.echo(f"{path}: invalid job file", err=True)
    click.echo(str(error), err=True)
    return INVALID


def validate(job_files: tuple[Path, ...], as_json: bool, settings_file: str | None, account: str | None) -> int:
    settings = offline_settings(settings_file=settings_file, account=account)
    code = OK
    for job_file in job_files:
        raw = _read_local(job_file, "job file")
        try:
            spec = _parse(raw, job_file.name, settings)
        except JobFileError as e:
            code = INVALID
            if as_json:
                click.echo(json.dumps({"file": str(job_file), "valid": False, "field": e.field, "message": e.message,
                                       "error": str(e)}))
            else:
                _invalid(job_file, e)
            continue
        if as_json:
            click.echo(json.dumps({"file": str(job_file), "valid": True, "field": None, "message": None,
                                   "error": None}))
        elif isinstance(spec, jobfile.CancelRequest):
            click.echo(f"ok: {job_file} is a cancel request for run {spec.run_id}")
        elif isinstance(spec, jobfile.RerunRequest):
            click.echo(f"ok: {job_file} is a rerun request for run {spec.run_id}")
        else:
            click.echo(f"ok: {job_file} is a valid job file ({_summary(spec)})")
    return code


def _summary(spec: jobfile.JobSpec) -> str:
    inp = spec.input
    if isinstance(inp, jobfile.ItemsInput) and isinstance(inp.items, paramsweep.Sweep):
        source = f"a sweep of {inp.items.describe()}"
    elif isinstance(inp, jobfile.ItemsInput):
        source = f"{len(inp.items)} inline items"
    elif isinstance(inp, jobfile.BlobInput):
        source = f"input {inp.blob} ({inp.format})"
    else:
        source = f"inputs under {inp.prefix}"
    split = f"{spec.tasks} tasks" if spec.tasks else (f"{spec.items_per_task} per task" if spec.items_per_task else "")
    merge = spec.merge.kind if spec.merge else "?"
    return ", ".join(p for p in (f"run name {spec.name}", source, split, f"merge {merge}") if p)


class _Duplicate(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _Duplicate(key)
        seen[key] = value
    return seen


def _edit(raw: bytes, blob_name: str, settings: Settings, *, input_ref: str | None, name: str | None) -> bytes:
    """The job file with --input / --name applied. A file that is not a plain JSON object is
    reported with the intake's own message."""
    try:
        doc = json.loads(raw.decode("utf-8-sig"), object_pairs_hook=_no_duplicates)
    except (ValueError, UnicodeDecodeError):
        doc = None
    if not isinstance(doc, dict):
        _parse(raw, blob_name, settings)  # raises the intake's message
        raise JobFileError("the job file must be a JSON object")
    if "cancel" in doc:
        raise JobFileError("this is a cancel request, not a job file; use `batchdrop cancel RUN`", field="cancel")
    if "rerun" in doc:
        raise JobFileError("this is a rerun request, not a job file; use `batchdrop rerun RUN`", field="rerun")
    if name is not None:
        doc["name"] = name
    if input_ref is not None:
        old = doc.get("input")
        new: dict[str, Any] = {"blob": input_ref}
        if isinstance(old, dict) and "blob" in old and old.get("format") is not None:
            new["format"] = old["format"]
        doc["input"] = new
    return (json.dumps(doc, indent=2) + "\n").encode("utf-8")  # ASCII: escapes (even bad ones) kept for intake


def _safe_name(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")
    return cleaned or "job.json"


def submit(job_file: Path, input_file: Path | None, name: str | None, wait: bool, interval: float,
           timeout: float | None, plain: bool, settings_file: str | None, account: str | None) -> int:
    target = _target(settings_file, account)
    settings = target.settings
    raw = _read_local(job_file, "job file")
    stamp = utc_stamp()
    blob_name = f"{stamp}/{_safe_name(job_file.name)}"
    input_ref = None
    if input_file is not None:
        if not input_file.is_file():
            raise CliError(f"input file {input_file} does not exist", NOT_FOUND)
        input_path = f"uploads/{stamp}/{_safe_name(input_file.name)}"
        input_ref = f"{settings.data_container}/{input_path}"
    try:
        if input_ref is not None or name is not None:
            raw = _edit(raw, blob_name, settings, input_ref=input_ref, name=name)
        spec = _parse(raw, blob_name, settings)
    except JobFileError as e:
        return _invalid(job_file, e)
    if isinstance(spec, jobfile.CancelRequest):
        return _invalid(job_file, JobFileError("this is a cancel request, not a job file; use `batchdrop cancel "
                                               f"{spec.run_id}`", field="cancel"))
    if isinstance(spec, jobfile.RerunRequest):
        return _invalid(job_file, JobFileError("this is a rerun request, not a job file; use `batchdrop rerun "
                                               f"{spec.run_id}`", field="rerun"))
    contract = Contract(target)
    err = console(stderr=True)
    if input_file is not None and input_ref is not None:
        total = input_file.stat().st_size
        with transfer(err, f"uploading {input_file} to {input_ref}", total) as hook:
            contract.upload(input_file, settings.data_container, input_ref.split("/", 1)[1], hook)
    etag = contract.drop(blob_name, raw)
    job_path = f"{settings.intake_container}/{blob_name}"
    return _announce(contract, spec.name, blob_name, etag, lambda run_id: f"dropped {job_file} as {job_path}; "
                     f"run {run_id}", wait=wait, interval=interval, timeout=timeout, plain=plain)


def _announce(contract: Contract, name: str, blob_name: str, etag: str, what: Callable[[str], str], *,
              wait: bool, interval: float, timeout: float | None, plain: bool) -> int:
    """Print the run id a dropped job file gets (stdout) and what was done (stderr); with `wait`,
    follow the run to its end. The id is `name`'s; a job file intake rejects is named after its blob."""
    settings = contract.settings
    job_path = f"{settings.intake_container}/{blob_name}"
    candidates = jobfile.run_id_candidates(name, settings.intake_container, blob_name, etag)
    by_blob_name = jobfile.sanitise_name(jobfile.default_name(blob_name))
    fallback = () if by_blob_name == name else tuple(
        jobfile.run_id_candidates(by_blob_name, settings.intake_container, blob_name, etag))
    run_id, _ = contract.locate(candidates, job_path, etag)
    click.echo(run_id)
    click.echo(what(run_id), err=True)
    if not wait:
        click.echo(f"watch it: batchdrop watch {run_id}", err=True)
        return OK
    code, _ = follow(contract, lambda: contract.locate(candidates, job_path, etag, fallback), interval_s=interval,
                     timeout_s=timeout, plain=plain)
    return code


def upload(path: Path, blob: str | None, settings_file: str | None, account: str | None) -> int:
    target = _target(settings_file, account)
    settings = target.settings
    if not path.exists():
        raise CliError(f"{path} does not exist", NOT_FOUND)
    name = _safe_name(path.name) + (".zip" if path.is_dir() else "")
    ref_text = blob or f"{settings.data_container}/uploads/{utc_stamp()}/{name}"
    try:
        ref = jobfile.BlobRef.parse(ref_text, "BLOB")
        jobfile.ReadPolicy.from_settings(settings).check(ref, "BLOB")
    except JobFileError as e:
        raise CliError(str(e), INVALID) from None
    if path.is_dir() and not ref.path.endswith(".zip"):
        raise CliError(f"{path} is a folder: it is uploaded as a zip, so BLOB must end in .zip", INVALID)
    contract = Contract(target)
    err = console(stderr=True)
    with tempfile.TemporaryDirectory() as tmp:
        local = _zip_folder(path, Path(tmp) / name) if path.is_dir() else path
        with transfer(err, f"uploading {path} to {ref}", local.stat().st_size) as hook:
            contract.upload(local, ref.container, ref.path, hook)
    click.echo(str(ref))
    return OK


def _zip_folder(folder: Path, target: Path) -> Path:
    """The regular files under `folder` (symbolic links are left out: intake refuses zips with them)."""
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for file in sorted(folder.rglob("*")):
            if file.is_symlink() or not file.is_file() or "__pycache__" in file.parts:
                continue
            z.write(file, file.relative_to(folder).as_posix())
    return target


def watch(run_id: str, interval: float, timeout: float | None, plain: bool, settings_file: str | None,
          account: str | None) -> int:
    contract = Contract(_target(settings_file, account))
    contract.status_or_pending(run_id)
    code, _ = follow(contract, lambda: (run_id, contract.status(run_id)), interval_s=interval, timeout_s=timeout,
                     plain=plain)
    return code


def status(run_id: str, as_json: bool, settings_file: str | None, account: str | None) -> int:
    contract = Contract(_target(settings_file, account))
    found = contract.require_status(run_id)
    if as_json:
        click.echo(json.dumps(found.doc, indent=2))
        return OK
    doc = found.doc
    rows: list[tuple[str, str]] = [("run", found.run_id), ("state", found.state),
                                   ("job file", str(doc.get("job_file", "-"))),
                                   ("tasks", _task_line(found)),
                                   ("started", local_time(found.started)),
                                   ("updated", local_time(found.time("updated_at"))),
                                   ("duration", duration(found.duration_s()))]
    if doc.get("output"):
        rows.append(("output", str(doc["output"])))
    if found.state in ("failed", "cancelled", "rejected"):
        rows.append(("error", error_message(contract, found)))
    if doc.get("container_execution"):
        rows.append(("execution", str(doc["container_execution"])))
    for label, value in rows:
        click.echo(f"{label:<10} {value}")
    return OK


def _task_line(status: RunStatus) -> str:
    parts = [f"{status.done}/{status.total or '?'} done"]
    details = [f"{status.count(k)} {label}" for k, label in (("active", "waiting"), ("running", "running"),
                                                           ("succeeded", "succeeded"), ("failed", "failed"),
                                                           ("stopped", "stopped"))
               if k != "stopped" or status.count(k)]
    return parts[0] + ": " + ", ".join(details)


def runs(states: tuple[str, ...], since: float | None, limit: int, as_json: bool, settings_file: str | None,
         account: str | None) -> int:
    contract = Contract(_target(settings_file, account))
    wanted = {s.strip() for text in states for s in text.split(",") if s.strip()}
    found = contract.statuses(contract.run_ids())
    if wanted:
        found = [s for s in found if s.state in wanted]
    if since is not None:
        cutoff = datetime.now(UTC) - timedelta(seconds=since)
        found = [s for s in found if s.started is not None and s.started >= cutoff]
    oldest = datetime.min.replace(tzinfo=UTC)
    found.sort(key=lambda s: (s.started or oldest, s.run_id), reverse=True)
    more = len(found) - limit if limit and len(found) > limit else 0
    if limit:
        found = found[:limit]
    if as_json:
        click.echo(json.dumps([s.doc for s in found], indent=2))
        return OK
    out = console()
    if not found:
        out.print(f"no runs{' matching' if wanted or since else ''} in {contract.results!r} "
                  f"({contract.target.endpoint})")
        return OK
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column, justify in (("run", "left"), ("state", "left"), ("tasks", "right"), ("started", "left"),
                            ("duration", "right")):
        table.add_column(column, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for s in found:
        table.add_row(s.run_id, styled_state(s.state), f"{s.done}/{s.total}", local_time(s.started),
                      duration(s.duration_s()))
    out.print(table)
    if more:
        out.print(f"({more} older runs not shown; --limit 0 shows all)")
    return OK


def logs(run_id: str, task: str | None, stream: str | None, settings_file: str | None, account: str | None) -> int:
    target = _target(settings_file, account)
    contract = Contract(target)
    found = contract.require_status(run_id)
    streams = [stream] if stream else ["stdout", "stderr"]
    live = LiveLogs(target)
    if task:
        return _task_logs(contract, live, found, task, streams, headers=len(streams) > 1)
    report = contract.read_json(f"{run_id}/report.json")
    if report is not None:
        failed = [e for e in report.get("entries") or [] if e.get("outcome") != "succeeded"]
        merge_task = report.get("merge_task")
        if isinstance(merge_task, dict) and merge_task.get("outcome") != "succeeded":
            failed.append(merge_task)
        if not failed:
            click.echo(f"run {run_id} ({found.state}): no task failed; batchdrop keeps the output of failed tasks "
                       f"only", err=True)
            return OK
        stopped = [str(e.get("task_id")) for e in failed
                   if isinstance(e.get("failure"), dict) and e["failure"].get("category") == "incomplete"]
        failed = [e for e in failed if str(e.get("task_id")) not in stopped]
        if stopped:
            click.echo(f"{len(stopped)} task(s) stopped before they finished, with no output: "
                       f"{', '.join(stopped[:10])}{', ...' if len(stopped) > 10 else ''}", err=True)
        for entry in failed:
            task_id = str(entry.get("task_id"))
            why = f"exit code {entry.get('exit_code')}"
            if isinstance(entry.get("failure"), dict):
                why += f", {entry['failure'].get('code')}"
            click.echo(f"==> task {task_id} ({why}) <==")
            shown = _print_captured(contract, run_id, task_id, streams, headers=True)
            if not shown and entry.get("stderr_tail") and "stderr" in streams:
                click.echo("--- stderr (tail, from report.json) ---")
                click.echo(str(entry["stderr_tail"]).rstrip("\n"))
            elif not shown:
                click.echo("(no captured output)")
        return OK
    if found.state == "rejected":
        raise CliError(f"run {run_id} was rejected, so no task ran: {error_message(contract, found)}", NOT_FOUND)
    if found.terminal:
        raise CliError(f"run {run_id} ended {found.state} without a report, so no task output was kept: "
                       f"{error_message(contract, found)}", NOT_FOUND)
    tasks = live.tasks(run_id)
    if tasks is None:
        why = ("configure a Batch account (BATCH_ACCOUNT_URL) to see a running task's live output"
               if not live.available else f"Batch has no job {run_id} (any more)")
        raise CliError(f"run {run_id} is {found.state} and has no report yet: failed tasks' output is copied into "
                       f"results when the run ends", NOT_FOUND, hint=why)
    failed_tasks = [t for t in tasks if t.state == "completed" and t.exit_code not in (0, None)]
    running = [t.task_id for t in tasks if t.state == "running"]
    click.echo(f"run {run_id} is {found.state}: {len(running)} running task(s)"
               + (f" ({', '.join(running[:10])}{', ...' if len(running) > 10 else ''})" if running else "")
               + f", {len(failed_tasks)} failed so far", err=True)
    for t in failed_tasks:
        click.echo(f"==> task {t.task_id} (exit code {t.exit_code}, live from Batch) <==")
        _print_live(live, run_id, t.task_id, streams, headers=True)
    if running:
        click.echo(f"a running task's live output: batchdrop logs {run_id} {running[0]}", err=True)
    return OK


def _task_logs(contract: Contract, live: LiveLogs, found: RunStatus, task: str, streams: list[str],
               headers: bool) -> int:
    run_id = found.run_id
    if _print_captured(contract, run_id, task, streams, headers):
        return OK
    if live.available:
        state = live.task(run_id, task)
        if state is not None:
            click.echo(f"task {task} is {state.state} (live from Batch)", err=True)
            if _print_live(live, run_id, task, streams, headers):
                return OK
            raise CliError(f"task {task} of run {run_id} has no output yet", NOT_FOUND)
    hint = ("results keep the output of failed tasks only (the last MiB of each)"
            + ("" if live.available else "; configure a Batch account (BATCH_ACCOUNT_URL) for a running task's "
                                          "live output"))
    raise CliError(f"no output of task {task!r} in run {run_id} ({found.state})", NOT_FOUND, hint=hint)


def _write(data: bytes) -> None:
    sys.stdout.flush()
    sys.stdout.buffer.write(data if data.endswith(b"\n") or not data else data + b"\n")
    sys.stdout.buffer.flush()


def _print_captured(contract: Contract, run_id: str, task: str, streams: list[str], headers: bool) -> bool:
    shown = False
    for name in streams:
        data = contract.read_bytes(contract.results, f"{run_id}/tasks/{task}/{name}.txt")
        if data is None:
            continue
        if headers:
            click.echo(f"--- {name} ---")
        _write(data)
        shown = True
    return shown


def _print_live(live: LiveLogs, run_id: str, task: str, streams: list[str], headers: bool) -> bool:
    shown = False
    for name in streams:
        data = live.output(run_id, task, name)
        if data is None:
            continue
        if headers:
            click.echo(f"--- {name} (live) ---")
        _write(data)
        shown = True
    return shown


def results(run_id: str, out_dir: Path | None, force: bool, settings_file: str | None,
            account: str | None) -> int:
    contract = Contract(_target(settings_file, account))
    found = contract.require_status(run_id)
    if not found.terminal:
        raise CliError(f"run {run_id} is still {found.state}: its results appear when it ends", REFUSED,
                       hint=f"wait for it with `batchdrop watch {run_id}`")
    dest = out_dir or Path(run_id)
    root = dest.resolve()
    blobs = []
    for relative, nbytes in contract.run_blobs(run_id):
        target = (root / relative).resolve()
        if target != root and root not in target.parents:
            click.echo(f"skipping {relative!r}: it would land outside {dest}", err=True)
            continue
        blobs.append((relative, nbytes, target))
    existing = [rel for rel, _, target in blobs if target.exists()]
    if existing and not force:
        listed = ", ".join(str(dest / rel) for rel in existing[:3]) + (f" and {len(existing) - 3} more"
                                                                        if len(existing) > 3 else "")
        raise CliError(f"not overwriting {listed}", REFUSED, hint="use --force, or -o another folder")
    total = sum(n for _, n, _ in blobs)
    err = console(stderr=True)
    done = 0
    with transfer(err, f"downloading {len(blobs)} files of run {run_id} to {dest}", total) as hook:
        for relative, nbytes, target in blobs:
            def progress(current: int, _total: int | None, offset: int = done) -> None:
                hook(offset + current, None)

            contract.download(run_id, relative, target, nbytes, progress)
            done += nbytes
            hook(done, None)
    report = _local_json(root / "report.json")
    output = found.doc.get("output") or (report or {}).get("output")
    if isinstance(output, str) and output.startswith(f"{contract.results}/{run_id}/output."):
        local = root / output.rsplit("/", 1)[1]
        expected = (report or {}).get("output_bytes")
        if isinstance(expected, int) and local.exists() and local.stat().st_size != expected:
            raise CliError(f"{local}: {local.stat().st_size:,} bytes, but report.json says {expected:,}", UNREACHABLE,
                           hint="download again with --force")
    click.echo(f"{len(blobs)} files ({size(total)}) in {dest}/")
    for relative, nbytes, _ in blobs[:12]:
        click.echo(f"  {relative}  ({size(nbytes)})")
    if len(blobs) > 12:
        click.echo(f"  ... and {len(blobs) - 12} more")
    if found.state != "succeeded":
        click.echo(f"run {run_id} {found.state}: {error_message(contract, found)}", err=True)
    return EXIT_BY_STATE.get(found.state, OK)


def _local_json(path: Path) -> dict | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def cancel(run_id: str, wait: bool, interval: float, timeout: float | None, settings_file: str | None,
           account: str | None) -> int:
    contract = Contract(_target(settings_file, account))
    found = contract.require_status(run_id)
    if found.terminal:
        click.echo(f"run {run_id} already {found.state}; nothing to cancel")
        return OK
    blob_name = f"{utc_stamp()}/cancel-{run_id}.json"
    contract.drop(blob_name, json.dumps({"cancel": run_id}).encode())
    click.echo(f"cancel requested: dropped {contract.settings.intake_container}/{blob_name}")
    if not wait:
        return OK
    code, last = follow(contract, lambda: (run_id, contract.status(run_id)), interval_s=interval,
                        timeout_s=timeout)
    if last is not None and last.terminal and last.state in ("cancelled", "succeeded"):
        return OK
    return code


def rerun(run_id: str, command: str | None, image: str | None, retries: int | None,
          task_timeout_minutes: int | None, wait: bool, interval: float, timeout: float | None, plain: bool,
          settings_file: str | None, account: str | None) -> int:
    contract = Contract(_target(settings_file, account))
    found = contract.require_status(run_id)
    if not found.terminal:
        raise CliError(f"run {run_id} is still {found.state}; rerun it once it has ended", REFUSED,
                       hint=f"wait for it with `batchdrop watch {run_id}`, or stop it with `batchdrop cancel {run_id}`")
    overrides = {"command": command, "image": image, "retries": retries, "task_timeout_minutes": task_timeout_minutes}
    request = {"rerun": run_id, **{k: v for k, v in overrides.items() if v is not None}}
    settings = contract.settings
    blob_name = f"{utc_stamp()}/rerun-{run_id}.json"
    raw = json.dumps(request).encode()
    try:
        _parse(raw, blob_name, settings)
    except JobFileError as e:
        raise CliError(f"the rerun request is not valid: {e}", INVALID) from None
    etag = contract.drop(blob_name, raw)
    job_path = f"{settings.intake_container}/{blob_name}"
    name = str(found.doc.get("name") or jobfile.default_name(blob_name))  # a rerun is named as the run it reruns
    return _announce(contract, name, blob_name, etag,
                     lambda new_id: f"rerun of {run_id} requested: dropped {job_path}; run {new_id}",
                     wait=wait, interval=interval, timeout=timeout, plain=plain)


def plan(job_file: Path, input_file: Path | None, seconds_per_item: float | None, sample: int | None,
         deadline: float | None, max_nodes: tuple[int, ...], items_per_task: tuple[int, ...], as_json: bool,
         settings_file: str | None, account: str | None) -> int:
    if (seconds_per_item is None) == (sample is None):
        raise CliError("give the time one item takes: --seconds-per-item S, or --sample N to run the command on "
                       "N items here and measure it (one of the two)", INVALID)
    settings = offline_settings(settings_file=settings_file, account=account)
    raw = _read_local(job_file, "job file")
    try:
        if input_file is not None:
            raw = _edit(raw, job_file.name, settings, input_ref=f"{settings.data_container}/uploads/plan/"
                                                                f"{_safe_name(input_file.name)}", name=None)
        spec = _parse(raw, job_file.name, settings)
    except JobFileError as e:
        return _invalid(job_file, e)
    if isinstance(spec, jobfile.CancelRequest):
        return _invalid(job_file, JobFileError("this is a cancel request, not a job file", field="cancel"))
    if isinstance(spec, jobfile.RerunRequest):
        return _invalid(job_file, JobFileError("this is a rerun request, not a job file", field="rerun"))
    if input_file is not None and not input_file.is_file():
        raise CliError(f"input file {input_file} does not exist", NOT_FOUND)
    contracts: list[Contract] = []

    def contract() -> Contract:  # storage only when the job's input or files are there
        if not contracts:
            contracts.append(Contract(_target(settings_file, account)))
        return contracts[0]

    if isinstance(spec.input, jobfile.PrefixInput) and items_per_task:
        raise CliError(f"--items-per-task does not apply: the job's input is the prefix {spec.input.prefix}, already "
                       f"split (one task per blob)", INVALID)
    pool, nodes = _plan_pool(spec, settings, max_nodes)
    items = planning.count_items(spec, input_file, contract, settings.max_tasks_per_run)
    current = planning.current_items_per_task(spec, items.count)
    measured = None
    if sample is not None:
        click.echo(f"running the job's command here on {min(sample, items.count):,} of {items.count:,} "
                   f"{'blobs' if items.per_blob else 'items'}" + (f" (not in its image {spec.image})" if spec.image
                                                                 else ""), err=True)
        task_count = math.ceil(items.count / (current or 1))
        measured = planning.run_sample(spec, items, sample, contract, task_count)
        seconds_per_item = measured.seconds_per_item
        if measured.no_output:
            click.echo(f"warning: {measured.no_output} of {measured.runs} sample run(s) exited 0 without writing "
                       f"OUTPUT_PATH", err=True)
    assert seconds_per_item is not None
    sizes = ((1,) if items.per_blob else
             items_per_task or planner.default_items_per_task(items.count, settings.max_tasks_per_run,
                                                             also=(current,) if current else ()))
    workload = planner.Workload(items.count, seconds_per_item, has_image=spec.image is not None,
                                task_timeout_s=spec.task_timeout_minutes * 60.0, max_tasks=settings.max_tasks_per_run)
    prices: PriceTable | str
    try:
        prices = _price_table(settings, contract)
    except CliError as e:
        prices = e.message
    result = planner.plan(workload, sizes, nodes, pool, planner.Overheads(), prices, deadline)
    if as_json:
        click.echo(json.dumps(planning.as_json(result, job_file=str(job_file), items=items,
                                               seconds_per_item=seconds_per_item, sample=measured,
                                               current=current), indent=2))
        return OK
    _print_plan(result, job_file, items, seconds_per_item, measured, current)
    return OK


def _plan_pool(spec: jobfile.JobSpec, settings: Settings,
               max_nodes: tuple[int, ...]) -> tuple[planner.Pool, tuple[int, ...]]:
    if isinstance(spec.pool, jobfile.ExistingPool):
        if not max_nodes:
            raise CliError(f"the job runs on your pool {spec.pool.id!r}, whose size batchdrop does not read: give its "
                           f"node count with --max-nodes", INVALID)
        return planner.Pool("?", settings.pool.slots_per_node, existing=spec.pool.id), max_nodes
    given = spec.pool or jobfile.PoolSpec()
    pool = planner.Pool(given.vm_size or settings.pool.vm_size, given.slots_per_node or settings.pool.slots_per_node,
                given.spot)
    return pool, max_nodes or (given.max_nodes or settings.pool.max_nodes,)


def _price_table(settings: Settings, contract: Callable[[], Contract]) -> PriceTable:
    """The prices a run's report would use: PRICE_TABLE_BLOB when set (read through the target), else
    the shipped table. CliError saying why when the blob cannot be used."""
    blob = settings.price_table_blob
    if not blob:
        return PriceTable.default()
    container, _, name = blob.partition("/")
    data = contract().read_bytes(container, name)
    if data is None:
        raise CliError(f"PRICE_TABLE_BLOB names {blob!r}, which does not exist", NOT_FOUND)
    try:
        return PriceTable.load(data)
    except PriceTableError as e:
        raise CliError(f"PRICE_TABLE_BLOB {blob!r}: {e}", INVALID) from None


def _print_plan(result: planner.Plan, job_file: Path, items: planning.Items, seconds_per_item: float,
                measured: planning.Sample | None, current: int | None) -> None:
    out = console()
    what = "blob" if items.per_blob else "item"
    how = (f"measured on {measured.items:,} {what}s here: {measured.seconds:.2f} s in {measured.runs} run(s)"
           if measured is not None else "given")
    for line in (f"{job_file}: {items.count:,} {what}s ({items.source}); {seconds_per_item:.3g} s per {what} ({how})",
                 planning.pool_line(result), planning.overheads_line(result)):
        out.print(escape(line), soft_wrap=True)
    if result.deadline_s is not None:
        out.print(f"deadline: {duration(result.deadline_s)}")
    out.print()
    planning.print_table(out, result, current)
    out.print()
    omitted = {c.cost_omitted for c in result.candidates if c.cost_omitted}
    for why in sorted(omitted):
        out.print(escape(f"cost not estimated: {why}"), soft_wrap=True)
    rec = result.recommendation
    c = rec.choice
    if c is None:
        out.print(escape(f"no recommendation: {rec.reason}"), soft_wrap=True)
        return
    cost = planning.cost_text(c)
    out.print(escape(f"recommended: items_per_task {c.items_per_task:,} with max_nodes {c.max_nodes}: "
                     f"{_n(c.tasks, 'task')} on {_n(c.nodes, 'node')} in {_n(c.waves, 'wave')}, wall "
                     f"{duration(c.wall_s)}, {c.node_s / 3600:,.2f} node-hours" + (f", {cost}" if cost != "-" else "")
                     + f"; {rec.reason}"), soft_wrap=True)
    for note in c.notes:
        out.print(escape(f"  note: {note}"), soft_wrap=True)


def _n(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def report(run_id: str, out_dir: Path | None, open_it: bool, settings_file: str | None, account: str | None) -> int:
    contract = Contract(_target(settings_file, account))
    found = contract.require_status(run_id)
    data = contract.read_bytes(contract.results, f"{run_id}/report.html")
    if data is None:
        if not found.terminal:
            raise CliError(f"run {run_id} is still {found.state}: its report.html is written when it ends", REFUSED,
                           hint=f"wait for it with `batchdrop watch {run_id}`")
        if found.state == "rejected":
            raise CliError(f"run {run_id} was rejected, so no task ran and it has no report: "
                           f"{error_message(contract, found)}", NOT_FOUND)
        raise CliError(f"run {run_id} ({found.state}) has no {contract.results}/{run_id}/report.html", NOT_FOUND,
                       hint=f"runs that ended before report.html existed have report.json only: "
                            f"`batchdrop results {run_id}`")
    dest = (out_dir or Path(run_id)) / "report.html"
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    partial.write_bytes(data)
    os.replace(partial, dest)
    click.echo(str(dest))
    click.echo(f"report of run {run_id} ({found.state}, {size(len(data))}) saved as {dest}", err=True)
    if open_it:
        if _open_in_browser(dest):
            click.echo(f"opened {dest} in the browser", err=True)
        else:
            click.echo(f"no browser to open it with here; open {dest.resolve()} in one", err=True)
    return OK


def _open_in_browser(path: Path) -> bool:
    """The platform's opener (webbrowser: $BROWSER, xdg-open, open, ...); False when there is none."""
    import webbrowser

    try:
        return bool(webbrowser.open(path.resolve().as_uri()))
    except webbrowser.Error:
        return False
