"""Deleting what a run created: its Batch job (and with it the auto pool) and its work containers."""
from __future__ import annotations

import logging

from shared import batch, naming, storage
from shared.context import Context
from shared.errors import Conflict
from shared.storage import Record

log = logging.getLogger(__name__)


def work_containers(ctx: Context, run_id: str) -> tuple[str, str]:
    """(input container, output container) of a run (see naming.work_containers)."""
    return naming.work_containers(ctx.settings.work_prefix, run_id)


def clean_up(ctx: Context, run_id: str, *, keep_outputs: bool = False) -> None:
    """Idempotent: deletes the job (its auto pool goes with it) and the work containers.

    An existing pool named in the job file is the user's and is never deleted.
    """
    batch.delete_job(ctx.batch, run_id)
    inputs, outputs = work_containers(ctx, run_id)
    storage.delete_container(ctx.blobs, inputs)
    if not keep_outputs:
        storage.delete_container(ctx.blobs, outputs)
    log.info("cleaned up run_id=%s", run_id)


def end_run(ctx: Context, run_id: str, state: str, message: str, *, only_from: frozenset[str],
            record: Record | None = None, event: dict | None = None) -> bool:
    """Move a run to a final state, then say why (error.json) and clean up; publish the event.

    The state change comes first and is conditional: it happens only while the run is in one of
    `only_from` (and, given `record`, only if status.json has not changed since it was read), so a
    run somebody else moved on meanwhile is left alone. Returns whether this call ended the run.
    A crash after the state change is covered: the monitor cleans up every finished run it indexes.
    """
    changes = {"state": state, "error": message}
    if record is not None:
        if record.data["state"] not in only_from:
            return False
        try:
            ctx.runs.update(record, changes)
        except Conflict:
            return False
    elif ctx.runs.update_retrying(run_id, lambda d: changes if d["state"] in only_from else None) is None:
        return False
    ctx.runs.write_error(run_id, {"run_id": run_id, "state": state, "message": message})
    clean_up(ctx, run_id)
    ctx.events.publish(state, run_id, event if event is not None else {"error": message})
    log.warning("run ended run_id=%s state=%s reason=%s", run_id, state, message)
    return True
