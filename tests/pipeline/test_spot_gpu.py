"""Spot pools with fallback and GPU pools (issue 13), on real runs: Azurite, the emulator, the real SDKs.

The emulator's spot capacity is emulator-wide (the session shares one emulator): every test here gives
it back, whatever happened."""
from __future__ import annotations

import json
import time
import urllib.request

import pytest

from shared.accept import accept
from shared.watch import watch
from tests.pipeline.helpers import COPY, build_context, drop, results_blob, run_to_end, wait_for
from tests.pipeline.test_reliability import inject


def control(emulator, path: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(f"{emulator.url}{path}", data=None if body is None else json.dumps(body).encode(),
                                     method="GET" if body is None else "POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture
def spot_capacity(batch_emulator):
    def set_capacity(available: bool, recovery: float = 10) -> None:
        control(batch_emulator, "/_emulator/spot-capacity", {"available": available, "recoverySeconds": recovery})
    yield set_capacity
    set_capacity(True)


def report_of(ctx, run_id) -> dict:
    return json.loads(results_blob(ctx, f"{run_id}/report.json"))


def dedicated(node_id: str | None) -> bool:
    """The emulator's node ids end in _d (dedicated) or _p (low-priority)."""
    return bool(node_id) and node_id.endswith("_d")


def test_a_spot_run_whose_nodes_are_preempted_twice_completes_on_fallback_nodes(env, batch, batch_emulator,
                                                                                spot_capacity):
    # the preempted nodes stay preempted for the whole test, so the two preemptions are seen together
    spot_capacity(True, recovery=120)
    ctx = build_context({**env, "SPOT_PREEMPTION_THRESHOLD": "2", "SPOT_WAIT_MINUTES": "60"})
    d = drop(ctx, "spot.json", {"command": COPY, "input": {"items": [1, 2]},
                                "pool": {"spot": True, "max_nodes": 2}})
    for task in ("t000000", "t000001"):
        inject(batch_emulator, d.run_id, task, "slow", {"seconds": 30})
    accept(ctx, d.container, d.name)
    running = wait_for(lambda: [t for t in batch.list_tasks(d.run_id) if t.state == "running"]
                       if len([t for t in batch.list_tasks(d.run_id) if t.state == "running"]) == 2 else None,
                       what="both tasks running")
    assert {t.node_info.node_id[-2:] for t in running} == {"_p"}  # on two spot nodes
    assert len({t.node_info.node_id for t in running}) == 2
    for _ in range(3):  # the monitor samples the pool's nodes while they are spot nodes
        watch(ctx)
        time.sleep(0.3)
    inject(batch_emulator, d.run_id, "t000000", "preempt")
    inject(batch_emulator, d.run_id, "t000001", "preempt")

    final = run_to_end(ctx, d.run_id, deadline_s=60)
    assert final["state"] == "succeeded", final
    report = report_of(ctx, d.run_id)
    entries = {e["task_id"]: e for e in report["entries"]}
    for e in entries.values():
        assert e["requeues"] >= 1 and e["retries"] == 0, e  # preemptions never use up retries
        assert dedicated(e["node_id"]), e  # the tries that succeeded ran on the fallback (dedicated) nodes
    usage = report["usage"]
    assert usage["node_s_spot"] > 0 and usage["node_s_dedicated"] > 0, usage


def test_spot_capacity_that_never_comes_is_replaced_by_dedicated_nodes_after_the_wait(env, batch, spot_capacity):
    spot_capacity(False)
    ctx = build_context({**env, "SPOT_WAIT_MINUTES": "0.05"})  # 3 seconds
    d = drop(ctx, "nospot.json", {"command": COPY, "input": {"items": [1, 2]}, "pool": {"spot": True}})
    accept(ctx, d.container, d.name)
    pool_id = wait_for(lambda: batch.get_job(d.run_id).execution_info.pool_id, what="the auto pool")
    pool = batch.get_pool(pool_id)
    assert pool.target_low_priority_nodes == 2 and pool.current_low_priority_nodes == 0
    assert pool.target_dedicated_nodes == 0 and pool.allocation_state == "resizing"
    assert "$TargetLowPriorityNodes" in pool.auto_scale_formula and "time(" in pool.auto_scale_formula
    assert all(t.state == "active" for t in batch.list_tasks(d.run_id))  # nothing runs without nodes

    final = run_to_end(ctx, d.run_id, deadline_s=60)
    assert final["state"] == "succeeded", final
    report = report_of(ctx, d.run_id)
    assert all(dedicated(e["node_id"]) for e in report["entries"]), report["entries"]
    usage = report["usage"]
    assert usage["node_s_spot"] == 0 and usage["node_s_dedicated"] > 0, usage
    assert usage["queue_s"] >= 2.5, usage  # the tasks waited for the spot nodes first


def test_without_fallback_a_spot_pool_waits_for_spot_nodes(env, batch, spot_capacity):
    spot_capacity(False)
    ctx = build_context({**env, "SPOT_WAIT_MINUTES": "0.02"})
    d = drop(ctx, "strictspot.json", {"command": COPY, "input": {"items": [1]},
                                      "pool": {"spot": True, "spot_fallback": False}})
    accept(ctx, d.container, d.name)
    pool_id = wait_for(lambda: batch.get_job(d.run_id).execution_info.pool_id, what="the auto pool")
    time.sleep(3)  # well past the wait that a pool with fallback would have given up after
    pool = batch.get_pool(pool_id)
    assert (pool.target_dedicated_nodes, pool.current_dedicated_nodes, pool.current_low_priority_nodes) == (0, 0, 0)
    assert "time(" not in pool.auto_scale_formula
    assert batch.get_task(d.run_id, "t000000").state == "active"
    spot_capacity(True)
    final = run_to_end(ctx, d.run_id, deadline_s=60)
    assert final["state"] == "succeeded", final
    assert not dedicated(report_of(ctx, d.run_id)["entries"][0]["node_id"])


def test_a_gpu_size_gets_the_gpu_image_gpu_access_and_task_gpus(ctx, batch, batch_emulator):
    if control(batch_emulator, "/_emulator/health")["containerMode"] == "docker":
        pytest.skip("needs the emulator's host container mode (no GPU and no image pulls here)")
    d = drop(ctx, "gpu.json", {"command": 'echo "{\\"gpus\\": $TASK_GPUS}" > "$OUTPUT_PATH"',
                               "image": "example.azurecr.io/cuda-app:1", "input": {"items": [1, 2]},
                               "pool": {"vm_size": "Standard_NC12s_v3"}})
    accept(ctx, d.container, d.name)
    job = batch.get_job(d.run_id)
    vm = job.pool_info.auto_pool_specification.pool.virtual_machine_configuration
    assert job.pool_info.auto_pool_specification.pool.vm_size == "Standard_NC12s_v3"
    assert (vm.image_reference.publisher, vm.image_reference.offer) == ("microsoft-dsvm", "ubuntu-hpc")
    env = {e.name: e.value for e in job.common_environment_settings}
    assert env["TASK_GPUS"] == "2"
    # what the emulator would have run the container with, as it recorded it on the task
    task = batch.get_task(d.run_id, "t000000")
    assert task.container_settings.container_run_options == "--rm --gpus all"
    final = run_to_end(ctx, d.run_id)
    assert final["state"] == "succeeded", final
    output = results_blob(ctx, f"{d.run_id}/output.jsonl").decode().splitlines()
    assert [json.loads(line) for line in output] == [{"gpus": 2}, {"gpus": 2}]


def test_a_cpu_size_has_no_gpu_options_and_task_gpus_zero(ctx, batch):
    d = drop(ctx, "cpu.json", {"command": COPY, "image": "example.azurecr.io/app:1", "input": {"items": [1]}})
    accept(ctx, d.container, d.name)
    job = batch.get_job(d.run_id)
    assert {e.name: e.value for e in job.common_environment_settings}["TASK_GPUS"] == "0"
    assert batch.get_task(d.run_id, "t000000").container_settings.container_run_options == "--rm"
    assert run_to_end(ctx, d.run_id)["state"] == "succeeded"
