"""Deleting what a run created: its Batch job (and with it the auto pool) and its work containers."""
from __future__ import annotations

import logging

from shared import batch, storage
from shared.context import Context

log = logging.getLogger(__name__)


def work_containers(ctx: Context, run_id: str) -> tuple[str, str]:
    """(input container, output container) of a run: separate, so task SAS can be read-only / write-only."""
    prefix = ctx.settings.work_prefix
    return f"{prefix}-{run_id}-in", f"{prefix}-{run_id}-out"


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
