"""Account quotas (active jobs, pools, dedicated and spot cores), answered as the Batch service answers them.

A dedicated emulator holds the quota settings, so the session emulator stays unlimited; each test sets the
quotas it needs with PUT /_emulator/quotas (which resets the others to unlimited) and the emulator is
emptied after each test.
"""
from __future__ import annotations

import pytest
from azure.batch import models as m
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from batchemu import vmsizes
from batchemu.process import EmulatorProcess

from .conftest import control, make_client, uid, wait_for

JOB_QUOTA_MESSAGE = "Active job and schedule quota for the account has been reached."
POOL_QUOTA_MESSAGE = "Pool quota for the account has been reached."


@pytest.fixture(scope="module")
def qemu():
    with EmulatorProcess(max_concurrency=2, container_mode="host") as emu:
        yield emu


@pytest.fixture(scope="module")
def qclient(qemu):
    return make_client(qemu)


@pytest.fixture(autouse=True)
def empty_emulator(qemu, qclient):
    """Every test starts without jobs or pools, whatever the one before left."""
    yield
    control(qemu, "/_emulator/quotas", {}, method="PUT")
    for j in qclient.list_jobs():
        try:
            qclient.begin_delete_job(j.id, polling_interval=1).result()
        except ResourceNotFoundError:
            pass
    for p in qclient.list_pools():
        try:
            qclient.begin_delete_pool(p.id, polling_interval=1).result()
        except ResourceNotFoundError:
            pass
    wait_for(lambda: not list(qclient.list_pools()) and not list(qclient.list_jobs()), 10, what="emulator empty")


def set_quotas(emu, **quotas):
    status, body = control(emu, "/_emulator/quotas", quotas, method="PUT")
    assert status == 200, body
    return body


def usage(emu) -> dict:
    status, body = control(emu, "/_emulator/quotas", method="GET")
    assert status == 200
    return body["usage"]


def new_pool(client, vm_size="standard_d2s_v3", dedicated=0, low=0, **kw) -> str:
    pid = uid("qp")
    client.create_pool(m.BatchPoolCreateOptions(id=pid, vm_size=vm_size, target_dedicated_nodes=dedicated,
                                                target_low_priority_nodes=low, **kw))
    return pid


def new_job(client, pool_id=None, auto_pool_vm_size=None) -> str:
    jid = uid("qj")
    if auto_pool_vm_size:
        info = m.BatchPoolInfo(auto_pool_specification=m.BatchAutoPoolSpecification(
            pool_lifetime_option="job", pool=m.BatchPoolSpecification(vm_size=auto_pool_vm_size,
                                                                      target_dedicated_nodes=1)))
    else:
        info = m.BatchPoolInfo(pool_id=pool_id)
    client.create_job(m.BatchJobCreateOptions(id=jid, pool_info=info))
    return jid


def refused(call, code: str, message: str) -> None:
    with pytest.raises(HttpResponseError) as exc:
        call()
    assert exc.value.status_code == 409
    assert exc.value.error.code == code
    assert exc.value.error.message.startswith(message)


def test_vcpus_per_vm_size():
    assert [vmsizes.vcpus(s) for s in ("Standard_D2s_v3", "standard_d16s_v3", "STANDARD_D8S_V5", "Standard_F4s_v2",
                                       "Standard_E16s_v3", "Standard_NC6s_v3", "Standard_NC4as_T4_v3",
                                       "Standard_A1_v2", "d4s_v3", "Standard_D11_v2", "Standard_A5")] == \
        [2, 16, 8, 4, 16, 6, 4, 1, 4, 2, 2]
    assert vmsizes.lookup("Standard_D4as_v5") == (4, "table")
    assert vmsizes.lookup("Standard_L8s_v3") == (8, "name")  # not in the table: the number in the name
    assert vmsizes.lookup("Standard_HB120rs_v3") == (120, "name")
    assert vmsizes.lookup("something-odd") == (1, "default") and vmsizes.lookup(None) == (1, "default")


