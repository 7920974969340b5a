"""Listing a run's tasks as plain JSON (shared.batch.task_pages): every page of a run of more than
1,000 tasks, filters, and the same outcome as from the SDK's own task model."""
from __future__ import annotations

from azure.batch import models as bm

from shared import batch as batch_module
from shared.report import outcome_of
from tests.pipeline.helpers import wait_for


def test_task_pages_follow_every_page_and_leave_out_the_merge_task(batch):
    batch.create_pool(bm.BatchPoolCreateOptions(id="listing-idle", vm_size="standard_d2s_v3", target_dedicated_nodes=0))
    batch.create_job(bm.BatchJobCreateOptions(id="listing", pool_info=bm.BatchPoolInfo(pool_id="listing-idle")))
    ids = [f"t{i:06d}" for i in range(2_150)]
    batch.create_tasks("listing", [bm.BatchTaskCreateOptions(id=i, command_line="true")
                                   for i in [*ids, batch_module.MERGE_TASK_ID]])

    listed = [t["id"] for t in batch_module.finished_tasks(batch, "listing")]

    assert listed == ids  # three pages of at most 1,000, in the service's order, the merge task left out
    assert not batch_module.failed_tasks(batch, "listing")  # the filter reaches the service
    assert [t["state"] for t in batch_module.task_pages(batch, "listing", ("id", "state"),
                                                        filter="id eq 't002149'")] == ["active"]


def test_an_outcome_read_from_json_equals_the_one_read_from_the_sdk_model(batch):
    batch.create_pool(bm.BatchPoolCreateOptions(id="listing-run", vm_size="standard_d2s_v3", target_dedicated_nodes=1))
    batch.create_job(bm.BatchJobCreateOptions(id="outcomes", pool_info=bm.BatchPoolInfo(pool_id="listing-run")))
    batch.create_tasks("outcomes", [bm.BatchTaskCreateOptions(id="t000000", command_line="true"),
                                    bm.BatchTaskCreateOptions(id="t000001", command_line="/bin/sh -c 'exit 3'")])
    wait_for(lambda: all(t.state == "completed" for t in batch.list_tasks("outcomes")), timeout=60,
             what="both tasks completed")

    from_json = {t["id"]: outcome_of(t) for t in batch_module.finished_tasks(batch, "outcomes")}
    from_sdk = {t.id: outcome_of(t) for t in batch.list_tasks("outcomes")}

    assert from_json == from_sdk
    assert from_json["t000000"].succeeded and from_json["t000000"].node_id and from_json["t000000"].start_time
    assert (from_json["t000001"].succeeded, from_json["t000001"].exit_code) == (False, 3)
    assert from_json["t000001"].failure["code"] == "FailureExitCode"
    assert [t["id"] for t in batch_module.failed_tasks(batch, "outcomes")] == ["t000001"]
