"""Step 3 (queue): merge the task outputs, report, clean up.

Safe to run twice, or to be killed anywhere and run again: the merged blob is committed in one
call (a reader sees all of it or nothing, and a rerun replaces it with identical bytes);
report.json marks the merge as done; cleanup happens only after the output is committed, and
the run's final state is written last.
"""
from __future__ import annotations

import logging
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import islice
from typing import Iterator

from azure.storage.blob import ContainerSasPermissions

from shared import batch, merge, storage
from shared.cleanup import clean_up, work_containers
from shared.context import Context
from shared.errors import BatchdropError, BatchError, Conflict
from shared.runs import FAILED, MERGING, SUCCEEDED, TERMINAL, RunPaths, fails_run

log = logging.getLogger(__name__)
STDERR_TAIL_BYTES = 4096
LOG_COPY_BYTES = 1024 * 1024  # of each captured stdout/stderr kept in results: a task may print gigabytes
CLAIM_TTL = timedelta(minutes=12)  # longer than a function may run (10 minutes on Consumption)


@dataclass(frozen=True)
class TaskOutcome:
    task_id: str
    index: int
    succeeded: bool
    exit_code: int | None
    retries: int
    requeues: int
    duration_s: float | None
    failure: dict | None

    def as_report(self) -> dict:
        entry = {"task_id": self.task_id, "index": self.index, "outcome": "succeeded" if self.succeeded else "failed",
                 "exit_code": self.exit_code, "retries": self.retries, "requeues": self.requeues,
                 "duration_s": self.duration_s}
        if self.failure:
            entry["failure"] = self.failure
        return entry


def outcome_of(task) -> TaskOutcome:
    """Success is exit 0 *and* no failure info: Batch completes a task whose output upload failed
    with failureInfo set even when its command exited 0."""
    info = task.execution_info
    exit_code = info.exit_code if info else None
    failure = None
    if info and info.failure_info:
        f = info.failure_info
        failure = {"category": f.category, "code": f.code, "message": storage.scrub(f.message or "")}
    duration = None
    if info and info.start_time and info.end_time:
        duration = round((info.end_time - info.start_time).total_seconds(), 3)
    succeeded = task.state == "completed" and exit_code == 0 and failure is None
    if task.state != "completed" and failure is None:
        failure = {"category": "incomplete", "code": "TaskNotCompleted",
                   "message": f"the task was still {task.state} when the run ended"}
    index = int(task.id[1:]) if task.id[1:].isdigit() else -1  # the merge task has no index
    return TaskOutcome(task.id, index, succeeded, exit_code,
                       info.retry_count if info else 0, info.requeue_count if info else 0, duration, failure)