def test_job_quota_refuses_the_next_job_until_one_completes_or_is_deleted(qemu, qclient):
    set_quotas(qemu, activeJobs=2)
    pid = new_pool(qclient)
    j1, j2 = new_job(qclient, pid), new_job(qclient, pid)
    refused(lambda: new_job(qclient, pid), "ActiveJobAndScheduleQuotaReached", JOB_QUOTA_MESSAGE)
    pools_before = usage(qemu)["pools"]
    refused(lambda: new_job(qclient, auto_pool_vm_size="standard_d2s_v3"), "ActiveJobAndScheduleQuotaReached",
            JOB_QUOTA_MESSAGE)
    assert usage(qemu)["pools"] == pools_before  # a refused job creates no auto pool
    # a disabled job is still active (not completed): it counts
    qclient.begin_disable_job(j2, m.BatchJobDisableOptions(disable_tasks="requeue"), polling_interval=1).result()
    assert qclient.get_job(j2).state == "disabled"
    refused(lambda: new_job(qclient, pid), "ActiveJobAndScheduleQuotaReached", JOB_QUOTA_MESSAGE)
    # a completed job does not count
    qclient.begin_terminate_job(j1, options={"terminateReason": "done"}, polling_interval=1).result()
    assert qclient.get_job(j1).state == "completed"
    j3 = new_job(qclient, pid)
    refused(lambda: new_job(qclient, pid), "ActiveJobAndScheduleQuotaReached", JOB_QUOTA_MESSAGE)
    # nor does a deleted one
    qclient.begin_delete_job(j2, polling_interval=1).result()
    new_job(qclient, pid)
    assert usage(qemu)["activeJobs"] == 2
    assert qclient.get_job(j3).state == "active"


def test_pool_quota_for_pools_and_auto_pools(qemu, qclient):
    set_quotas(qemu, pools=2)
    p1 = new_pool(qclient)
    new_pool(qclient)
    refused(lambda: new_pool(qclient), "PoolQuotaReached", POOL_QUOTA_MESSAGE)
    # a job whose auto pool does not fit is accepted, then completed with the service's scheduling error
    failed = new_job(qclient, auto_pool_vm_size="standard_d2s_v3")
    job = qclient.get_job(failed)
    assert job.state == "completed"
    err = job.execution_info.scheduling_error
    assert (err.category, err.code, err.message) == ("usererror", "AutoPoolCreationFailedWithQuotaReached",
                                                     "The pool quota for the account is reached.")
    assert job.execution_info.pool_id is None and usage(qemu)["pools"] == 2
    with pytest.raises(HttpResponseError) as exc:
        qclient.create_task(failed, m.BatchTaskCreateOptions(id="t", command_line="true"))
    assert exc.value.error.code == "JobCompleted"
    # a pool freed: the next auto pool fits, and then it is the one at the quota
    qclient.begin_delete_pool(p1, polling_interval=1).result()
    ok = new_job(qclient, auto_pool_vm_size="standard_d2s_v3")
    job = qclient.get_job(ok)
    assert job.state == "active" and job.execution_info.scheduling_error is None
    assert qclient.get_pool(job.execution_info.pool_id).state == "active"
    refused(lambda: new_pool(qclient), "PoolQuotaReached", POOL_QUOTA_MESSAGE)
    # deleting the job deletes its auto pool, which frees its place
    qclient.begin_delete_job(ok, polling_interval=1).result()
    wait_for(lambda: usage(qemu)["pools"] == 1, 10, what="auto pool deleted")
    new_pool(qclient)


def test_core_quotas_cap_allocation_with_resize_errors(qemu, qclient):
    set_quotas(qemu, dedicatedCores=8, spotCores=4)
    a = new_pool(qclient, "Standard_D4s_v3", dedicated=1)  # 4 of the 8 dedicated cores
    b = new_pool(qclient, "Standard_D2s_v3", dedicated=5)  # wants 10: only 2 nodes (4 cores) fit
    pool = qclient.get_pool(b)  # created: not refused
    assert (pool.target_dedicated_nodes, pool.current_dedicated_nodes, pool.allocation_state) == (5, 2, "steady")
    assert [(e.code, e.message) for e in pool.resize_errors] == [
        ("AccountCoreQuotaReached", "The specified account has reached core quota")]
    assert not qclient.get_pool(a).resize_errors

    qclient.begin_resize_pool(b, m.BatchPoolResizeOptions(target_dedicated_nodes=5, target_low_priority_nodes=3),
                              polling_interval=1).result()
    pool = qclient.get_pool(b)
    assert (pool.current_dedicated_nodes, pool.target_low_priority_nodes, pool.current_low_priority_nodes) == (2, 3, 2)
    assert [e.code for e in pool.resize_errors] == ["AccountCoreQuotaReached", "AccountLowPriorityCoreQuotaReached"]
    assert usage(qemu) == {"activeJobs": 0, "pools": 2, "dedicatedCores": 8, "spotCores": 4}

    # freed cores are not taken by a fixed pool on their own: its next resize takes them
    qclient.begin_delete_pool(a, polling_interval=1).result()
    assert qclient.get_pool(b).current_dedicated_nodes == 2
    qclient.begin_resize_pool(b, m.BatchPoolResizeOptions(target_dedicated_nodes=4, target_low_priority_nodes=2),
                              polling_interval=1).result()
    pool = qclient.get_pool(b)
    assert (pool.current_dedicated_nodes, pool.current_low_priority_nodes) == (4, 2) and not pool.resize_errors
    # shrinking is never limited
    qclient.begin_resize_pool(b, m.BatchPoolResizeOptions(target_dedicated_nodes=1, target_low_priority_nodes=0),
                              polling_interval=1).result()
    assert usage(qemu)["dedicatedCores"] == 2 and usage(qemu)["spotCores"] == 0


