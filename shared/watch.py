"""Step 2 (timer): keep each active run's status.json current and hand finished runs to finalize.

Per run and tick: one task-counts call, plus one filtered list only when the counts say the run
is done (counts may lag). The running -> merging change is a conditional write, so when two
monitors overlap exactly one of them enqueues the finalize message.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared import batch, naming, storage
from shared.context import Context
from shared.errors import Conflict, RunNotFound
from shared.runs import ACCEPTED, CANCELLED, MERGING, RUNNING, TERMINAL, RunRecord, TaskCounts, fails_run
from shared.storage import scrub
from shared.sweep import sweep_if_due

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


def decide(counts: TaskCounts, on_task_failure: str) -> Decision:
    finished = counts.succeeded + counts.failed
    if fails_run(on_task_failure, counts.failed):
        return Decision(done=True, failed_fast=finished < counts.total)
    return Decision(done=counts.total > 0 and finished >= counts.total, failed_fast=False)


def watch(ctx: Context) -> dict[str, str]:
    """One monitor tick over every active run. Returns run id -> what happened (for logs and tests)."""
    outcome = {run_id: _tick(ctx, run_id) for run_id in ctx.runs.active_run_ids()}
    try:
        sweep_if_due(ctx)
    except Exception as e:  # the sweep is a safety net: whatever stopped it, the next one retries
        log.warning("orphan sweep failed error=%s", type(e).__name__)
    return outcome


def _tick(ctx: Context, run_id: str) -> str:
    try:
        return watch_run(ctx, run_id)
    except RunNotFound:
        # the index entry is written just before the record: forget it only when it is old
        since = ctx.runs.marked_since(run_id)
        if since is None or ctx.clock() - since > ORPHAN_MARKER:
            ctx.runs.forget_active(run_id)
            return "forgotten"
        return "not created yet"
    except Exception as e:  # one bad run must not stop the tick for the others
        log.warning("monitor could not check run_id=%s error=%s: %s", run_id, type(e).__name__,
                    scrub(str(e).splitlines()[0] if str(e) else ""))
        return f"error: {type(e).__name__}"


def watch_run(ctx: Context, run_id: str) -> str:
    run = ctx.runs.read(run_id)
    if run.state in TERMINAL:
        ctx.runs.retire(run_id)
        return "forgotten"
    if run.state == ACCEPTED:
        return _watch_accepted(ctx, run)
    if run.state == RUNNING:
        return _watch_running(ctx, run)
    return _watch_merging(ctx, run)


def _age(ctx: Context, since: datetime | None) -> timedelta:
    """How long ago `since` was; a time never written counts as long ago."""
    return timedelta.max if since is None else ctx.clock() - since


def _watch_accepted(ctx: Context, run: RunRecord) -> str:
    """Intake is still going, or died for good (its retries exhausted): then fail and clean up."""
    if _age(ctx, run.updated_at) < STUCK_INTAKE:
        return "intake in progress"
    ctx.runs.give_up(run, "intake did not finish (the intake function kept failing); drop the job file again")
    return "failed: intake stuck"


def _watch_running(ctx: Context, run: RunRecord) -> str:
    counts = batch.task_counts(ctx.batch, run.run_id)
    if counts is None:
        ctx.runs.give_up(run, "the Batch job was deleted before the run finished", state=CANCELLED)
        return "cancelled"
    tasks = TaskCounts(total=run.tasks.total, active=counts.active, running=counts.running,
                       succeeded=counts.succeeded, failed=counts.failed)
    decision = decide(tasks, run.on_task_failure)
    if decision.done and not decision.failed_fast and not batch.all_tasks_completed(ctx.batch, run.run_id):
        decision = Decision(done=False, failed_fast=False)  # the counts ran ahead of the tasks
    updated = run.progressed(tasks)
    if not decision.done and tasks == run.tasks:
        # no progress: once per STALL_CHECK, has the job ended without its tasks (its time limit
        # expired, someone terminated it, its pool never got nodes)? So a quiet tick stays at one call.
        if _age(ctx, run.job_checked_at or run.updated_at) < STALL_CHECK:
            return "no change"
        updated = updated.job_looked_at(ctx.clock(), batch.job_end_reason(ctx.batch, run.run_id))
        decision = Decision(done=updated.state == MERGING, failed_fast=False)
    if decision.done:
        updated = updated.finalize_requested(ctx.clock())
    try:
        ctx.runs.commit(run, updated)
    except Conflict:
        return "lost race"  # another monitor (or finalize) moved it first; it does the rest
    if decision.done:
        _request_finalize(ctx, run.run_id)
        log.info("finalize requested run_id=%s", run.run_id)
        return "finalize requested"
    return "updated"


def _watch_merging(ctx: Context, run: RunRecord) -> str:
    """Wait for the user's merge task; and a finalize that crashed for good (poisoned message)
    is asked for again, a few times."""
    if run.merge_task == "running":
        task = batch.get_task(ctx.batch, run.run_id, batch.MERGE_TASK_ID)
        if task is not None and task.state != "completed":
            return "merge task running"
        return _commit_and_request(ctx, run, run.merge_task_done(ctx.clock()), "finalize requested")
    if _age(ctx, run.finalize_requested_at or run.updated_at) < FINALIZE_RETRY_AFTER:
        return "merging"
    if run.finalize_requests >= MAX_FINALIZE_REQUESTS:
        ctx.runs.give_up(run, f"finalize failed {run.finalize_requests} times; see the function logs")
        return "failed: finalize stuck"
    return _commit_and_request(ctx, run, run.finalize_rerequested(ctx.clock()), "finalize re-requested")


def _commit_and_request(ctx: Context, run: RunRecord, updated: RunRecord, done: str) -> str:
    try:
        ctx.runs.commit(run, updated)
    except Conflict:
        return "lost race"
    _request_finalize(ctx, run.run_id)
    return done


def _request_finalize(ctx: Context, run_id: str) -> None:
    storage.queue_send(ctx.finalize_queue, naming.finalize_message(run_id))