def finalize(ctx: Context, run_id: str) -> str:
    """Finish a run that the monitor handed over. Returns its final state (or why nothing was done)."""
    record = ctx.runs.try_read(run_id)
    if record is None:
        log.warning("finalize for unknown run run_id=%s", run_id)
        return "unknown run"
    state = record.data["state"]
    if state in TERMINAL:
        return state  # a repeated message: the first finalize finished the job
    if state != MERGING:
        log.warning("finalize before the run finished run_id=%s state=%s", run_id, state)
        return f"not ready ({state})"

    paths = RunPaths(run_id)
    results = storage.JsonBlobs(ctx.blobs, ctx.settings.results_container)
    report = results.read(paths.report)
    if report is None and record.data.get("merge_task") == "running":
        return MERGING  # the user's merge task is still at work; the monitor asks again when it is done
    if report is None:
        claimed = _claim(ctx, record)
        if claimed is None:
            _ask_again_later(ctx, record)
            return "busy"  # another finalize is working on this run right now
        record = claimed
        try:
            if record.data.get("merge_command") and record.data.get("merge_task") != "done":
                if not _start_merge_task(ctx, record):
                    return MERGING  # the monitor calls us again once the merge task has finished
                record = ctx.runs.read(run_id)
            report_data = _merge_and_report(ctx, record.data)
        except BaseException:
            _release(ctx, run_id, record.data["finalize_claimed_at"])  # the queue's retry starts over at once
            raise
        try:
            results.create(paths.report, report_data)
        except Conflict:  # a finalize whose claim had expired finished first: keep its report
            report_data = results.read(paths.report).data
    else:
        report_data = report.data
    final = report_data["state"]
    if final == FAILED:
        ctx.runs.write_error(run_id, {"run_id": run_id, "state": FAILED, "message": report_data["error"]})
    clean_up(ctx, run_id)

    def finish(data: dict) -> dict | None:
        if data["state"] != MERGING:
            return None
        changes = {"state": final, "tasks": report_data["tasks"], "finished_at": ctx.runs.now()}
        if report_data.get("output"):
            changes["output"] = report_data["output"]
        if report_data.get("error"):
            changes["error"] = report_data["error"]
        if report_data.get("container_execution"):
            changes["container_execution"] = report_data["container_execution"]
        return changes

    if ctx.runs.update_retrying(run_id, finish) is not None:  # one event, from the finalize that ended the run
        ctx.events.publish(final, run_id, {"output": report_data.get("output"), "tasks": report_data["tasks"]})
        log.info("finalized run_id=%s state=%s", run_id, final)
    return final


def _claim(ctx: Context, record):
    """Take the run for this finalize (a conditional write). Returns the claimed record, or None
    when another finalize holds a claim younger than CLAIM_TTL (the function timeout: older
    claims belong to a finalize that died)."""
    claimed = record.data.get("finalize_claimed_at")
    if claimed:
        age = ctx.clock() - datetime.fromisoformat(claimed.replace("Z", "+00:00"))
        if age < CLAIM_TTL:
            return None
    try:
        return ctx.runs.update(record, {"finalize_claimed_at": ctx.runs.now()})
    except Conflict:
        return None  # someone else wrote first; the caller asks again later


def _release(ctx: Context, run_id: str, claim: str) -> None:
    """Best effort: drop this finalize's own claim (a killed host cannot; its claim then expires)."""
    def drop(data: dict) -> dict | None:
        mine = data["state"] == MERGING and data.get("finalize_claimed_at") == claim
        return {"finalize_claimed_at": None} if mine else None

    try:
        ctx.runs.update_retrying(run_id, drop)
    except Exception as e:
        log.warning("could not release the finalize claim run_id=%s error=%s", run_id, type(e).__name__)


def _ask_again_later(ctx: Context, record) -> None:
    """The run is claimed by another finalize: this message comes back when that claim expires,
    so a finalize that died holding it does not leave the run waiting for the monitor."""
    wait = timedelta(seconds=30)
    if record.data.get("finalize_claimed_at"):
        claimed = datetime.fromisoformat(record.data["finalize_claimed_at"].replace("Z", "+00:00"))
        wait = max(wait, CLAIM_TTL - (ctx.clock() - claimed) + timedelta(seconds=30))
    try:
        ctx.finalize_queue.send_message(record.data["run_id"], visibility_timeout=int(wait.total_seconds()))
    except Exception as e:  # the monitor's re-request still covers this run
        log.warning("could not re-queue finalize run_id=%s error=%s", record.data["run_id"], type(e).__name__)


