"""Step 2 (timer): keep each active run's status.json current and hand finished runs to finalize.

Per run and tick: one task-counts call, plus one filtered list only when the counts say the run
is done (counts may lag). The running -> merging change is a conditional write, so when two
monitors overlap exactly one of them enqueues the finalize message.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from azure.core.exceptions import HttpResponseError

from shared import batch, storage
from shared.storage import scrub
from shared.cleanup import clean_up, end_run
from shared.context import Context
from shared.errors import BatchdropError, Conflict, RunNotFound
from shared.sweep import sweep_if_due
from shared.runs import ACCEPTED, CANCELLED, FAILED, MERGING, RUNNING, TERMINAL, Record, fails_run

log = logging.getLogger(__name__)

STUCK_INTAKE = timedelta(minutes=60)  # longer than an intake with all its tries (5 x the 10-minute timeout)
ORPHAN_MARKER = timedelta(minutes=10)
STALL_CHECK = timedelta(minutes=5)  # how often a run without progress gets its job looked at
FINALIZE_RETRY_AFTER = timedelta(minutes=15)
MAX_FINALIZE_REQUESTS = 3


@dataclass(frozen=True)
class Decision:
    """What the counts mean for a running run (pure, so it is tested without services)."""

    done: bool
    failed_fast: bool


def decide(counts: dict, on_task_failure: str) -> Decision:
    total = counts["total"]
    finished = counts["succeeded"] + counts["failed"]
    if fails_run(on_task_failure, counts["failed"]):
        return Decision(done=True, failed_fast=finished < total)
    return Decision(done=total > 0 and finished >= total, failed_fast=False)


def watch(ctx: Context) -> dict[str, str]:
    """One monitor tick over every active run. Returns run id -> what happened (for logs and tests)."""
    outcome: dict[str, str] = {}
    for run_id in ctx.runs.active_run_ids():
        try:
            outcome[run_id] = watch_run(ctx, run_id)
        except RunNotFound:
            # the index entry is written just before the record: forget it only when it is old
            since = ctx.runs.marked_since(run_id)
            if since is None or ctx.clock() - since > ORPHAN_MARKER:
                ctx.runs.forget_active(run_id)
                outcome[run_id] = "forgotten"
            else:
                outcome[run_id] = "not created yet"
        except Exception as e:  # one bad run must not stop the tick for the others
            log.warning("monitor could not check run_id=%s error=%s: %s", run_id, type(e).__name__,  # noqa
                        scrub(str(e).splitlines()[0] if str(e) else ""))
            outcome[run_id] = f"error: {type(e).__name__}"
    try:
        sweep_if_due(ctx)
    except (BatchdropError, HttpResponseError) as e:  # the sweep is a safety net; the next one retries
        log.warning("orphan sweep failed error=%s", type(e).__name__)
    return outcome


def watch_run(ctx: Context, run_id: str) -> str:
    record = ctx.runs.read(run_id)
    state = record.data["state"]
    if state in TERMINAL:
        # whoever ended the run cleaned up, unless it crashed in between: make sure (idempotent)
        clean_up(ctx, run_id)
        ctx.runs.forget_active(run_id)
        return "forgotten"
    if state == ACCEPTED:
        return _watch_accepted(ctx, record)
    if state == RUNNING:
        return _watch_running(ctx, record)
    return _watch_merging(ctx, record)


def _age(ctx: Context, stamp: str) -> timedelta:
    return ctx.clock() - datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _watch_accepted(ctx: Context, record: Record) -> str:
    """Intake is still going, or died for good (its retries exhausted): then fail and clean up."""
    if _age(ctx, record.data["updated_at"]) < STUCK_INTAKE:
        return "intake in progress"
    _give_up(ctx, record, "intake did not finish (the intake function kept failing); drop the job file again")
    return "failed: intake stuck"


def _watch_running(ctx: Context, record: Record) -> str:
    run_id = record.data["run_id"]
    counts = batch.task_counts(ctx.batch, run_id)
    if counts is None:
        _give_up(ctx, record, "the Batch job was deleted before the run finished", state=CANCELLED)
        return "cancelled"
    total = record.data["tasks"]["total"]
    tasks = {"total": total, "active": counts.active, "running": counts.running,
             "succeeded": counts.succeeded, "failed": counts.failed}
    decision = decide(tasks, record.data.get("on_task_failure", "fail"))
    if decision.done and not decision.failed_fast:
        # counts may lag the tasks: confirm with one filtered list before finalising
        unfinished = batch.list_tasks(ctx.batch, run_id, filter="state ne 'completed'", select=["id"])
        if unfinished:
            decision = Decision(done=False, failed_fast=False)
    changes: dict = {"tasks": tasks}
    if not decision.done and tasks == record.data["tasks"]:
        stalled = _check_stalled(ctx, record)
        if stalled is None:
            return "no change"
        changes.update(stalled)
        decision = Decision(done="state" in stalled, failed_fast=False)
    if decision.done:
        changes.update(state=MERGING, finalize_requested_at=ctx.runs.now(), finalize_requests=1)
    try:
        ctx.runs.update(record, changes)
    except Conflict:
        return "lost race"  # another monitor (or finalize) moved it first; it does the rest
    if decision.done:
        storage.queue_send(ctx.finalize_queue, run_id)
        log.info("finalize requested run_id=%s", run_id)
        return "finalize requested"
    return "updated"


def _check_stalled(ctx: Context, record: Record) -> dict | None:
    """A run whose counts have not moved for a while: has its job ended without its tasks (its
    time limit expired, someone terminated it, its pool never got nodes)? Looked at once per
    STALL_CHECK, so a quiet tick stays at one Batch call. Returns status changes, or None."""
    last = record.data.get("job_checked_at") or record.data["updated_at"]
    if _age(ctx, last) < STALL_CHECK:
        return None
    job = batch.get_job(ctx.batch, record.data["run_id"])
    changes: dict = {"job_checked_at": ctx.runs.now()}
    if job is not None and job.state in ("completed", "terminating"):
        reason = getattr(job.execution_info, "termination_reason", None) if job.execution_info else None
        error = getattr(job.execution_info, "scheduling_error", None) if job.execution_info else None
        why = f"the Batch job ended ({reason or job.state}) before all its tasks ran"
        if error is not None:
            why += f": {scrub(str(getattr(error, 'message', '') or getattr(error, 'code', '')))}"
        changes.update(state=MERGING, job_ended=why)  # finalize reports the tasks that never ran
    return changes


def _watch_merging(ctx: Context, record: Record) -> str:
    """Wait for the user's merge task; and a finalize that crashed for good (poisoned message)
    is asked for again, a few times."""
    if record.data.get("merge_task") == "running":
        task = batch.get_task(ctx.batch, record.data["run_id"], batch.MERGE_TASK_ID)
        if task is not None and task.state != "completed":
            return "merge task running"
        try:
            ctx.runs.update(record, {"merge_task": "done", "finalize_requested_at": ctx.runs.now()})
        except Conflict:
            return "lost race"
        storage.queue_send(ctx.finalize_queue, record.data["run_id"])
        return "finalize requested"
    requested = record.data.get("finalize_requested_at") or record.data["updated_at"]
    if _age(ctx, requested) < FINALIZE_RETRY_AFTER:
        return "merging"
    attempts = record.data.get("finalize_requests", 1)
    if attempts >= MAX_FINALIZE_REQUESTS:
        _give_up(ctx, record, f"finalize failed {attempts} times; see the function logs")
        return "failed: finalize stuck"
    try:
        ctx.runs.update(record, {"finalize_requested_at": ctx.runs.now(), "finalize_requests": attempts + 1})
    except Conflict:
        return "lost race"
    storage.queue_send(ctx.finalize_queue, record.data["run_id"])
    return "finalize re-requested"


def _give_up(ctx: Context, record: Record, message: str, state: str = FAILED) -> None:
    """End the run unless intake or finalize moved it since it was read (they carry on then)."""
    end_run(ctx, record.data["run_id"], state, message, only_from=frozenset({record.data["state"]}), record=record)
