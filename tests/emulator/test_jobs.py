"""Jobs: create (poolId / auto pool), get, list, update/replace, disable/enable, terminate, delete."""
from __future__ import annotations

import datetime

import pytest
from azure.batch import models as m
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError

from .conftest import uid, wait_for, wait_task


def test_job_crud_list_filter_select(client, pool_id):
    jid = uid("job")
    client.create_job(m.BatchJobCreateOptions(
        id=jid, display_name="my job", pool_info=m.BatchPoolInfo(pool_id=pool_id), priority=10,
        constraints=m.BatchJobConstraints(max_task_retry_count=2),
        metadata=[m.BatchMetadataItem(name="k", value="v")],
        common_environment_settings=[m.EnvironmentSetting(name="A", value="1")]))
    job = client.get_job(jid)
    assert job.state == "active" and job.display_name == "my job"
    assert job.pool_info.pool_id == pool_id and job.execution_info.pool_id == pool_id
    assert job.priority == 10 and job.constraints.max_task_retry_count == 2
    assert job.all_tasks_complete_mode == "noaction" and job.task_failure_mode == "noaction"
    assert job.metadata[0].name == "k" and job.common_environment_settings[0].value == "1"
    assert job.etag and isinstance(job.creation_time, datetime.datetime)

    with pytest.raises(ResourceExistsError) as exc:
        client.create_job(m.BatchJobCreateOptions(id=jid, pool_info=m.BatchPoolInfo(pool_id=pool_id)))
    assert exc.value.error.code == "JobExists"

    got = list(client.list_jobs(filter=f"id eq '{jid}' and state eq 'active'", select=["id", "state"]))
    assert [(j.id, j.state) for j in got] == [(jid, "active")]
    assert got[0].priority is None  # not selected
    assert jid not in {j.id for j in client.list_jobs(filter="state eq 'completed'")}

    client.update_job(jid, m.BatchJobUpdateOptions(priority=5, all_tasks_complete_mode="noaction"))
    assert client.get_job(jid).priority == 5

    client.begin_delete_job(jid, polling_interval=1).result()
    with pytest.raises(ResourceNotFoundError) as exc:
        client.get_job(jid)
    assert exc.value.error.code == "JobNotFound"


def test_on_all_tasks_complete_cannot_go_back_to_noaction(client, job_id):
    client.update_job(job_id, m.BatchJobUpdateOptions(all_tasks_complete_mode="terminatejob"))
    wait_for(lambda: client.get_job(job_id).state == "completed", what="empty terminatejob job completes")
    job = client.get_job(job_id)
    assert job.execution_info.termination_reason == "AllTasksComplete"
    with pytest.raises(HttpResponseError) as exc:
        client.update_job(job_id, m.BatchJobUpdateOptions(priority=1))
    assert exc.value.status_code == 409 and exc.value.error.code == "JobCompleted"


def test_terminatejob_to_noaction_rejected(client, pool_id):
    jid = uid("job")
    client.create_job(m.BatchJobCreateOptions(id=jid, pool_info=m.BatchPoolInfo(pool_id=pool_id)))
    client.create_task(jid, m.BatchTaskCreateOptions(id="t1", command_line="sleep 5"))
    client.update_job(jid, m.BatchJobUpdateOptions(all_tasks_complete_mode="terminatejob"))
    with pytest.raises(HttpResponseError) as exc:
        client.update_job(jid, m.BatchJobUpdateOptions(all_tasks_complete_mode="noaction"))
    assert exc.value.status_code == 400 and exc.value.error.code == "InvalidPropertyValue"
    client.begin_delete_job(jid, polling_interval=1).result()


def test_replace_job(client, job_id):
    job = client.get_job(job_id)
    job.priority = 7
    job.constraints = m.BatchJobConstraints(max_task_retry_count=4)
    client.replace_job(job_id, job)
    job = client.get_job(job_id)
    assert job.priority == 7 and job.constraints.max_task_retry_count == 4


