"""Step 3 (queue): verify the task outputs, merge them, report, clean up.

Safe to run twice, or to be killed anywhere and run again: a finalize holds the run's claim
while it works (shared.claims: a short lease it renews, so the monitor re-drives a finalize that
died within a minute or two); the merged blob is committed in one call (a reader sees all of it
or nothing, and a rerun replaces it with identical bytes); report.json marks the merge as done;
cleanup happens only after the output is committed, and the run's final state is written last.

Every output is checked against the manifest its task wrote after it succeeded (size and
SHA-256, shared.manifest) before it is merged: an output lost or corrupt on the way sends its
task to run again (a new Batch task: one that succeeded cannot be reactivated), within the
INFRA_RETRIES budget, and the run back to running. The report is assembled by `shared.report`.
"""
from __future__ import annotations

import dataclasses
import io
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace

from shared import batch, claims, jobplan, merge_parts, naming, report, report_html, run_usage, storage
from shared.cleanup import work_containers
from shared.context import Context
from shared.errors import BatchdropError, BatchError
from shared.pricing import PriceTable
from shared.report import Merged, TaskOutcome, outcome_of
from shared.runs import MERGING, TERMINAL, RunPaths, RunRecord
from shared.task_outputs import LostOutputs, listed_sizes, verified_manifests

__all__ = ["finalize", "outcome_of", "TaskOutcome", "LOG_COPY_BYTES", "STDERR_TAIL_BYTES"]

log = logging.getLogger(__name__)
STDERR_TAIL_BYTES = 4096
LOG_COPY_BYTES = 1024 * 1024  # of each captured stdout/stderr kept in results: a task may print gigabytes
RERUNNING = "rerunning"
CONTINUES = "merging (continues in the next invocation)"


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
    started = time.monotonic()
    with ctx.claims.hold(run_id, claims.FINALIZE) as claim:
        if claim is None:
            return "busy"  # another finalize is at work; should it die, the monitor re-drives the run
        outcome = _finalize_claimed(ctx, run_id, started)
    if outcome == CONTINUES:
        # after the claim is let go, or the next invocation could find it still held and drop the message
        storage.queue_send(ctx.finalize_queue, naming.finalize_message(run_id))
        log.info("merge continues in another invocation run_id=%s", run_id)
    return outcome


def _finalize_claimed(ctx: Context, run_id: str, started: float) -> str:
    run = ctx.runs.read(run_id)  # again: the claim's previous holder may have got further
    if run.state != MERGING:
        return run.state
    done = ctx.runs.read_report(run_id)
    if done is None:
        if run.merge_task == "running":
            return MERGING  # the user's merge task is still at work; the monitor asks again when it is done
        attempted = ctx.runs.commit_retrying(run_id, lambda r: r.finalize_attempted())
        if attempted is None:
            return ctx.runs.read(run_id).state
        made = _report(ctx, attempted, started)
        if isinstance(made, str):
            return made
        done = ctx.runs.keep_report(run_id, made)  # the first report written is kept
    _write_html(ctx, run, done)  # again after a crash: the same page from the same report
    ctx.runs.finish(run_id, done)  # one event, from the finalize that ends the run
    return done["state"]


def _report(ctx: Context, run: RunRecord, started: float) -> dict | str:
    """Verify, merge and assemble the report. Returns it, or why there is none yet (merging while
    the user's merge task runs, or in parts across invocations; rerunning tasks whose outputs were
    lost)."""
    _, out_container = work_containers(ctx, run.run_id)
    if not storage.container_exists(ctx.blobs, out_container):
        # only a finished finalize deletes it, and that one wrote the report we did not find
        raise BatchdropError(f"run {run.run_id}: the task output container is gone; not merging from nothing")
    kept = ctx.runs.kept_outcomes(run) if run.merge_progress else None
    tasks = [TaskOutcome(**t) for t in kept] if kept is not None else current_outcomes(ctx, run)

    def assemble(merged: Merged | None) -> dict:
        tails = {t.task_id: _keep_failure_logs(ctx, out_container, run.run_id, t.task_id)
                 for t in tasks if not t.succeeded}
        ran = [t for t in tasks if t.reused_from is None]  # a rerun's reused tasks are not in its job
        mode = batch.container_execution(ctx.batch, run.run_id, run.attempt(ran[0].task_id)) if ran else None
        now = ctx.clock()
        made = report.assemble(run, tasks, stderr_tails=tails, container_execution=mode, merged=merged, now=now)
        return {**made, **run_usage.usage_and_cost(run, tasks, now, _prices(ctx))}

    if report.must_fail(run, tasks):
        return assemble(None)
    succeeded = [t for t in tasks if t.succeeded]
    try:
        if run.merge != "command":
            merged = merge_parts.merge_in_parts(ctx, run, succeeded, out_container, started)
            if merged is merge_parts.CONTINUES:
                if kept is None:
                    ctx.runs.keep_outcomes(run, [dataclasses.asdict(t) for t in tasks])
                return CONTINUES
            return MERGING if merged is None else assemble(merged)
        if run.merge_task != "done":
            verified_manifests(ctx, out_container, succeeded, listed_sizes(ctx, out_container))
            if not _start_merge_task(ctx, run):
                return MERGING  # the monitor calls us again once the merge task has finished
            run = ctx.runs.read(run.run_id)
        return assemble(_collect_merge_task(ctx, run, out_container))
    except LostOutputs as lost:
        return _rerun_lost(ctx, run, lost.problems, assemble)


