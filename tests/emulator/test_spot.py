"""Spot nodes in the emulator: a preempted low-priority node, spot capacity that never comes, and the
formula functions spot fallback needs (time(), strings, $PreemptedNodeCount)."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from azure.batch import models as m
from azure.core.exceptions import ResourceNotFoundError

from shared.batch import SpotFallback, autoscale_formula

from .conftest import control, uid, wait_for, wait_task


@pytest.fixture
def spot(emu):
    """Spot capacity control; capacity and the recovery time are given back whatever the test did (the
    emulator is shared by the session)."""
    def set_capacity(available: bool, recovery: float | None = None) -> dict:
        body: dict = {"available": available}
        if recovery is not None:
            body["recoverySeconds"] = recovery
        status, answer = control(emu, "/_emulator/spot-capacity", body)
        assert status == 200, answer
        return answer
    yield set_capacity
    set_capacity(True, 10)


@pytest.fixture
def new_pool(client):
    made: list[str] = []

    def create(**kw) -> str:
        pid = uid("spot")
        client.create_pool(m.BatchPoolCreateOptions(id=pid, vm_size="standard_d2s_v3", **kw))
        made.append(pid)
        return pid
    yield create
    for pid in made:
        try:
            client.begin_delete_pool(pid, polling_interval=1).result()
        except ResourceNotFoundError:
            pass


def node_states(client, pool_id) -> list[tuple[bool, str]]:
    return sorted((n.is_dedicated, n.state) for n in client.list_nodes(pool_id))


def counts_of(client, pool_id):
    return next(c for c in client.list_pool_node_counts() if c.pool_id == pool_id)


def test_a_preempted_spot_node_loses_its_tries_and_comes_back(client, emu, spot, new_pool):
    spot(True, recovery=1.5)
    pid = new_pool(target_low_priority_nodes=1, task_slots_per_node=2)
    jid = uid("spotjob")
    client.create_job(m.BatchJobCreateOptions(id=jid, pool_info=m.BatchPoolInfo(pool_id=pid)))
    try:
        for tid in ("a", "b"):
            control(emu, f"/_emulator/jobs/{jid}/tasks/{tid}/slow", {"seconds": 30})
            client.create_task(jid, m.BatchTaskCreateOptions(id=tid, command_line="/bin/sh -c 'echo done'"))
        for tid in ("a", "b"):
            wait_task(client, jid, tid, state="running")
        status, body = control(emu, f"/_emulator/jobs/{jid}/tasks/a/preempt")
        assert status == 200 and body == {"preempted": True, "nodePreempted": True}
        # the whole node went: both tries are requeued, the node is preempted and takes no task
        assert node_states(client, pid) == [(False, "preempted")]
        c = counts_of(client, pid)
        assert c.low_priority.preempted == 1 and c.low_priority.total == 1 and c.low_priority.running == 0
        pool = client.get_pool(pid)
        assert pool.current_low_priority_nodes == 1  # as on the service: preempted nodes still count
        for tid in ("a", "b"):
            t = client.get_task(jid, tid)
            assert t.state == "active" and t.execution_info.requeue_count == 1 and t.execution_info.retry_count == 0
        # back after the recovery time: both run again and finish (the slow faults were used up)
        for tid in ("a", "b"):
            t = wait_task(client, jid, tid, timeout=20)
            assert t.execution_info.result == "success" and t.execution_info.requeue_count == 1
        assert node_states(client, pid) == [(False, "idle")]
    finally:
        client.begin_delete_job(jid, polling_interval=1).result()


def test_preempting_a_try_on_a_dedicated_node_leaves_the_node(client, emu, new_pool):
    pid = new_pool(target_dedicated_nodes=1)
    jid = uid("dedjob")
    client.create_job(m.BatchJobCreateOptions(id=jid, pool_info=m.BatchPoolInfo(pool_id=pid)))
    try:
        control(emu, f"/_emulator/jobs/{jid}/tasks/a/slow", {"seconds": 30})
        client.create_task(jid, m.BatchTaskCreateOptions(id="a", command_line="true"))
        # started, not only dispatched: a try is "running" from its slot's booking, but takes its faults
        # (this slow one) when it starts; preempted before that, the requeued try was the slow one (30 s)
        wait_for(lambda: (t := client.get_task(jid, "a")).state == "running" and t.execution_info
                 and t.execution_info.start_time, 20, what="task a started")
        status, body = control(emu, f"/_emulator/jobs/{jid}/tasks/a/preempt")
        assert status == 200 and body["nodePreempted"] is False
        assert wait_task(client, jid, "a").execution_info.requeue_count == 1
        assert node_states(client, pid) == [(True, "idle")]
    finally:
        client.begin_delete_job(jid, polling_interval=1).result()


def test_withheld_spot_capacity_never_arrives_until_given_back(client, emu, spot, new_pool):
    assert spot(False)["available"] is False
    pid = new_pool(target_dedicated_nodes=1, target_low_priority_nodes=2)
    pool = client.get_pool(pid)
    assert (pool.current_dedicated_nodes, pool.current_low_priority_nodes) == (1, 0)
    assert pool.target_low_priority_nodes == 2 and pool.allocation_state == "resizing"
    assert node_states(client, pid) == [(True, "idle")]
    status, body = control(emu, "/_emulator/spot-capacity", method="GET")
    assert status == 200 and body["available"] is False
    spot(True)
    pool = client.get_pool(pid)
    assert pool.current_low_priority_nodes == 2 and pool.allocation_state == "steady"


def test_spot_capacity_control_refuses_bad_bodies(emu):
    for body in ({}, {"available": "no"}, {"available": True, "recoverySeconds": -1},
                 {"available": True, "recoverySeconds": True}):
        status, answer = control(emu, "/_emulator/spot-capacity", body)
        assert status == 400 and answer["code"] == "InvalidPropertyValue", (body, answer)
    assert control(emu, "/_emulator/spot-capacity", method="GET")[1]["available"] is True


def test_an_autoscale_pool_asking_for_spot_only_gets_no_stand_in_node_while_spot_is_withheld(client, spot, new_pool):
    """The emulator's one node for an autoscale pool at zero nodes with pending tasks would hide that spot
    capacity never came; it is not given to a pool whose formula asks for spot nodes only."""
    spot(False)
    pid = new_pool(enable_auto_scale=True, auto_scale_formula="$TargetLowPriorityNodes = 1; $TargetDedicatedNodes = 0;")
    jid = uid("spotonly")
    client.create_job(m.BatchJobCreateOptions(id=jid, pool_info=m.BatchPoolInfo(pool_id=pid)))
    try:
        client.create_task(jid, m.BatchTaskCreateOptions(id="a", command_line="true"))
        wait_for(lambda: client.get_pool(pid).auto_scale_run is not None, 10, what="an autoscale run")
        assert client.get_task(jid, "a").state == "active" and list(client.list_nodes(pid)) == []
        spot(True)
        assert wait_task(client, jid, "a", timeout=20).execution_info.result == "success"
    finally:
        client.begin_delete_job(jid, polling_interval=1).result()


def test_the_fallback_formula_evaluates_on_the_emulator(client, emu, new_pool):
    """batchdrop's spot fallback formula (shared.batch) parses and evaluates here, with time() and
    $PreemptedNodeCount: a fresh pool with 3 pending tasks asks for 3 spot nodes; one older than the wait,
    short of them, for 3 dedicated ones."""
    young = autoscale_formula(3, 1, True, 3, SpotFallback(datetime.now(UTC), timedelta(minutes=10), 1))
    old = autoscale_formula(3, 1, True, 3, SpotFallback(datetime.now(UTC) - timedelta(hours=1),
                                                        timedelta(minutes=10), 1))
    pid = new_pool(enable_auto_scale=True, auto_scale_formula="$TargetDedicatedNodes = 0;")
    jid = uid("pending")
    client.create_job(m.BatchJobCreateOptions(id=jid, pool_info=m.BatchPoolInfo(pool_id=pid)))
    try:
        for tid in ("a", "b", "c"):
            control(emu, f"/_emulator/jobs/{jid}/tasks/{tid}/slow", {"seconds": 30})
            client.create_task(jid, m.BatchTaskCreateOptions(id=tid, command_line="true"))
        evaluate_fallback(client, pid, young, old)
    finally:
        client.begin_delete_job(jid, polling_interval=1).result()


def evaluate_fallback(client, pid, young, old):
    run = client.evaluate_pool_auto_scale(pid, m.BatchPoolEvaluateAutoScaleOptions(auto_scale_formula=young))
    assert run.error is None, run.error
    results = dict(kv.split("=", 1) for kv in run.results.split(";"))
    assert results["$TargetLowPriorityNodes"] == "3" and results["$TargetDedicatedNodes"] == "0"
    assert results["$preemptedNow"] == "0" and results["$waited"] == "0"
    run = client.evaluate_pool_auto_scale(pid, m.BatchPoolEvaluateAutoScaleOptions(auto_scale_formula=old))
    results = dict(kv.split("=", 1) for kv in run.results.split(";"))
    assert results["$TargetLowPriorityNodes"] == "0" and results["$TargetDedicatedNodes"] == "3"
    assert results["$waited"] == "1"
