"""The orphan sweep: Batch jobs and work containers that no active run owns, older than a limit.

Every normal path cleans up after itself; this catches what a crash between steps could leave
behind (pools bill while they exist). It runs from the monitor at most once an hour.
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta

from shared import batch, naming, storage
from shared.context import Context
from shared.errors import BatchdropError
from shared.runs import ACTIVE

log = logging.getLogger(__name__)
SWEEP_EVERY = timedelta(hours=1)


def sweep_if_due(ctx: Context) -> list[str] | None:
    """Sweep when the last sweep is older than SWEEP_EVERY. Returns what was deleted, or None."""
    now = ctx.clock()
    last = ctx.runs.last_sweep()
    if last is not None and now - last < SWEEP_EVERY:
        return None
    deleted = sweep(ctx)
    ctx.runs.mark_swept(now)  # after: a sweep that failed is tried again next tick
    return deleted


def sweep(ctx: Context) -> list[str]:
    """Idempotent: deletes jobs and work containers of runs that are finished or unknown, once
    they are older than ORPHAN_MAX_AGE_HOURS; the task outputs an ended run keeps for a rerun (and
    its kept job file) once their time (status.json outputs_kept_until) is up. Never touches an
    active run."""
    limit = ctx.clock() - timedelta(hours=ctx.settings.orphan_max_age_hours)
    deleted = _sweep_jobs(ctx, limit) + _sweep_containers(ctx, limit)
    if deleted:
        log.warning("orphan sweep deleted %d item(s): %s", len(deleted), ", ".join(deleted))
    return deleted


def _owned_by_active_run(ctx: Context, run_id: str) -> bool:
    run = ctx.runs.try_read(run_id)
    return run is not None and run.state in ACTIVE


def _sweep_jobs(ctx: Context, limit: datetime) -> list[str]:
    me = naming.owner_tag(storage.account_url(ctx.blobs), ctx.settings.results_container)
    deleted = []
    for job in batch.list_tagged_jobs(ctx.batch):
        # only jobs this deployment made: another one sharing the Batch account keeps its own
        if not job.run_id or job.owner != me or job.created is None or job.created > limit:
            continue
        try:
            if not _owned_by_active_run(ctx, job.run_id) and batch.delete_job(ctx.batch, job.job_id):
                deleted.append(f"job {job.job_id}")
        except BatchdropError as e:  # one stubborn item must not stop the sweep
            log.warning("sweep could not delete job %s: %s", job.job_id, e)
    return deleted


def _sweep_containers(ctx: Context, limit: datetime) -> list[str]:
    prefix = ctx.settings.work_prefix
    deleted = []
    for container in storage.list_containers(ctx.blobs, prefix + "-"):
        run_id = container.metadata.get(naming.WORK_METADATA)
        # a user's container that merely shares the prefix is never touched: the name and the
        # metadata written at creation must both say it is a run's work container
        if not naming.is_work_container(prefix, container.name, run_id):
            continue
        run = ctx.runs.try_read(run_id or "")
        if run is not None and run.state in ACTIVE:
            continue
        kept = run is not None and run.outputs_kept_until is not None \
            and container.name == naming.work_containers(prefix, run.run_id)[1]
        if kept:
            if run is not None and run.outputs_kept(ctx.clock()):
                continue  # task outputs kept for a rerun until then, however old the container
        elif container.last_modified > limit:
            continue
        try:
            if storage.remove_container(ctx.blobs, container.name):
                deleted.append(f"container {container.name}")
            if kept:
                ctx.runs.forget_job_file(run_id or "")  # kept as long as the outputs, for a rerun
        except BatchdropError as e:
            log.warning("sweep could not delete container %s: %s", container.name, e)
    return deleted