def current_outcomes(ctx: Context, run: RunRecord) -> list[TaskOutcome]:
    """The outcome of each task's current Batch task (its latest rerun, if it had any), in task order;
    a rerun's reused tasks (shared.rerun) succeeded in the run named by `reused_from`."""
    listed = batch.finished_tasks(ctx.batch, run.run_id)
    current = [outcome_of(t) for t in listed if t["id"] == run.attempt(naming.base_task_id(t["id"]))
               and naming.base_task_id(t["id"]) not in run.reused]
    current += [report.reused_outcome(task, source) for task, source in run.reused.items()]
    return sorted((_stopped_if_waiting(run, o) for o in current), key=lambda o: o.index)


def _stopped_if_waiting(run: RunRecord, outcome: TaskOutcome) -> TaskOutcome:
    """A task the infrastructure failed, still waiting for its retry when the run stopped (another
    task failed by itself), did not fail: it never got to finish, like a task still running."""
    if outcome.succeeded or (outcome.attempt or outcome.task_id) not in run.retry_waiting:
        return outcome
    code = (outcome.failure or {}).get("code")
    return replace(outcome, failure={"category": "incomplete", "code": "WaitingForRetry",
                                     "message": f"failed by the infrastructure ({code}) and waiting for its retry "
                                                f"when the run stopped"})


def _prices(ctx: Context) -> PriceTable | str:
    try:
        return run_usage.price_table(ctx.blobs, ctx.settings.price_table_blob)
    except BatchdropError as e:  # a wrong table costs the report its cost, never the run
        return str(e)


def _write_html(ctx: Context, run: RunRecord, done: dict) -> None:
    """report.html beside report.json, from the report that was kept (a rerun writes the same)."""
    container, _, name = (run.job_file or "").partition("/")
    raw = storage.read_optional(ctx.blobs, container, name) if name else None
    job_file = raw[:ctx.settings.max_job_file_bytes].decode("utf-8", errors="replace") if raw is not None else None
    page = io.StringIO()
    report_html.write_html(done, job_file, page)
    storage.put_blob(ctx.blobs, ctx.settings.results_container, RunPaths(run.run_id).report_html,
                     page.getvalue().encode("utf-8"), content_type="text/html; charset=utf-8")


# ----------------------------------------------------------------------------- lost outputs


def _rerun_lost(ctx: Context, run: RunRecord, problems: Mapping[str, str], assemble) -> dict | str:
    """Run the tasks whose outputs were lost again (the run goes back to running), or, once a
    task has spent its INFRA_RETRIES, fail the run saying which task's output was lost and how."""
    budget = ctx.settings.infra_retries
    spent = sorted(t for t in problems if run.infra_retries.get(t, 0) >= budget)
    if spent:
        first = spent[0]
        return assemble(Merged(failure=f"the output of task {first} was lost: {problems[first]} (after {budget} "
                                        f"rerun(s)); {len(problems)} task(s) affected"))
    for task in sorted(problems):
        rerun = naming.attempt_id(task, run.reruns.get(task, 0) + 1)
        if not batch.rerun_task(ctx.batch, run.run_id, run.attempt(task), rerun):
            return assemble(Merged(failure=f"the output of task {task} was lost ({problems[task]}) and the task "
                                           f"could not run again: the Batch job no longer takes tasks"))
    ctx.runs.commit_retrying(run.run_id, lambda r: r.outputs_lost(problems))
    log.warning("outputs lost, tasks run again run_id=%s tasks=%d first=%s", run.run_id, len(problems),
                sorted(problems)[0])
    return RERUNNING


# ----------------------------------------------------------------------------- merging


def _start_merge_task(ctx: Context, run: RunRecord) -> bool:
    """Add the user's merge task (once), and seal the job: it ends (with its pool) when the merge
    task does. Returns False when it was started and must be waited for, True when it cannot run
    (the job ended) and the report can be written now."""
    if run.job_ended:
        return True  # no task can be added to an ended job; the report says why
    _, out_container = work_containers(ctx, run.run_id)
    plan = jobplan.plan_merge_task(run, out_container, storage.SasMinter(ctx.blobs), ctx.clock())
    try:
        batch.add_tasks(ctx.batch, run.run_id, [batch.merge_task_body(plan)])
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
