"""Step 2 (timer): keep each active run's status.json current and hand finished runs to finalize.

Per run and tick: one task-counts call, plus one filtered list only when the counts say the run
is done (counts may lag) or a task failed (to tell infrastructure failures, which are retried,
from the task's own; shared.retries). The running -> merging change is a conditional write, so
when two monitors overlap exactly one of them enqueues the finalize message.

The monitor also re-drives stalled steps: an intake or finalize that nobody holds a claim on
(shared.claims: a dead claimant is known within a minute) is asked for again through its queue,
so a killed host delays a run by a minute or two, not by a queue's ten-minute lease.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared import admission, batch, claims, naming, report, retries, storage, submit, threads
from shared.context import Context
from shared.errors import Conflict, RunNotFound
from shared.runs import (
    ACCEPTED,
    CANCELLED,
    MERGING,
    QUEUED,
    RUNNING,
    TERMINAL,
    ActiveMarker,
    JobFileVersion,
    RunRecord,
    TaskCounts,
    fails_run,
)
from shared.storage import scrub
from shared.sweep import sweep_if_due

log = logging.getLogger(__name__)

ORPHAN_MARKER = timedelta(minutes=10)
STALL_CHECK = timedelta(minutes=5)  # how often a run without progress gets its job looked at
# a step nobody claims this long after it was asked for (or last re-driven) is asked for again:
# longer than a claim's lease, so a live claimant always shows
REDRIVE_AFTER = timedelta(seconds=claims.LEASE_SECONDS + 15)
# each further re-drive of a step waits twice as long (up to 8x): a request that is only waiting in
# a queue's backlog is not asked for again every 75 s, which would crowd the backlog further
MAX_REDRIVE_DOUBLINGS = 3
MAX_INTAKE_REDRIVES = 5  # then the intake is given up on: it keeps dying
MAX_FINALIZE_ATTEMPTS = 6  # finalizes that claimed the run and did not finish it
TICK_BUDGET = timedelta(seconds=20)  # below MONITOR_SCHEDULE's 30 s in Azure
TICK_PARALLELISM = 8  # runs looked at at once: Batch and Storage calls wait on the network, not the CPU
TAIL_RUNS = 8  # runs a tick watches in their tail (below), one task-counts call each per look
TAIL_LOOKS = 20  # looks per run over MONITOR_TAIL_SECONDS (at most one every TAIL_MIN_POLL)
TAIL_MIN_POLL = 0.1


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


def in_turn(run_ids: list[str], cursor: str | None) -> list[str]:
    """The run ids in name order, starting after `cursor` (where the last tick ran out of time)."""
    ordered = sorted(run_ids)
    if cursor is None:
        return ordered
    after = [r for r in ordered if r > cursor]
    return after + [r for r in ordered if r <= cursor]


def in_tail(active: int, running: int) -> bool:
    """A run in its last wave (every task submitted): no more tasks waiting than running, so it ends
    within about two task lengths."""
    return running > 0 and active <= running


class Tails:
    """The runs a tick found in their tail (`in_tail`), with how many tasks each had running then.
    Thread-safe (the tick's threads note them)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._widths: dict[str, int] = {}

    def note(self, run_id: str, running: int) -> None:
        with self._lock:
            self._widths[run_id] = running

    def widths(self) -> dict[str, int]:
        with self._lock:
            return dict(self._widths)


class NodeCounts:
    """The account's pools' allocated nodes, read at most once per tick (one call for every run)
    and only when a running run asks; None when they could not be read (sampling is informational)."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._counts: dict[str, tuple[int, int]] | None = None
        self._failed = False
        self._lock = threading.Lock()  # the tick's threads share one read

    def of(self, pool_id: str) -> tuple[int, int] | None:
        with self._lock:
            return self._of(pool_id)

    def _of(self, pool_id: str) -> tuple[int, int] | None:
        if self._counts is None and not self._failed:
            try:
                self._counts = batch.pool_node_counts(self._ctx.batch)
            except Exception as e:
                self._failed = True
                log.warning("pool node counts not read error=%s", type(e).__name__)
        return None if self._counts is None else self._counts.get(pool_id, (0, 0))


def watch(ctx: Context, budget: timedelta = TICK_BUDGET, parallel: int = TICK_PARALLELISM) -> dict[str, str]:
    """One monitor tick over the active runs, `parallel` at a time, for at most `budget` (below the
    schedule's interval, so ticks never pile up). Runs it had no time for come first next tick (the
    tick starts after the last run it covered), so no run starves however many there are. Returns
    run id -> what happened (for logs and tests)."""
    began = time.monotonic()
    nodes, tails = NodeCounts(ctx), Tails()
    cursor = ctx.runs.tick_cursor()
    run_ids = in_turn(ctx.runs.active_run_ids(), cursor)
    deadline = time.monotonic() + budget.total_seconds()
    covered = _covered(run_ids, lambda run_id: _tick(ctx, run_id, nodes, tails), parallel, deadline)
    outcome = dict(zip(run_ids, covered))  # the first len(covered) runs, in turn
    left = len(run_ids) - len(outcome)
    if left:
        log.warning("monitor tick out of time runs=%d left=%d", len(run_ids), left)
    stopped_after = run_ids[len(outcome) - 1] if left and outcome else None
    if stopped_after != cursor:
        ctx.runs.set_tick_cursor(stopped_after)
    looked = time.monotonic()
    try:
        outcome.update(admission.admit(ctx))  # after the runs were looked at: ended runs free their room
    except Exception as e:  # the next tick tries again
        log.warning("admission failed error=%s", type(e).__name__)
    admitted = time.monotonic()
    try:
        sweep_if_due(ctx)
    except Exception as e:  # the sweep is a safety net: whatever stopped it, the next one retries
        log.warning("orphan sweep failed error=%s", type(e).__name__)
    linger = min(ctx.settings.monitor_tail_seconds, began + budget.total_seconds() - time.monotonic())
    widths = dict(list(tails.widths().items())[:TAIL_RUNS])
    if linger > 0 and widths:
        outcome.update(_watch_tails(ctx, widths, nodes, linger))
    ended = time.monotonic()
    if ended - began > budget.total_seconds():  # the budget bounds when a run is started, not the rest
        log.warning("monitor tick over its budget seconds=%.1f runs_s=%.1f admission_s=%.1f sweep_s=%.1f",
                    ended - began, looked - began, admitted - looked, ended - admitted)
    return outcome


def _covered(run_ids: list[str], look: Callable[[str], str], parallel: int, deadline: float) -> list[str]:
    """`look` at the runs in turn, `parallel` at once, a new one as soon as one is done (a slow run
    holds one thread, not a whole batch of them), none started after `deadline` but the first
    `parallel`: every tick moves the line on. The outcomes of the runs started, in turn."""
    futures: list[Future[str]] = []
    running: set[Future[str]] = set()
    executor = threads.pool("monitor", parallel)
    try:
        for run_id in run_ids:
            if len(futures) >= parallel and time.monotonic() >= deadline:
                break
            if len(running) >= parallel:
                _, running = wait(running, return_when=FIRST_COMPLETED)
            futures.append(executor.submit(look, run_id))
            running.add(futures[-1])
        return [f.result() for f in futures]
    except BaseException:
        threads.settle(futures, cancel=True)
        raise


def _watch_tails(ctx: Context, widths: dict[str, int], nodes: NodeCounts, seconds: float) -> dict[str, str]:
    """Runs in their tail end soon: for up to `seconds`, look at their task counts (one call a run) and
    tick a run again as soon as all its tasks are done, so finalize is asked for then rather than at
    the next tick (up to MONITOR_SCHEDULE later). A run stays watched while no more of its tasks wait
    than it had running at once (`widths`: so also in the moment between one task's end and the next
    one's start), and after a tick that found its counts ahead of its tasks; it is left to the next
    tick once more wait (retries), or when it is gone. The outcomes of the runs ticked again."""
    until = time.monotonic() + seconds
    pause = max(TAIL_MIN_POLL, seconds / TAIL_LOOKS)
    watched, outcome = dict(widths), {}
    while watched and time.monotonic() + pause <= until:
        time.sleep(pause)
        for run_id, width in list(watched.items()):
            if time.monotonic() >= until:  # a slow call must not carry the tick past its end
                break
            try:
                counts = batch.task_counts(ctx.batch, run_id)
            except Exception as e:  # the next tick looks again
                log.warning("tail not watched run_id=%s error=%s", run_id, type(e).__name__)
                counts = None
            if counts is None:
                del watched[run_id]
            elif counts.active or counts.running:
                watched[run_id] = max(width, counts.running)
                if counts.active > watched[run_id]:
                    del watched[run_id]
            else:
                outcome[run_id] = _tick(ctx, run_id, nodes)
                if outcome[run_id] not in ("updated", "no change"):  # else its counts ran ahead: look again
                    del watched[run_id]
    return outcome


def _tick(ctx: Context, run_id: str, nodes: NodeCounts, tails: Tails | None = None) -> str:
    try:
        return watch_run(ctx, run_id, nodes, tails)
    except RunNotFound:
        return _watch_marker(ctx, run_id)
    except Exception as e:  # one bad run must not stop the tick for the others
        log.warning("monitor could not check run_id=%s error=%s: %s", run_id, type(e).__name__,
                    scrub(str(e).splitlines()[0] if str(e) else ""))
        return f"error: {type(e).__name__}"


def _watch_marker(ctx: Context, run_id: str) -> str:
    """An index entry without a record: an intake at work before it creates the record, or one
    that died there (re-driven from the job file the entry names), or a leftover (forgotten)."""
    marker = ctx.runs.marker(run_id)
    if marker is None:
        ctx.runs.forget_active(run_id)
        return "forgotten"
    if marker.source is None or marker.redrives >= MAX_INTAKE_REDRIVES:
        if _age(ctx, marker.since) > ORPHAN_MARKER:
            ctx.runs.forget_active(run_id)
            log.warning("intake never created the run run_id=%s redrives=%d", run_id, marker.redrives)
            return "forgotten"
        return "not created yet"
    if _age(ctx, marker.since) < redrive_after(marker.redrives) or ctx.claims.held(run_id, claims.INTAKE):
        return "not created yet"
    _redrive_intake(ctx, run_id, marker.source, marker)
    return "intake re-requested"


def _redrive_intake(ctx: Context, run_id: str, source: JobFileVersion, marker: ActiveMarker | None) -> None:
    if marker is not None:
        ctx.runs.mark_active(run_id, source, redrives=marker.redrives + 1)
    request = naming.IntakeRequest(source.container, source.blob_name, source.etag)
    storage.queue_send(ctx.intake_queue, naming.intake_message(request))
    log.warning("intake re-requested run_id=%s job_file=%s", run_id, source.path)


def watch_run(ctx: Context, run_id: str, nodes: NodeCounts | None = None, tails: Tails | None = None) -> str:
    run = ctx.runs.read(run_id)
    if run.state in TERMINAL:
        ctx.claims.forget(run_id)  # first: should it fail, the index entry stays and the next tick retries
        ctx.runs.retire(run)
        return "forgotten"
    if run.state == QUEUED:
        return "queued"  # admitted (or expired) by shared.admission, in arrival order
    if run.state == ACCEPTED:
        return _watch_accepted(ctx, run)
    if run.state == RUNNING:
        return _watch_running(ctx, run, nodes or NodeCounts(ctx), tails)
    return _watch_merging(ctx, run)


def redrive_after(redrives: int) -> timedelta:
    """How long a step must go unclaimed before it is asked for again, after `redrives` re-drives."""
    return REDRIVE_AFTER * 2 ** min(redrives, MAX_REDRIVE_DOUBLINGS)


def _age(ctx: Context, since: datetime | None) -> timedelta:
    """How long ago `since` was; a time never written counts as long ago."""
    return timedelta.max if since is None else ctx.clock() - since


def _watch_accepted(ctx: Context, run: RunRecord) -> str:
    """Intake is at work (it holds its claim), or was asked for lately (every commit, a re-drive's
    too, stamps updated_at); else it died and is re-driven, up to MAX_INTAKE_REDRIVES times (then
    the run fails and is cleaned up)."""
    quiet, redrives = _age(ctx, run.updated_at), run.redrives.get("intake", 0)
    if quiet < redrive_after(redrives) or ctx.claims.held(run.run_id, claims.INTAKE):
        return "intake in progress"
    source = run.source
    if source is None or redrives >= MAX_INTAKE_REDRIVES:
        ctx.runs.give_up(run, f"intake did not finish (it was started {redrives + 1} times and never got the job "
                              f"submitted; see the function logs); drop the job file again")
        return "failed: intake stuck"
    why = f"no intake was at work on the run for {int(quiet.total_seconds())} s"
    try:
        ctx.runs.commit(run, run.redriven("intake", ctx.clock(), why))
    except Conflict:
        return "lost race"
    _redrive_intake(ctx, run.run_id, source, None)
    return "intake re-requested"


def _watch_running(ctx: Context, run: RunRecord, nodes: NodeCounts, tails: Tails | None = None) -> str:
    if run.submitting and _age(ctx, run.last_submitted_at) >= redrive_after(run.redrives.get("submit", 0)) \
            and not ctx.claims.held(run.run_id, claims.INTAKE):
        return _redrive_submission(ctx, run)
    counts = batch.task_counts(ctx.batch, run.run_id)
    if counts is None:
        ctx.runs.give_up(run, "the Batch job was deleted before the run finished", state=CANCELLED)
        return "cancelled"
    # Batch's counts hold the reruns of lost outputs too, and the tasks they replaced (succeeded)
    tasks = TaskCounts(total=run.tasks.total, active=counts.active, running=counts.running,
                       succeeded=counts.succeeded - run.superseded + len(run.reused),  # a rerun's reused tasks
                       failed=counts.failed - len(run.retry_waiting),
                       waiting_retry=len(run.retry_waiting))
    updated, reactivate = _sample_nodes(ctx, run, nodes), tuple[str, ...]()
    if tasks.failed != run.tasks.failed or any(due <= ctx.clock() for due in run.retry_waiting.values()):
        updated, tasks, reactivate = _plan_retries(ctx, updated, counts.failed, tasks)
    decision = decide(tasks, run.on_task_failure)
    if decision.done and not decision.failed_fast and run.submitting:
        decision = Decision(done=False, failed_fast=False)  # the tasks in so far are done; more are coming
    if decision.done and not decision.failed_fast and not batch.all_tasks_completed(ctx.batch, run.run_id):
        decision = Decision(done=False, failed_fast=False)  # the counts ran ahead of the tasks
    updated = updated.progressed(tasks)
    if tails is not None and not decision.done and not run.submitting and in_tail(counts.active, counts.running):
        tails.note(run.run_id, counts.running)  # (one whose job ends below is ticked again for nothing)
    if not decision.done and updated == run.progressed(run.tasks) and not reactivate:
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
    # after the commit: a retry is counted before it happens, so no race can spend more than the budget
    for task_id in reactivate:
        if not batch.reactivate_task(ctx.batch, run.run_id, task_id):
            log.warning("infrastructure retry refused run_id=%s task_id=%s", run.run_id, task_id)
    if reactivate:
        log.info("infrastructure retries run_id=%s tasks=%d", run.run_id, len(reactivate))
    if decision.done:
        _request_finalize(ctx, run.run_id)
        log.info("finalize requested run_id=%s", run.run_id)
        return "finalize requested"
    return "updated"


def _redrive_submission(ctx: Context, run: RunRecord) -> str:
    """A submission in chunks whose continuation nobody is at work on (its message is in a dead
    host's lease, or its invocation died holding the claim): ask for it again from the cursor."""
    redrives = run.redrives.get("submit", 0)
    if redrives >= MAX_INTAKE_REDRIVES:
        ctx.runs.give_up(run, f"the submission stopped at {run.submitted:,} of {run.tasks.total:,} tasks and did not "
                              f"go on although it was asked for {redrives} more times; see the function logs")
        return "failed: submission stuck"
    quiet = int(_age(ctx, run.last_submitted_at).total_seconds())
    try:
        ctx.runs.commit(run, run.redriven("submit", ctx.clock(), f"no submission was at work on the run for {quiet} s"))
    except Conflict:
        return "lost race"
    submit.request_continuation(ctx, run.run_id, run.submitted or 0)
    log.warning("submission re-requested run_id=%s submitted=%s", run.run_id, run.submitted)
    return "submission re-requested"


def _plan_retries(ctx: Context, run: RunRecord, failed_now: int,
                  tasks: TaskCounts) -> tuple[RunRecord, TaskCounts, tuple[str, ...]]:
    """List the failed tasks (only when their number changed or a retry is due) and plan which
    wait for an infrastructure retry, which run again now, and which failed for good."""
    outcomes = ((t["id"], report.outcome_of(t)) for t in batch.failed_tasks(ctx.batch, run.run_id))
    failed = [retries.FailedTask(task_id, o.failure, o.exit_code) for task_id, o in outcomes]
    plan = retries.plan(failed, run.infra_retries, run.retry_waiting, ctx.clock(), ctx.settings.infra_retries)
    now_active = len(plan.reactivate)
    counted = TaskCounts(total=tasks.total, active=tasks.active + now_active, running=tasks.running,
                         succeeded=tasks.succeeded, failed=max(0, failed_now - now_active - len(plan.waiting)),
                         waiting_retry=len(plan.waiting))
    return run.retries_planned(plan.used, plan.waiting), counted, plan.reactivate


def _sample_nodes(ctx: Context, run: RunRecord, nodes: NodeCounts) -> RunRecord:
    """The run's auto pool's allocated nodes, for node time and cost in the report (a pool the job
    file named is shared with other work: its nodes are not this run's)."""
    if run.pool != "auto":
        return run
    pool_id = run.pool_id or batch.job_pool_id(ctx.batch, run.run_id)
    counts = nodes.of(pool_id) if pool_id else None
    return run if pool_id is None or counts is None else run.nodes_seen(ctx.clock(), pool_id, *counts)


def _watch_merging(ctx: Context, run: RunRecord) -> str:
    """Wait for the user's merge task; and re-drive a finalize that nobody is at work on (its
    message is in the queue's lease of a dead host, or it died holding the claim)."""
    if run.merge_task == "running":
        task = batch.get_task(ctx.batch, run.run_id, batch.MERGE_TASK_ID)
        if task is not None and task.state != "completed":
            return "merge task running"
        return _commit_and_request(ctx, run, run.merge_task_done(ctx.clock()), "finalize requested")
    quiet = _age(ctx, run.finalize_requested_at or run.updated_at)
    if quiet < redrive_after(run.redrives.get("finalize", 0)) or ctx.claims.held(run.run_id, claims.FINALIZE):
        return "merging"
    if run.finalize_attempts >= MAX_FINALIZE_ATTEMPTS:
        ctx.runs.give_up(run, f"finalize was started {run.finalize_attempts} times and never finished; see the "
                              f"function logs")
        return "failed: finalize stuck"
    why = f"no finalize was at work on the run {int(quiet.total_seconds())} s after it was asked for"
    return _commit_and_request(ctx, run, run.redriven("finalize", ctx.clock(), why), "finalize re-requested")


def _commit_and_request(ctx: Context, run: RunRecord, updated: RunRecord, done: str) -> str:
    try:
        ctx.runs.commit(run, updated)
    except Conflict:
        return "lost race"
    _request_finalize(ctx, run.run_id)
    return done


def _request_finalize(ctx: Context, run_id: str) -> None:
    storage.queue_send(ctx.finalize_queue, naming.finalize_message(run_id))