def _merge_and_report(ctx: Context, status: dict) -> dict:
    run_id = status["run_id"]
    paths = RunPaths(run_id)
    _, out_container = work_containers(ctx, run_id)
    if not ctx.blobs.get_container_client(out_container).exists():
        # only a finished finalize deletes it, and that one wrote the report we did not find
        raise BatchdropError(f"run {run_id}: the task output container is gone; not merging from nothing")
    tasks = sorted((outcome_of(t) for t in batch.list_tasks(ctx.batch, run_id, select=["id", "state", "executionInfo"])
                    if t.id != batch.MERGE_TASK_ID), key=lambda o: o.index)
    failed = [t for t in tasks if not t.succeeded]
    succeeded = [t for t in tasks if t.succeeded]
    entries = []
    for t in tasks:
        entry = t.as_report()
        if not t.succeeded:
            entry["stderr_tail"] = _keep_failure_logs(ctx, out_container, paths, t.task_id)
        entries.append(entry)

    # tasks still waiting or running when the run stopped are "stopped", not "failed"
    stopped = sum(1 for t in failed if t.failure and t.failure["category"] == "incomplete")
    counts = {"total": len(tasks), "active": 0, "running": 0, "succeeded": len(succeeded),
              "failed": len(failed) - stopped}
    if stopped:
        counts["stopped"] = stopped
    report = {"run_id": run_id, "tasks": counts, "entries": entries, "warnings": []}
    if status.get("job_ended"):
        report["warnings"].append(status["job_ended"])
    mode = _container_execution(ctx, run_id, tasks)
    if mode:
        report["container_execution"] = mode
    if not succeeded or fails_run(status.get("on_task_failure", "fail"), len(failed)):
        report.update(state=FAILED, error=_failure_reason(tasks, failed, counts, status.get("job_ended")))
        return _timed(ctx, status, report)

    kind = status.get("merge", "jsonl")
    if kind == "command":
        return _timed(ctx, status, _collect_merge_task(ctx, status, report, out_container, failed))
    ext = status.get("output_extension") or "bin"
    output_file = status.get("task_output") or f"output.{ext}"
    present = {b.name for b in ctx.blobs.get_container_client(out_container).list_blobs(name_starts_with="tasks/")}
    merged = set() if kind == "none" else {f"tasks/{t.task_id}/{output_file}" for t in succeeded}
    # everything else a succeeded task wrote to OUTPUT_DIR is kept under results/<run>/tasks/<task>/
    for t in succeeded:
        prefix = f"tasks/{t.task_id}/"
        for name in sorted(n for n in present if n.startswith(prefix) and n not in merged):
            _copy_blob(ctx, out_container, name, paths.task_prefix(t.task_id) + name[len(prefix):])
    if kind == "none":
        report["output"] = f"{ctx.settings.results_container}/{run_id}/tasks/"
    else:
        names = [f"tasks/{t.task_id}/{output_file}" for t in succeeded]
        missing = [t.task_id for t, name in zip(succeeded, names) if name not in present]
        sources = _sources(ctx, out_container, [n for n in names if n in present])
        size = storage.commit_stream(ctx.blobs, ctx.settings.results_container, paths.output(ext),
                                     merge.merge_stream(kind, sources))
        if missing:
            report["warnings"].append(f"{len(missing)} succeeded task(s) wrote no {output_file}: {', '.join(missing[:20])}")
        report["output"] = f"{ctx.settings.results_container}/{paths.output(ext)}"
        report["output_bytes"] = size
    report["state"] = SUCCEEDED
    if failed:
        report["warnings"].append(f"partial result: {len(failed)} task(s) did not succeed and are not in the output")
    return _timed(ctx, status, report)


def _failure_reason(tasks: list[TaskOutcome], failed: list[TaskOutcome], counts: dict, job_ended: str | None) -> str:
    if not tasks:
        return "the job had no tasks"
    reason = f"{counts['failed']} of {len(tasks)} tasks failed"
    if counts.get("stopped"):
        reason += f" ({counts['stopped']} more stopped before they finished)"
    first = next((t for t in failed if t.failure is None or t.failure["category"] != "incomplete"), None)
    if first:
        reason += f"; first: {first.task_id} (exit code {first.exit_code}"
        reason += f", {first.failure['code']})" if first.failure else ")"
    if job_ended:
        reason += f"; {job_ended}"
    return reason + "; see report.json for each task's stderr"