def test_terminate_job_and_terminatejob_on_completion(client, pool_id):
    jid = uid("job")
    client.create_job(m.BatchJobCreateOptions(id=jid, pool_info=m.BatchPoolInfo(pool_id=pool_id)))
    client.create_task(jid, m.BatchTaskCreateOptions(id="long", command_line="sleep 30"))
    wait_task(client, jid, "long", state="running")
    # azure-batch 15.1.0: begin_terminate_job without options fails client-side, and BatchJobTerminateOptions is
    # not exported: pass the body as a dict
    client.begin_terminate_job(jid, {"terminateReason": "Enough"}, polling_interval=1).result()
    job = client.get_job(jid)
    assert job.state == "completed" and job.execution_info.termination_reason == "Enough"
    assert job.execution_info.end_time is not None
    t = client.get_task(jid, "long")
    assert t.state == "completed" and t.execution_info.failure_info.code == "TaskEnded"
    with pytest.raises(HttpResponseError) as exc:
        client.create_task(jid, m.BatchTaskCreateOptions(id="late", command_line="true"))
    assert exc.value.status_code == 409 and exc.value.error.code == "JobCompleted"
    client.begin_delete_job(jid, polling_interval=1).result()


def test_terminatejob_after_all_tasks(client, pool_id):
    jid = uid("job")
    client.create_job(m.BatchJobCreateOptions(id=jid, pool_info=m.BatchPoolInfo(pool_id=pool_id),
                                              all_tasks_complete_mode="noaction"))
    client.create_tasks(jid, [m.BatchTaskCreateOptions(id=f"t{i}", command_line="true") for i in range(5)])
    client.update_job(jid, m.BatchJobUpdateOptions(all_tasks_complete_mode="terminatejob"))
    job = wait_for(lambda: (j := client.get_job(jid)).state == "completed" and j, what="job completes")
    assert job.execution_info.termination_reason == "AllTasksComplete"
    assert client.get_job_task_counts(jid).task_counts.succeeded == 5
    client.begin_delete_job(jid, polling_interval=1).result()


def test_delete_job_kills_running_tasks(client, pool_id):
    jid = uid("job")
    client.create_job(m.BatchJobCreateOptions(id=jid, pool_info=m.BatchPoolInfo(pool_id=pool_id)))
    client.create_task(jid, m.BatchTaskCreateOptions(id="t1", command_line="sleep 60"))
    wait_task(client, jid, "t1", state="running")
    poller = client.begin_delete_job(jid, polling_interval=1)
    poller.result(timeout=20)
    with pytest.raises(ResourceNotFoundError):
        client.get_job(jid)
    # the id can be reused once the job is gone
    client.create_job(m.BatchJobCreateOptions(id=jid, pool_info=m.BatchPoolInfo(pool_id=pool_id)))
    assert client.get_job(jid).state == "active"
    client.begin_delete_job(jid, polling_interval=1).result()


def test_disable_enable_job(client, pool_id):
    jid = uid("job")
    client.create_job(m.BatchJobCreateOptions(id=jid, pool_info=m.BatchPoolInfo(pool_id=pool_id)))
    client.create_task(jid, m.BatchTaskCreateOptions(id="run", command_line="sleep 30"))
    wait_task(client, jid, "run", state="running")
    client.begin_disable_job(jid, m.BatchJobDisableOptions(disable_tasks="requeue"), polling_interval=1).result()
    assert client.get_job(jid).state == "disabled"
    t = wait_task(client, jid, "run", state="active")
    assert t.execution_info.requeue_count == 1
    client.create_task(jid, m.BatchTaskCreateOptions(id="queued", command_line="true"))
    # nothing runs while disabled
    assert client.get_task(jid, "queued").state == "active"
    client.begin_enable_job(jid, polling_interval=1).result()
    assert client.get_job(jid).state == "active"
    wait_task(client, jid, "queued")
    client.begin_delete_job(jid, polling_interval=1).result()


def test_auto_pool_lifecycle(client):
    jid = uid("autojob")
    spec = m.BatchAutoPoolSpecification(
        auto_pool_id_prefix="emu", pool_lifetime_option="job", keep_alive=False,
        pool=m.BatchPoolSpecification(vm_size="standard_d2s_v3", target_dedicated_nodes=1, task_slots_per_node=1))
    client.create_job(m.BatchJobCreateOptions(id=jid, pool_info=m.BatchPoolInfo(auto_pool_specification=spec),
                                              all_tasks_complete_mode="noaction"))
    job = client.get_job(jid)
    pool_id = job.execution_info.pool_id
    assert pool_id and pool_id.startswith("emu_")
    assert job.pool_info.auto_pool_specification.pool_lifetime_option == "job"
    pool = client.get_pool(pool_id)
    assert pool.target_dedicated_nodes == 1
    client.create_task(jid, m.BatchTaskCreateOptions(id="t1", command_line="/bin/sh -c 'echo $AZ_BATCH_POOL_ID'"))
    wait_task(client, jid, "t1")
    assert b"".join(client.download_task_file(jid, "t1", "stdout.txt")).decode().strip() == pool_id
    client.begin_delete_job(jid, polling_interval=1).result()

    def gone():
        try:
            client.get_pool(pool_id)
            return False
        except ResourceNotFoundError:
            return True
    wait_for(gone, what="auto pool deleted with its job")


