"""The orphan sweep: Batch jobs and work containers that no active run owns, older than a limit.

Every normal path cleans up after itself; this catches what a crash between steps could leave
behind (pools bill while they exist). It runs from the monitor at most once an hour.
"""
from __future__ import annotations

import logging
from datetime import timedelta

from azure.core.exceptions import HttpResponseError

from shared import batch, naming, storage
from shared.errors import BatchdropError
from shared.naming import WORK_METADATA, is_work_container
from shared.context import Context
from shared.runs import ACTIVE, iso

log = logging.getLogger(__name__)
SWEEP_EVERY = timedelta(hours=1)
MARKER = "sweep/last.json"


def sweep_if_due(ctx: Context) -> list[str] | None:
    """Sweep when the last sweep is older than SWEEP_EVERY. Returns what was deleted, or None."""
    control = storage.JsonBlobs(ctx.blobs, ctx.settings.control_container)
    last = control.read(MARKER)
    now = ctx.clock()
    if last is not None:
        from datetime import datetime

        if now - datetime.fromisoformat(last.data["at"].replace("Z", "+00:00")) < SWEEP_EVERY:
            return None
    deleted = sweep(ctx)
    control.put(MARKER, {"at": iso(now)})  # after: a sweep that failed is tried again next tick
    return deleted


def sweep(ctx: Context) -> list[str]:
    """Idempotent: deletes jobs and work containers of runs that are finished or unknown, once
    they are older than ORPHAN_MAX_AGE_HOURS. Never touches an active run."""
    limit = ctx.clock() - timedelta(hours=ctx.settings.orphan_max_age_hours)
    deleted: list[str] = []

    def owned_by_active_run(run_id: str) -> bool:
        record = ctx.runs.try_read(run_id)
        return record is not None and record.data["state"] in ACTIVE

    me = naming.owner_tag(ctx.blobs.url, ctx.settings.results_container)
    for job in ctx.batch.list_jobs(select=["id", "creationTime", "metadata"]):
        meta = {m.name: m.value for m in (job.metadata or [])}
        run_id = meta.get("batchdrop-run")
        # only jobs this deployment made: another one sharing the Batch account keeps its own
        if not run_id or meta.get("batchdrop-owner") != me or job.creation_time is None or job.creation_time > limit:
            continue
        try:
            if not owned_by_active_run(run_id) and batch.delete_job(ctx.batch, job.id):
                deleted.append(f"job {job.id}")
        except BatchdropError as e:  # one stubborn item must not stop the sweep
            log.warning("sweep could not delete job %s: %s", job.id, e)
    prefix = ctx.settings.work_prefix + "-"
    for container in ctx.blobs.list_containers(name_starts_with=prefix, include_metadata=True):
        run_id = (container.metadata or {}).get(WORK_METADATA)
        # a user's container that merely shares the prefix is never touched: the name and the
        # metadata written at creation must both say it is a run's work container
        if not is_work_container(ctx.settings.work_prefix, container.name, run_id):
            continue
        if container.last_modified > limit or owned_by_active_run(run_id or ""):
            continue
        try:
            if storage.delete_container(ctx.blobs, container.name):
                deleted.append(f"container {container.name}")
        except HttpResponseError as e:
            log.warning("sweep could not delete container %s: %s", container.name, type(e).__name__)
    if deleted:
        log.warning("orphan sweep deleted %d item(s): %s", len(deleted), ", ".join(deleted))
    return deleted