def _start_merge_task(ctx: Context, record) -> bool:
    """Add the user's merge task (once). Returns False when it was started and must be waited for,
    True when there is nothing to merge (the run failed) and the report can be written now."""
    status = record.data
    tasks = [outcome_of(t) for t in batch.list_tasks(ctx.batch, status["run_id"], select=["id", "state", "executionInfo"])
             if t.id != batch.MERGE_TASK_ID]
    failed = sum(1 for t in tasks if not t.succeeded)
    if not tasks or failed == len(tasks) or fails_run(status.get("on_task_failure", "fail"), failed):
        return True
    if status.get("job_ended"):
        return True  # no task can be added to an ended job; the report says why
    run_id = status["run_id"]
    _, out_container = work_containers(ctx, run_id)
    timeout = timedelta(minutes=status.get("task_timeout_minutes", 60))
    expiry = ctx.clock() + timeout + timedelta(minutes=30)
    sas = storage.SasMinter(ctx.blobs)
    merge_cmd = status["merge_command"]
    plan = batch.MergeTaskPlan(
        command=merge_cmd["command"], image=merge_cmd.get("image"),
        output_file=status.get("task_output") or "output.bin",
        outputs_url=sas.container_url(out_container, ContainerSasPermissions(read=True, list=True), expiry),
        output_container_url=sas.container_url(out_container, ContainerSasPermissions(create=True, write=True), expiry),
        timeout=timeout,
    )
    try:
        batch.add_task(ctx.batch, run_id, batch.merge_task_model(plan))
        batch.seal_job(ctx.batch, run_id)
    except BatchError as e:
        if e.transient:
            raise
        # e.g. the job ended meanwhile: record why, and report instead of merging
        reason = f"the merge task could not be added: {e}"
        ctx.runs.update_retrying(run_id, lambda d: {"job_ended": reason})
        return True
    # the next finalize (after the monitor saw the merge task finish) collects the result
    ctx.runs.update_retrying(run_id, lambda d: {"merge_task": "running", "merge_task_started_at": ctx.runs.now(),
                                                "finalize_claimed_at": None} if d.get("merge_task") != "running" else None)
    log.info("merge task started run_id=%s", run_id)
    return False


def _collect_merge_task(ctx: Context, status: dict, report: dict, out_container: str, failed: list) -> dict:
    run_id = status["run_id"]
    paths = RunPaths(run_id)
    task = batch.get_task(ctx.batch, run_id, batch.MERGE_TASK_ID)
    outcome = outcome_of(task) if task is not None else None
    if outcome is None and status.get("job_ended"):
        report.update(state=FAILED, error=f"nothing was merged: {status['job_ended']}")
        return report
    if outcome is None or not outcome.succeeded:
        entry = outcome.as_report() if outcome else {"task_id": batch.MERGE_TASK_ID, "outcome": "failed"}
        entry["stderr_tail"] = _keep_failure_logs(ctx, out_container, paths, batch.MERGE_TASK_ID)
        report["merge_task"] = entry
        report.update(state=FAILED, error="the merge task failed; see report.json (merge_task) for its stderr")
        return report
    report["merge_task"] = outcome.as_report()
    output_file = status.get("task_output") or "output.bin"
    ext = status.get("output_extension") or "bin"
    size = storage.commit_stream(ctx.blobs, ctx.settings.results_container, paths.output(ext),
                                 storage.read_chunks(ctx.blobs, out_container, f"merged/{output_file}"))
    report.update(state=SUCCEEDED, output=f"{ctx.settings.results_container}/{paths.output(ext)}", output_bytes=size)
    if failed:
        report["warnings"].append(f"partial result: {len(failed)} task(s) failed and were not merged")
    return report


def _timed(ctx: Context, status: dict, report: dict) -> dict:
    created = status.get("created_at")
    report["timings"] = {"created_at": created, "submitted_at": status.get("submitted_at"),
                         "merged_at": ctx.runs.now()}
    if created:
        start = datetime.fromisoformat(created.replace("Z", "+00:00"))
        report["timings"]["wall_s"] = round((ctx.clock() - start).total_seconds(), 3)
    return report


