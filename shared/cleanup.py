"""Deleting what a run created: its Batch job (and with it the auto pool) and its work containers."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from azure.batch import BatchClient
from azure.storage.blob import BlobServiceClient

from shared import batch, naming, storage

if TYPE_CHECKING:
    from shared.context import Context

log = logging.getLogger(__name__)


def remove_run(batch_client: BatchClient, blobs: BlobServiceClient, work_prefix: str, run_id: str, *,
               keep_outputs: bool = False) -> None:
    """Idempotent: deletes the job (its auto pool goes with it) and the work containers.
    BatchError / StorageError when a service refuses.

    An existing pool named in the job file is the user's and is never deleted.
    """
    batch.delete_job(batch_client, run_id)
    inputs, outputs = naming.work_containers(work_prefix, run_id)
    storage.remove_container(blobs, inputs)
    if not keep_outputs:
        storage.remove_container(blobs, outputs)
    log.info("cleaned up run_id=%s", run_id)


def clean_up(ctx: Context, run_id: str, *, keep_outputs: bool = False) -> None:
    """`remove_run` with the context's clients."""
    remove_run(ctx.batch, ctx.blobs, ctx.settings.work_prefix, run_id, keep_outputs=keep_outputs)


def work_containers(ctx: Context, run_id: str) -> tuple[str, str]:
    """(input container, output container) of a run (see naming.work_containers)."""
    return naming.work_containers(ctx.settings.work_prefix, run_id)
