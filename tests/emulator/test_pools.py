"""Pools: CRUD, exists, list filters, resize, autoscale."""
from __future__ import annotations

import pytest
from azure.batch import models as m
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError

from .conftest import uid


def pool_exists(client, pool_id) -> bool:
    """azure-batch 15.1.0 raises ResourceNotFoundError for the 404 of HEAD /pools/{id} (its exception policy runs
    before pool_exists maps 404 to False) - the same happens against the real service."""
    try:
        return client.pool_exists(pool_id)
    except ResourceNotFoundError:
        return False


def test_pool_crud_and_exists(client):
    pid = uid("pool")
    assert pool_exists(client, pid) is False
    client.create_pool(m.BatchPoolCreateOptions(
        id=pid, vm_size="standard_d2s_v3", target_dedicated_nodes=2, target_low_priority_nodes=1,
        task_slots_per_node=3, metadata=[m.BatchMetadataItem(name="team", value="pipeline")],
        virtual_machine_configuration=m.VirtualMachineConfiguration(
            image_reference=m.BatchVmImageReference(publisher="canonical", offer="ubuntu", sku="22_04-lts"),
            node_agent_sku_id="batch.node.ubuntu 22.04")))
    assert pool_exists(client, pid) is True
    pool = client.get_pool(pid)
    assert pool.state == "active" and pool.allocation_state == "steady"
    assert pool.target_dedicated_nodes == 2 and pool.current_dedicated_nodes == 2
    assert pool.target_low_priority_nodes == 1 and pool.current_low_priority_nodes == 1
    assert pool.task_slots_per_node == 3
    assert pool.metadata[0].value == "pipeline"
    assert pool.virtual_machine_configuration.node_agent_sku_id == "batch.node.ubuntu 22.04"

    with pytest.raises(ResourceExistsError) as exc:
        client.create_pool(m.BatchPoolCreateOptions(id=pid.upper(), vm_size="standard_d2s_v3"))
    assert exc.value.error.code == "PoolExists"

    client.update_pool(pid, m.BatchPoolUpdateOptions(metadata=[m.BatchMetadataItem(name="a", value="b")]))
    assert client.get_pool(pid).metadata[0].name == "a"
    client.replace_pool_properties(pid, m.BatchPoolReplaceOptions(metadata=[]))
    assert not client.get_pool(pid).metadata

    selected = client.get_pool(pid, select=["id", "state"])
    assert selected.id == pid and selected.vm_size is None

    client.begin_delete_pool(pid, polling_interval=1).result()
    assert pool_exists(client, pid) is False
    with pytest.raises(ResourceNotFoundError) as exc:
        client.get_pool(pid)
    assert exc.value.error.code == "PoolNotFound"


def test_list_pools_filter_and_select(client):
    a, b = uid("lpa"), uid("lpb")
    for pid in (a, b):
        client.create_pool(m.BatchPoolCreateOptions(id=pid, vm_size="standard_d2s_v3"))
    try:
        got = list(client.list_pools(filter=f"id eq '{a}'", select=["id", "state"]))
        assert [p.id for p in got] == [a]
        assert got[0].vm_size is None and got[0].state == "active"
        ids = {p.id for p in client.list_pools(filter="state eq 'active'")}
        assert {a, b} <= ids
    finally:
        for pid in (a, b):
            client.begin_delete_pool(pid, polling_interval=1).result()


def test_resize_pool(client, pool_id):
    client.begin_resize_pool(pool_id, m.BatchPoolResizeOptions(target_dedicated_nodes=3, target_low_priority_nodes=2),
                             polling_interval=1).result()
    pool = client.get_pool(pool_id)
    assert (pool.target_dedicated_nodes, pool.target_low_priority_nodes) == (3, 2)
    assert pool.allocation_state == "steady"
    assert (pool.current_dedicated_nodes, pool.current_low_priority_nodes) == (3, 2)


def test_autoscale_enable_evaluate_disable(client):
    pid = uid("aspool")
    formula = "$TargetDedicatedNodes = 2; $TargetLowPriorityNodes = max(0, 3 - 1);"
    client.create_pool(m.BatchPoolCreateOptions(id=pid, vm_size="standard_d2s_v3", enable_auto_scale=True,
                                                auto_scale_formula=formula))
    try:
        pool = client.get_pool(pid)
        assert pool.enable_auto_scale is True and pool.auto_scale_formula == formula
        assert pool.target_dedicated_nodes == 2 and pool.target_low_priority_nodes == 2
        assert "$TargetDedicatedNodes=2" in pool.auto_scale_run.results

        run = client.evaluate_pool_auto_scale(pid, m.BatchPoolEvaluateAutoScaleOptions(
            auto_scale_formula="pending = $PendingTasks.GetSample(1); $TargetDedicatedNodes = min(5, max(1, pending));"))
        assert "$TargetDedicatedNodes=1" in run.results
        assert "$NodeDeallocationOption=requeue" in run.results
        assert run.error is None

        with pytest.raises(HttpResponseError) as exc:
            client.evaluate_pool_auto_scale(pid, m.BatchPoolEvaluateAutoScaleOptions(auto_scale_formula="$Target = = ;"))
        assert exc.value.status_code == 400 and exc.value.error.code == "AutoScalingFormulaSyntaxError"

        with pytest.raises(HttpResponseError) as exc:
            client.begin_resize_pool(pid, m.BatchPoolResizeOptions(target_dedicated_nodes=1)).result()
        assert exc.value.status_code == 409

        client.enable_pool_auto_scale(pid, m.BatchPoolEnableAutoScaleOptions(
            auto_scale_formula="$TargetDedicatedNodes = 4;"))
        assert client.get_pool(pid).target_dedicated_nodes == 4

        client.disable_pool_auto_scale(pid)
        pool = client.get_pool(pid)
        assert pool.enable_auto_scale is False
        client.begin_resize_pool(pid, m.BatchPoolResizeOptions(target_dedicated_nodes=1), polling_interval=1).result()
        assert client.get_pool(pid).target_dedicated_nodes == 1
    finally:
        client.begin_delete_pool(pid, polling_interval=1).result()


def test_autoscale_pool_runs_pending_tasks(client):
    """An autoscale pool whose formula follows $PendingTasks runs the tasks."""
    pid, jid = uid("aspool"), uid("asjob")
    client.create_pool(m.BatchPoolCreateOptions(
        id=pid, vm_size="standard_d2s_v3", enable_auto_scale=True,
        auto_scale_formula="$TargetDedicatedNodes = min(2, $PendingTasks.GetSample(1));"))
    try:
        assert client.get_pool(pid).target_dedicated_nodes == 0
        client.create_job(m.BatchJobCreateOptions(id=jid, pool_info=m.BatchPoolInfo(pool_id=pid)))
        client.create_task(jid, m.BatchTaskCreateOptions(id="t1", command_line="true"))
        from .conftest import wait_task
        assert wait_task(client, jid, "t1").execution_info.result == "success"
        client.begin_delete_job(jid, polling_interval=1).result()
    finally:
        client.begin_delete_pool(pid, polling_interval=1).result()


def test_pool_validation(client):
    with pytest.raises(HttpResponseError) as exc:
        client.create_pool(m.BatchPoolCreateOptions(id=uid("p"), vm_size=None))
    assert exc.value.status_code == 400 and exc.value.error.code == "MissingRequiredProperty"
    with pytest.raises(HttpResponseError) as exc:
        client.create_pool(m.BatchPoolCreateOptions(id="bad id!", vm_size="x"))
    assert exc.value.status_code == 400 and exc.value.error.code == "InvalidPropertyValue"
