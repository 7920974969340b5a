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
from shared.errors import Conflict
from shared.runs import FAILED, MERGING, SUCCEEDED, TERMINAL, RunPaths

log = logging.getLogger(__name__)
STDERR_TAIL_BYTES = 4096


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
        failure = {"category": f.category, "code": f.code, "message": f.message}
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
    if report is None and record.data.get("merge_command") and record.data.get("merge_task") != "done":
        if not _start_merge_task(ctx, record):
            return MERGING  # the monitor calls us again once the merge task has finished
    if report is None:  # not merged yet (a rerun after the report was written skips the merge)
        report_data = _merge_and_report(ctx, record.data)
        results.put(paths.report, report_data)
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

    ctx.runs.update_retrying(run_id, finish)
    ctx.events.publish(final, run_id, {"output": report_data.get("output"), "tasks": report_data["tasks"]})
    log.info("finalized run_id=%s state=%s", run_id, final)
    return final


def _merge_and_report(ctx: Context, status: dict) -> dict:
    run_id = status["run_id"]
    paths = RunPaths(run_id)
    _, out_container = work_containers(ctx, run_id)
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

    # tasks still waiting or running when a failing run stopped are "stopped", not "failed"
    stopped = sum(1 for t in failed if t.failure and t.failure["category"] == "incomplete")
    counts = {"total": len(tasks), "active": 0, "running": 0, "succeeded": len(succeeded),
              "failed": len(failed) - stopped}
    if stopped:
        counts["stopped"] = stopped
    report = {"run_id": run_id, "tasks": counts, "entries": entries, "warnings": []}
    mode = _container_execution(ctx, run_id, tasks)
    if mode:
        report["container_execution"] = mode
    policy = status.get("on_task_failure", "fail")
    if not tasks or (failed and policy == "fail") or not succeeded:
        first = next((t for t in failed if t.failure is None or t.failure["category"] != "incomplete"),
                     failed[0] if failed else None)
        reason = f"{counts['failed']} of {len(tasks)} tasks failed" if tasks else "the job had no tasks"
        if stopped:
            reason += f" ({stopped} more stopped before they finished)"
        if first:
            reason += f"; first: {first.task_id} (exit code {first.exit_code}"
            reason += f", {first.failure['code']})" if first.failure else ")"
        report.update(state=FAILED, error=reason + "; see report.json for each task's stderr")
        return _timed(ctx, status, report)

    kind = status.get("merge", "jsonl")
    if kind == "command":
        return _timed(ctx, status, _collect_merge_task(ctx, status, report, out_container, failed))
    ext = status.get("output_extension") or "bin"
    output_file = status.get("task_output") or f"output.{ext}"
    if kind == "none":
        for t in succeeded:
            _copy_prefix(ctx, out_container, f"tasks/{t.task_id}/", paths.task_prefix(t.task_id))
        report["output"] = f"{ctx.settings.results_container}/{run_id}/tasks/"
    else:
        missing: list[str] = []
        sources = _sources(ctx, out_container, [f"tasks/{t.task_id}/{output_file}" for t in succeeded], missing)
        size = storage.commit_stream(ctx.blobs, ctx.settings.results_container, paths.output(ext),
                                     merge.merge_stream(kind, sources))
        if missing:
            report["warnings"].append(f"{len(missing)} succeeded task(s) wrote no {output_file}: {', '.join(missing[:20])}")
        report["output"] = f"{ctx.settings.results_container}/{paths.output(ext)}"
        report["output_bytes"] = size
    report["state"] = SUCCEEDED
    if failed:
        report["warnings"].append(f"partial result: {len(failed)} task(s) failed and are not in the output")
    return _timed(ctx, status, report)


def _start_merge_task(ctx: Context, record) -> bool:
    """Add the user's merge task (once). Returns False when it was started and must be waited for,
    True when there is nothing to merge (the run failed) and the report can be written now."""
    status = record.data
    if status.get("merge_task") == "running":
        return False
    tasks = [outcome_of(t) for t in batch.list_tasks(ctx.batch, status["run_id"], select=["id", "state", "executionInfo"])
             if t.id != batch.MERGE_TASK_ID]
    if not tasks or (any(not t.succeeded for t in tasks) and status.get("on_task_failure", "fail") == "fail"):
        return True
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
    batch.add_task(ctx.batch, run_id, batch.merge_task_model(plan))
    batch.seal_job(ctx.batch, run_id)
    try:
        ctx.runs.update(record, {"merge_task": "running", "merge_task_started_at": ctx.runs.now()})
    except Conflict:
        pass  # a concurrent finalize recorded it; the task itself is added once (TaskExists)
    log.info("merge task started run_id=%s", run_id)
    return False


def _collect_merge_task(ctx: Context, status: dict, report: dict, out_container: str, failed: list) -> dict:
    run_id = status["run_id"]
    paths = RunPaths(run_id)
    task = batch.get_task(ctx.batch, run_id, batch.MERGE_TASK_ID)
    outcome = outcome_of(task) if task is not None else None
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


def _sources(ctx: Context, container: str, blob_names: list[str], missing: list[str],
             ahead: int = 8) -> Iterator[Iterator[bytes]]:
    """Each task output blob as a stream, in the order given. The next few downloads start
    early (their first range, at most BLOCK_SIZE each), so many small outputs do not wait on one
    request at a time. Absent blobs are skipped and named in `missing`."""
    from azure.core.exceptions import ResourceNotFoundError

    def open_blob(name: str):
        try:
            return ctx.blobs.get_blob_client(container, name).download_blob()
        except ResourceNotFoundError:
            return None

    names = iter(blob_names)
    with ThreadPoolExecutor(ahead, thread_name_prefix="merge-read") as pool:
        pending = deque((name, pool.submit(open_blob, name)) for name in islice(names, ahead))
        while pending:
            name, future = pending.popleft()
            following = next(names, None)
            if following is not None:
                pending.append((following, pool.submit(open_blob, following)))
            downloader = future.result()
            if downloader is None:
                missing.append(name.split("/")[-2] if name.count("/") >= 2 else name)
                continue
            yield downloader.chunks()


def _keep_failure_logs(ctx: Context, out_container: str, paths: RunPaths, task_id: str) -> str | None:
    """Copy a failed task's stdout/stderr into results/<run>/tasks/<task>/ and return the stderr tail."""
    _copy_prefix(ctx, out_container, f"logs/{task_id}/", paths.task_prefix(task_id))
    return storage.read_tail(ctx.blobs, out_container, f"logs/{task_id}/stderr.txt", STDERR_TAIL_BYTES)


def _copy_prefix(ctx: Context, container: str, prefix: str, target_prefix: str) -> None:
    source = ctx.blobs.get_container_client(container)
    for blob in source.list_blobs(name_starts_with=prefix):
        target = target_prefix + blob.name[len(prefix):]
        storage.commit_stream(ctx.blobs, ctx.settings.results_container, target,
                              storage.read_chunks(ctx.blobs, container, blob.name))


def _container_execution(ctx: Context, run_id: str, tasks: list[TaskOutcome]) -> str | None:
    """How container tasks actually ran, when the Batch service says (the local emulator does)."""
    if not tasks:
        return None
    try:
        task = ctx.batch.get_task(run_id, tasks[0].task_id)
    except Exception:
        return None
    return task.get("emulatorContainerMode")
