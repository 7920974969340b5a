"""Quota-aware admission (issue 12): runs Batch cannot take now wait in line instead of failing.

A run waits (state `queued`) when Batch refuses its job or its auto pool for quota, when
MAX_ACTIVE_RUNS runs are admitted already, or when others are waiting before it (a new arrival
never overtakes the line). Its place is its arrival (the record's created_at), kept in the
control container (`queued/<run>`), whatever happens to it meanwhile.

The monitor admits runs from the head of the line as capacity frees: up to MAX_ACTIVE_RUNS minus
the admitted runs; and while Batch's quota is the limit (which only Batch knows), one try of the
head at a time: admitted (queued -> accepted), its intake asked for again, and should Batch refuse
it again it goes back to its place. A run queued longer than MAX_QUEUED_HOURS fails.
"""
from __future__ import annotations

import logging
from datetime import timedelta

from shared import naming, storage
from shared.context import Context
from shared.errors import Conflict
from shared.runs import ACCEPTED, ADMITTED, QUEUED, RunRecord

log = logging.getLogger(__name__)

BEHIND = "waiting behind runs queued before it"


def cap_reason(cap: int) -> str:
    return f"{cap} runs are admitted already (setting MAX_ACTIVE_RUNS)"


def room_unknown(reason: str | None) -> bool:
    """Whether only Batch can tell if this run fits: refused for quota, or waiting behind a line that
    was not there for MAX_ACTIVE_RUNS (most likely for quota). Such runs are tried one at a time, or
    two admitted together could reach Batch in either order and the later one take the room."""
    return bool(reason) and "MAX_ACTIVE_RUNS" not in (reason or "")


def admitted_count(ctx: Context, but: str | None = None) -> int:
    """Runs admitted now (accepted, running, merging), `but` one."""
    count = 0
    for run_id in ctx.runs.active_run_ids():
        if run_id == but:
            continue
        run = ctx.runs.try_read(run_id)
        if run is not None and run.state in ADMITTED:
            count += 1
    return count


def must_wait(ctx: Context, run_id: str) -> str | None:
    """Why an accepted run must wait in line before anything is submitted; None: it may go on.

    A run the monitor admitted from the line is in it still (until it runs); a new arrival waits
    behind any run in line. Runs count as admitted from their record's creation, before this check,
    so two intakes at once both see each other (at worst both wait, never both go over the cap)."""
    line = ctx.runs.queued_run_ids()
    cap = ctx.settings.max_active_runs
    if cap is not None and admitted_count(ctx, but=run_id) >= cap:
        return cap_reason(cap)  # also behind a line: the cap is what admits it, and its room is known
    if run_id not in line and line:
        return BEHIND
    return None


def admit(ctx: Context) -> dict[str, str]:
    """One monitor pass over the line: expire, number, and admit from the head. Returns run id ->
    what happened."""
    outcome: dict[str, str] = {}
    line: list[RunRecord] = []
    admitted_from_line = False
    limit = timedelta(hours=ctx.settings.max_queued_hours)
    for run_id in ctx.runs.queued_run_ids():
        run = ctx.runs.try_read(run_id)
        if run is None or run.state not in (QUEUED, ACCEPTED):
            if run is not None and run.state not in (QUEUED, ACCEPTED):
                ctx.runs.forget_queued(run_id)  # running or over: out of the line
            continue
        if run.state == ACCEPTED:
            admitted_from_line = True  # admitted, its intake at work
            continue
        if run.created_at is not None and ctx.clock() - run.created_at > limit:
            hours = ctx.settings.max_queued_hours
            if ctx.runs.give_up(run, f"queued for more than {hours:g} hours (setting MAX_QUEUED_HOURS), waiting "
                                     f"for admission: {run.queued_reason}"):
                outcome[run_id] = "failed: queued too long"
            continue
        line.append(run)
    quota_limited = any(room_unknown(r.queued_reason) for r in line)
    cap = ctx.settings.max_active_runs
    room = None if cap is None else cap - admitted_count(ctx)
    if quota_limited:
        # one try of the head at a time: Batch says whether there is room
        room = 0 if admitted_from_line else (1 if room is None else min(room, 1))
    waiting: list[RunRecord] = []
    for run in line:
        if room is not None and room <= 0:
            waiting.append(run)
            continue
        if _admit(ctx, run):
            outcome[run.run_id] = "admitted"
            if room is not None:
                room -= 1
        else:
            waiting.append(run)
    for position, run in enumerate(waiting, start=1):
        outcome.setdefault(run.run_id, f"queued #{position}")
        if run.queue_position != position:
            try:
                ctx.runs.commit(run, run.in_line_at(position))
            except Conflict:
                pass  # changed meanwhile (cancelled): the next tick numbers it
    return outcome


def _admit(ctx: Context, run: RunRecord) -> bool:
    after = run.admitted()
    source = run.source
    if after is None or source is None:
        return False
    try:
        ctx.runs.commit(run, after)
    except Conflict:
        return False
    storage.queue_send(ctx.intake_queue,
                       naming.intake_message(naming.IntakeRequest(source.container, source.blob_name, source.etag)))
    log.info("admitted run_id=%s reason_was=%s", run.run_id, run.queued_reason)
    return True