def _sources(ctx: Context, container: str, blob_names: list[str], ahead: int = 8) -> Iterator[Iterator[bytes]]:
    """Each task output blob as a stream, in the order given. The next few downloads start
    early (their first range, at most BLOCK_SIZE each), so many small outputs do not wait on one
    request at a time. A blob that vanished meanwhile is an error, never an empty source."""
    names = iter(blob_names)

    def open_blob(name: str):
        return ctx.blobs.get_blob_client(container, name).download_blob()

    with ThreadPoolExecutor(ahead, thread_name_prefix="merge-read") as pool:
        pending = deque(pool.submit(open_blob, name) for name in islice(names, ahead))
        while pending:
            future = pending.popleft()
            following = next(names, None)
            if following is not None:
                pending.append(pool.submit(open_blob, following))
            yield future.result().chunks()


def _keep_failure_logs(ctx: Context, out_container: str, paths: RunPaths, task_id: str) -> str | None:
    """Copy the last LOG_COPY_BYTES of a failed task's stdout/stderr into results/<run>/tasks/<task>/
    and return the last STDERR_TAIL_BYTES of its stderr for the report.

    Whatever the task printed, results get at most LOG_COPY_BYTES (plus one line saying what was
    cut) per file and memory holds at most one such tail. Copies and tail are scrubbed: a task may
    print a URL it was given."""
    prefix = f"logs/{task_id}/"
    for blob in ctx.blobs.get_container_client(out_container).list_blobs(name_starts_with=prefix):
        _copy_log_tail(ctx, out_container, blob.name, paths.task_prefix(task_id) + blob.name[len(prefix):])
    tail = _log_tail(ctx, out_container, f"{prefix}stderr.txt", STDERR_TAIL_BYTES)
    return tail.data.decode("utf-8", errors="replace") if tail is not None else None


@dataclass(frozen=True)
class LogTail:
    data: bytes  # scrubbed
    size: int  # of the whole log
    kept: int  # bytes of the log that `data` is made from (the last ones)


def _log_tail(ctx: Context, container: str, name: str, max_bytes: int) -> LogTail | None:
    """The scrubbed last `max_bytes` (at most) of a log blob, or None if there is none. One ranged read."""
    found = storage.read_last(ctx.blobs, container, name, max_bytes + storage.SECRET_CONTEXT_BYTES)
    if found is None:
        return None
    raw, size = found
    data, start = storage.scrub_tail(raw, max(0, len(raw) - max_bytes))
    return LogTail(data, size, len(raw) - start)


def _copy_log_tail(ctx: Context, container: str, name: str, target: str) -> None:
    """One Put Blob of the log's tail, first saying what was cut when the log was longer."""
    tail = _log_tail(ctx, container, name, LOG_COPY_BYTES)
    if tail is None:
        return  # gone meanwhile (a finalize that finished first deleted the work container)
    cut = tail.size - tail.kept
    header = (f"[batchdrop: the first {cut:,} bytes of {tail.size:,} were cut; this is the last {tail.kept:,}]\n"
              .encode() if cut else b"")
    ctx.blobs.get_blob_client(ctx.settings.results_container, target).upload_blob(header + tail.data, overwrite=True)


def _copy_blob(ctx: Context, container: str, name: str, target: str) -> None:
    storage.commit_stream(ctx.blobs, ctx.settings.results_container, target,
                          storage.read_chunks(ctx.blobs, container, name))


def _container_execution(ctx: Context, run_id: str, tasks: list[TaskOutcome]) -> str | None:
    """How container tasks actually ran, when the Batch service says (the local emulator does)."""
    if not tasks:
        return None
    try:
        task = ctx.batch.get_task(run_id, tasks[0].task_id)
    except Exception:
        return None
    return task.get("emulatorContainerMode")