def test_control_endpoint_changes_quotas_at_run_time(qemu, qclient):
    body = set_quotas(qemu, dedicatedCores=4)
    assert body["quotas"] == {"activeJobs": None, "pools": None, "dedicatedCores": 4, "spotCores": None}
    # an autoscale pool short of cores for quota grows by itself once the quota is raised
    pid = uid("qa")
    qclient.create_pool(m.BatchPoolCreateOptions(id=pid, vm_size="Standard_F4s_v2", enable_auto_scale=True,
                                                 auto_scale_formula="$TargetDedicatedNodes = 2;"))
    pool = qclient.get_pool(pid)
    assert (pool.target_dedicated_nodes, pool.current_dedicated_nodes) == (2, 1)
    assert [e.code for e in pool.resize_errors] == ["AccountCoreQuotaReached"]
    status, body = control(qemu, "/_emulator/quotas", {"dedicatedCores": 8, "pools": 5})  # POST: only these
    assert status == 200 and body["quotas"] == {"activeJobs": None, "pools": 5, "dedicatedCores": 8, "spotCores": None}
    pool = wait_for(lambda: (p := qclient.get_pool(pid)).current_dedicated_nodes == 2 and p, 10,
                    what="autoscale pool grown into the raised quota")
    assert not pool.resize_errors
    status, body = control(qemu, "/_emulator/quotas", method="GET")
    assert body["pools"] == [{"id": pid, "state": "active", "vmSize": "Standard_F4s_v2", "vCPUs": 4,
                              "vCPUsFrom": "table", "dedicatedCores": 8, "spotCores": 0}]
    assert body["usage"]["dedicatedCores"] == 8
    # PUT replaces: what it does not name becomes unlimited
    assert set_quotas(qemu, activeJobs=0)["quotas"] == {"activeJobs": 0, "pools": None, "dedicatedCores": None,
                                                        "spotCores": None}
    refused(lambda: new_job(qclient, pid), "ActiveJobAndScheduleQuotaReached", JOB_QUOTA_MESSAGE)
    # invalid bodies change nothing
    for bad in ({"pools": -1}, {"pools": 1.5}, {"pools": True}, {"cores": 3}):
        status, answer = control(qemu, "/_emulator/quotas", bad)
        assert status == 400, bad
    assert control(qemu, "/_emulator/quotas", method="GET")[1]["quotas"]["activeJobs"] == 0


def test_flags_and_environment_set_the_quotas():
    env = {"BATCHEMU_QUOTA_POOLS": "7", "BATCHEMU_QUOTA_DEDICATED_CORES": "16",
           "BATCHEMU_QUOTA_SPOT_CORES": "unlimited"}
    with EmulatorProcess(quota_active_jobs=3, quota_pools=0, env=env) as emu:  # a flag beats its variable
        status, body = control(emu, "/_emulator/quotas", method="GET")
        assert body["quotas"] == {"activeJobs": 3, "pools": 0, "dedicatedCores": 16, "spotCores": None}
        refused(lambda: new_pool(make_client(emu)), "PoolQuotaReached", POOL_QUOTA_MESSAGE)
    bad = EmulatorProcess(env={"BATCHEMU_QUOTA_ACTIVE_JOBS": "-2"})
    try:
        with pytest.raises(RuntimeError, match="quota-active-jobs"):
            bad.start()
    finally:
        bad.cleanup()
