"""The orphan sweep deletes what no active run owns once it is old enough, and nothing else."""
from __future__ import annotations

import uuid
from datetime import timedelta

from azure.batch import models as bm

from shared import storage
from shared.accept import accept
from shared.naming import WORK_METADATA, owner_tag, work_containers
from shared.runs import utc_now
from shared.sweep import sweep, sweep_if_due
from tests.pipeline.helpers import build_context, drop, jobs_left, wait_for


def test_sweep_removes_old_orphans_and_keeps_active_runs(env, batch):
    ctx = build_context(env)
    active = drop(ctx, "active.json", {"command": "sleep 30", "input": {"items": [1]}})
    accept(ctx, active.container, active.name)
    orphan_id = f"orphan-{uuid.uuid4().hex[:8]}"
    foreign_id = f"foreign-{uuid.uuid4().hex[:8]}"
    for job_id, job_owner in ((orphan_id, owner_tag(ctx.blobs.url, ctx.settings.results_container)), (foreign_id, "http://another/deployment")):
        batch.create_job(bm.BatchJobCreateOptions(
            id=job_id, pool_info=bm.BatchPoolInfo(pool_id="nonexistent-pool"),
            metadata=[bm.BatchMetadataItem(name="batchdrop-run", value=job_id),
                      bm.BatchMetadataItem(name="batchdrop-owner", value=job_owner)]))
    orphan_in, _ = work_containers(ctx.settings.work_prefix, orphan_id)
    storage.ensure_container(ctx.blobs, orphan_in, metadata={WORK_METADATA: orphan_id})

    assert sweep(ctx) == []  # nothing is old yet
    later = build_context(env, clock=lambda: utc_now() + timedelta(hours=49))
    deleted = sweep(later)
    assert f"job {orphan_id}" in deleted
    assert f"container {orphan_in}" in deleted
    assert not any(active.run_id in d or foreign_id in d for d in deleted)  # active, or not ours
    wait_for(lambda: not jobs_left(batch, orphan_id), what="orphan job deleted")
    assert jobs_left(batch, active.run_id) == [active.run_id]
    batch.begin_delete_job(active.run_id).result()
    batch.begin_delete_job(foreign_id).result()


def test_sweep_runs_at_most_once_an_hour(env):
    ctx = build_context(env)
    assert sweep_if_due(ctx) is not None
    assert sweep_if_due(ctx) is None
    later = build_context(env, clock=lambda: utc_now() + timedelta(hours=2))
    assert sweep_if_due(later) is not None
