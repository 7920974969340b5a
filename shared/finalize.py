"""Step 3 (queue): merge the task outputs, report, clean up.

Safe to run twice, or to be killed anywhere and run again: the merged blob is committed in one
call (a reader sees all of it or nothing, and a rerun replaces it with identical bytes);
report.json marks the merge as done; cleanup happens only after the output is committed, and
the run's final state is written last. The report itself is assembled by `shared.report`.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared import batch, jobplan, merge, naming, report, storage
from shared.cleanup import work_containers
from shared.context import Context
from shared.errors import BatchdropError, BatchError, Conflict
from shared.report import Merged, TaskOutcome, outcome_of
from shared.runs import MERGING, TERMINAL, RunPaths, RunRecord

__all__ = ["finalize", "outcome_of", "TaskOutcome", "CLAIM_TTL", "LOG_COPY_BYTES", "STDERR_TAIL_BYTES"]

log = logging.getLogger(__name__)
STDERR_TAIL_BYTES = 4096
LOG_COPY_BYTES = 1024 * 1024  # of each captured stdout/stderr kept in results: a task may print gigabytes
CLAIM_TTL = timedelta(minutes=12)  # longer than a function may run (10 minutes on Consumption)


def finalize(ctx: Context, run_id: str) -> str:
    """Finish a run that the monitor handed over. Returns its final state (or why nothing was done)."""
    run = ctx.runs.try_read(run_id)
    if run is None:
        log.warning("finalize for unknown run run_id=%s", run_id)
        return "unknown run"
    if run.state in TERMINAL:
        return run.state  # a repeated message: the first finalize finished the job
    if run.state != MERGING:
        log.warning("finalize before the run finished run_id=%s state=%s", run_id, run.state)
        return f"not ready ({run.state})"
    done = ctx.runs.read_report(run_id)
    if done is None and run.merge_task == "running":
        return MERGING  # the user's merge task is still at work; the monitor asks again when it is done
    if done is None:
        made = _report_once(ctx, run)
        if isinstance(made, str):
            return made
        done = made
    ctx.runs.finish(run_id, done)  # one event, from the finalize that ends the run
    return done["state"]


def _report_once(ctx: Context, run: RunRecord) -> dict | str:
    """Claim the run, merge and write report.json (the first report written is kept). Returns the
    report, or why there is none yet ("busy", or merging while the user's merge task runs)."""
    claimed = _claim(ctx, run)
    if claimed is None:
        _ask_again_later(ctx, run)
        return "busy"  # another finalize is working on this run right now
    try:
        if claimed.merge_command and claimed.merge_task != "done":
            if not _start_merge_task(ctx, claimed):
                return MERGING  # the monitor calls us again once the merge task has finished
            claimed = ctx.runs.read(run.run_id)
        made = _merge_and_report(ctx, claimed)
    except BaseException:
        _release(ctx, run.run_id, claimed.finalize_claimed_at)  # the queue's retry starts over at once
        raise
    return ctx.runs.keep_report(run.run_id, made)


def _claim(ctx: Context, run: RunRecord) -> RunRecord | None:
    """Take the run for this finalize (a conditional write). Returns the claimed record, or None
    when another finalize holds a claim younger than CLAIM_TTL (the function timeout: older
    claims belong to a finalize that died) or wrote first."""
    claimed = run.claimed(ctx.clock(), CLAIM_TTL)
    if claimed is None:
        return None
    try:
        return ctx.runs.commit(run, claimed)
    except Conflict:
        return None  # someone else wrote first; the caller asks again later


def _release(ctx: Context, run_id: str, claim: datetime | None) -> None:
    """Best effort: drop this finalize's own claim (a killed host cannot; its claim then expires)."""
    if claim is None:
        return
    try:
        ctx.runs.commit_retrying(run_id, lambda run: run.released(claim))
    except Exception as e:  # the claim expires anyway
        log.warning("could not release the finalize claim run_id=%s error=%s", run_id, type(e).__name__)


def _ask_again_later(ctx: Context, run: RunRecord) -> None:
    """The run is claimed by another finalize: this message comes back when that claim expires,
    so a finalize that died holding it does not leave the run waiting for the monitor."""
    wait = timedelta(seconds=30)
    if run.finalize_claimed_at is not None:
        wait = max(wait, CLAIM_TTL - (ctx.clock() - run.finalize_claimed_at) + timedelta(seconds=30))
    try:
        storage.queue_send_later(ctx.finalize_queue, naming.finalize_message(run.run_id), wait)
    except BatchdropError as e:  # the monitor's re-request still covers this run
        log.warning("could not re-queue finalize run_id=%s error=%s", run.run_id, e)


def _merge_and_report(ctx: Context, run: RunRecord) -> dict:
    """Gather the facts (task outcomes, failed tasks' logs, the merged output) for `report.assemble`."""
    _, out_container = work_containers(ctx, run.run_id)
    if not storage.container_exists(ctx.blobs, out_container):
        # only a finished finalize deletes it, and that one wrote the report we did not find
        raise BatchdropError(f"run {run.run_id}: the task output container is gone; not merging from nothing")
    tasks = sorted((outcome_of(t) for t in batch.finished_tasks(ctx.batch, run.run_id)), key=lambda o: o.index)
    tails = {t.task_id: _keep_failure_logs(ctx, out_container, run.run_id, t.task_id)
             for t in tasks if not t.succeeded}
    mode = batch.container_execution(ctx.batch, run.run_id, tasks[0].task_id) if tasks else None
    merged = None if report.must_fail(run, tasks) else _merge(ctx, run, tasks, out_container)
    return report.assemble(run, tasks, stderr_tails=tails, container_execution=mode, merged=merged,
                           now=ctx.clock())


def _merge(ctx: Context, run: RunRecord, tasks: list[TaskOutcome], out_container: str) -> Merged:
    """The merged output in results (committed once), and every other file a succeeded task left
    in OUTPUT_DIR under results/<run>/tasks/<task>/."""
    if run.merge == "command":
        return _collect_merge_task(ctx, run, out_container)
    results, paths = ctx.settings.results_container, RunPaths(run.run_id)
    succeeded = [t for t in tasks if t.succeeded]
    names = [naming.task_outputs(t.task_id) + run.output_file for t in succeeded]
    present = set(storage.blob_names(ctx.blobs, out_container, "tasks/"))
    _keep_other_outputs(ctx, run, out_container, succeeded, present, set() if run.merge == "none" else set(names))
    if run.merge == "none":
        return Merged(output=f"{results}/{paths.tasks}")
    ext = run.output_extension or "bin"
    sources = _sources(ctx, out_container, [n for n in names if n in present])
    size = storage.commit_stream(ctx.blobs, results, paths.output(ext), merge.merge_stream(run.merge, sources))
    missing = tuple(t.task_id for t, name in zip(succeeded, names, strict=True) if name not in present)
    return Merged(output=f"{results}/{paths.output(ext)}", output_bytes=size, missing=missing)


def _keep_other_outputs(ctx: Context, run: RunRecord, out_container: str, succeeded: list[TaskOutcome],
                        present: set[str], merged: set[str]) -> None:
    paths = RunPaths(run.run_id)
    for t in succeeded:
        prefix = naming.task_outputs(t.task_id)
        for name in sorted(n for n in present if n.startswith(prefix) and n not in merged):
            storage.copy_blob(ctx.blobs, out_container, name, ctx.settings.results_container,
                              paths.task_prefix(t.task_id) + name[len(prefix):])


def _sources(ctx: Context, container: str, blob_names: list[str], ahead: int = 8) -> Iterator[Iterator[bytes]]:
    """Each task output as a stream, in the order given (see storage.stream_blobs)."""
    return storage.stream_blobs(ctx.blobs, container, blob_names, ahead)


def _start_merge_task(ctx: Context, run: RunRecord) -> bool:
    """Add the user's merge task (once). Returns False when it was started and must be waited for,
    True when there is nothing to merge (the run failed) and the report can be written now."""
    tasks = [outcome_of(t) for t in batch.finished_tasks(ctx.batch, run.run_id)]
    if report.must_fail(run, tasks):
        return True
    if run.job_ended:
        return True  # no task can be added to an ended job; the report says why
    _, out_container = work_containers(ctx, run.run_id)
    plan = jobplan.plan_merge_task(run, out_container, storage.SasMinter(ctx.blobs), ctx.clock())
    try:
        batch.add_task(ctx.batch, run.run_id, batch.merge_task_model(plan))
        batch.seal_job(ctx.batch, run.run_id)
    except BatchError as e:
        if e.transient:
            raise
        # e.g. the job ended meanwhile: record why, and report instead of merging
        reason = f"the merge task could not be added: {e}"
        ctx.runs.commit_retrying(run.run_id, lambda r: r.merge_task_refused(reason))
        return True
    # the next finalize (after the monitor saw the merge task finish) collects the result
    ctx.runs.commit_retrying(run.run_id, lambda r: r.merge_task_started(ctx.clock()))
    log.info("merge task started run_id=%s", run.run_id)
    return False


def _collect_merge_task(ctx: Context, run: RunRecord, out_container: str) -> Merged:
    task = batch.get_task(ctx.batch, run.run_id, batch.MERGE_TASK_ID)
    outcome = outcome_of(task) if task is not None else None
    if outcome is None and run.job_ended:
        return Merged(recombined=True, failure=f"nothing was merged: {run.job_ended}")
    if outcome is None or not outcome.succeeded:
        entry = outcome.as_report() if outcome else {"task_id": batch.MERGE_TASK_ID, "outcome": "failed"}
        entry["stderr_tail"] = _keep_failure_logs(ctx, out_container, run.run_id, batch.MERGE_TASK_ID)
        return Merged(recombined=True, merge_task=entry, failure=report.MERGE_FAILED)
    results, target = ctx.settings.results_container, RunPaths(run.run_id).output(run.output_extension or "bin")
    size = storage.copy_blob(ctx.blobs, out_container, naming.merged_output(run.output_file), results, target)
    return Merged(recombined=True, merge_task=outcome.as_report(), output=f"{results}/{target}", output_bytes=size)


def _keep_failure_logs(ctx: Context, out_container: str, run_id: str, task_id: str) -> str | None:
    """Copy the last LOG_COPY_BYTES of a failed task's stdout/stderr into results/<run>/tasks/<task>/
    and return the last STDERR_TAIL_BYTES of its stderr for the report.

    Whatever the task printed, results get at most LOG_COPY_BYTES (plus one line saying what was
    cut) per file and memory holds at most one such tail. Copies and tail are scrubbed: a task may
    print a URL it was given."""
    prefix = naming.task_logs(task_id)
    for name in storage.blob_names(ctx.blobs, out_container, prefix):
        _copy_log_tail(ctx, out_container, name, RunPaths(run_id).task_prefix(task_id) + name[len(prefix):])
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
    storage.put_blob(ctx.blobs, ctx.settings.results_container, target, header + tail.data)