def test_auto_pool_deleted_when_job_completes(client):
    jid = uid("autojob")
    spec = m.BatchAutoPoolSpecification(pool_lifetime_option="job",
                                        pool=m.BatchPoolSpecification(vm_size="x", target_dedicated_nodes=1))
    client.create_job(m.BatchJobCreateOptions(id=jid, pool_info=m.BatchPoolInfo(auto_pool_specification=spec)))
    pool_id = client.get_job(jid).execution_info.pool_id
    assert pool_id.startswith("autopool-")
    client.create_task(jid, m.BatchTaskCreateOptions(id="t1", command_line="true"))
    client.update_job(jid, m.BatchJobUpdateOptions(all_tasks_complete_mode="terminatejob"))
    wait_for(lambda: client.get_job(jid).state == "completed", what="job completed")

    def gone():
        return pool_id not in {p.id for p in client.list_pools()}
    wait_for(gone, what="auto pool deleted when the job completed")
    client.begin_delete_job(jid, polling_interval=1).result()


def test_job_max_wall_clock_time_terminates_job(client, pool_id):
    jid = uid("jobwall")
    client.create_job(m.BatchJobCreateOptions(
        id=jid, pool_info=m.BatchPoolInfo(pool_id=pool_id),
        constraints=m.BatchJobConstraints(max_wall_clock_time=datetime.timedelta(seconds=1))))
    client.create_task(jid, m.BatchTaskCreateOptions(id="forever", command_line="sleep 60"))
    job = wait_for(lambda: (j := client.get_job(jid)).state == "completed" and j, timeout=15, what="job timed out")
    assert job.execution_info.termination_reason == "MaxWallClockTimeExpiry"
    assert client.get_task(jid, "forever").state == "completed"
    client.begin_delete_job(jid, polling_interval=1).result()


def test_delete_job_right_after_a_burst_never_sticks(client, pool_id):
    """Regression: deleting while the scheduler is starting workers must still finish the deletion."""
    for _ in range(8):
        jid = uid("burst")
        client.create_job(m.BatchJobCreateOptions(id=jid, pool_info=m.BatchPoolInfo(pool_id=pool_id)))
        client.create_tasks(jid, [m.BatchTaskCreateOptions(id=f"t{k}", command_line="true") for k in range(120)])
        client.begin_delete_job(jid, polling_interval=1).result(timeout=15)
        with pytest.raises(ResourceNotFoundError):
            client.get_job(jid)


def test_a_job_made_again_right_after_its_delete_keeps_its_own_files(client, pool_id, emu):
    """The DELETE returns once the job's directories are moved aside, before they are removed: a job
    made again with the same id at once writes into fresh directories that the removal never touches."""
    import os

    jid = uid("again")
    client.create_job(m.BatchJobCreateOptions(id=jid, pool_info=m.BatchPoolInfo(pool_id=pool_id)))
    # enough files that removing them takes a while
    client.create_task(jid, m.BatchTaskCreateOptions(
        id="t", command_line="/bin/sh -c 'mkdir many && cd many && seq 20000 | xargs touch && echo old > ../mark'"))
    assert wait_task(client, jid, "t").execution_info.exit_code == 0
    client.begin_delete_job(jid, polling_interval=1).result(timeout=15)
    client.create_job(m.BatchJobCreateOptions(id=jid, pool_info=m.BatchPoolInfo(pool_id=pool_id)))
    client.create_task(jid, m.BatchTaskCreateOptions(id="t", command_line="/bin/sh -c 'echo new > mark'"))
    assert wait_task(client, jid, "t").execution_info.exit_code == 0
    trash = os.path.join(emu.data_dir, "trash")
    wait_for(lambda: not os.path.isdir(trash) or not os.listdir(trash), timeout=15, what="the trash emptied")
    assert b"".join(client.download_task_file(jid, "t", "wd/mark")) == b"new\n"
    names = {f.name for f in client.list_task_files(jid, "t", recursive=True)}
    assert not any(n.startswith("wd/many") for n in names)  # nothing of the deleted job's task
    client.begin_delete_job(jid, polling_interval=1).result()
