"""Running tasks: exit codes, files, environment, retries, timeouts, dependencies, prep tasks, containers, faults."""
from __future__ import annotations

import datetime

import pytest
from azure.batch import models as m
from azure.core.exceptions import HttpResponseError

from .conftest import control, read_file, uid, wait_for, wait_task


def test_exit_codes_stdout_stderr_and_layout(client, job_id):
    client.create_task(job_id, m.BatchTaskCreateOptions(
        id="ok", command_line="/bin/sh -c 'echo out-line; echo err-line >&2; echo data > result.txt'"))
    client.create_task(job_id, m.BatchTaskCreateOptions(id="bad", command_line="/bin/sh -c 'exit 7'"))
    client.create_task(job_id, m.BatchTaskCreateOptions(id="noshell", command_line="echo $HOME 'a b'"))
    ok = wait_task(client, job_id, "ok")
    assert ok.execution_info.exit_code == 0 and ok.execution_info.result == "success"
    assert ok.execution_info.failure_info is None
    assert ok.previous_state == "running"
    assert isinstance(ok.execution_info.start_time, datetime.datetime)
    assert ok.execution_info.end_time >= ok.execution_info.start_time
    assert ok.node_info.pool_id and ok.node_info.node_id
    assert ok.node_info.task_root_directory.endswith(f"workitems/{job_id}/job-1/ok")
    assert read_file(client, job_id, "ok", "stdout.txt") == "out-line\n"
    assert read_file(client, job_id, "ok", "stderr.txt") == "err-line\n"
    assert read_file(client, job_id, "ok", "wd/result.txt") == "data\n"
    names = {f.name: f for f in client.list_task_files(job_id, "ok", recursive=True)}
    assert {"stdout.txt", "stderr.txt", "wd", "wd/result.txt"} <= set(names)
    assert names["wd"].is_directory and names["wd/result.txt"].properties.content_length == 5
    top = {f.name for f in client.list_task_files(job_id, "ok")}
    assert "wd/result.txt" not in top and "wd" in top
    props = client.get_task_file_properties(job_id, "ok", "stdout.txt")
    assert props  # HEAD answered 200
    # ranged download
    assert b"".join(client.download_task_file(job_id, "ok", "stdout.txt", ocp_range="bytes=0-2")) == b"out"

    bad = wait_task(client, job_id, "bad")
    assert bad.execution_info.exit_code == 7 and bad.execution_info.result == "failure"
    assert bad.execution_info.failure_info.category == "usererror"
    # no implicit shell: $HOME is passed literally, quotes are honoured
    wait_task(client, job_id, "noshell")
    assert read_file(client, job_id, "noshell", "stdout.txt") == "$HOME a b\n"


def test_file_properties_headers(client, job_id):
    client.create_task(job_id, m.BatchTaskCreateOptions(id="f", command_line="/bin/sh -c 'printf 12345'"))
    wait_task(client, job_id, "f")
    captured = {}

    def cls(pipeline_response, _body, headers):
        captured.update(headers)
    client._get_task_file_properties_internal(job_id, "f", "stdout.txt", cls=cls)
    assert captured["Content-Length"] == 5 and captured["ocp-batch-file-isdirectory"] is False
    assert isinstance(captured["ocp-creation-time"], datetime.datetime)
    assert isinstance(captured["Last-Modified"], datetime.datetime)
    captured.clear()
    client._get_task_file_properties_internal(job_id, "f", "wd", cls=cls)
    assert captured["ocp-batch-file-isdirectory"] is True


def test_command_not_found(client, job_id):
    client.create_task(job_id, m.BatchTaskCreateOptions(id="nf", command_line="/no/such/program --x"))
    t = wait_task(client, job_id, "nf")
    assert t.execution_info.result == "failure"
    assert t.execution_info.failure_info.code == "CommandProgramNotFound"


def test_environment_variables(client, pool_id):
    jid = uid("envjob")
    client.create_job(m.BatchJobCreateOptions(
        id=jid, pool_info=m.BatchPoolInfo(pool_id=pool_id),
        common_environment_settings=[m.EnvironmentSetting(name="JOBVAR", value="job"),
                                     m.EnvironmentSetting(name="OVERRIDE", value="job")]))
    client.create_task(jid, m.BatchTaskCreateOptions(
        id="env", command_line="/usr/bin/env",
        environment_settings=[m.EnvironmentSetting(name="TASKVAR", value="task"),
                              m.EnvironmentSetting(name="OVERRIDE", value="task")]))
    wait_task(client, jid, "env")
    env = dict(line.split("=", 1) for line in read_file(client, jid, "env", "stdout.txt").splitlines() if "=" in line)
    assert env["JOBVAR"] == "job" and env["TASKVAR"] == "task" and env["OVERRIDE"] == "task"
    assert env["AZ_BATCH_TASK_ID"] == "env" and env["AZ_BATCH_JOB_ID"] == jid
    assert env["AZ_BATCH_POOL_ID"] == pool_id and env["AZ_BATCH_ACCOUNT_NAME"] == "devbatch"
    assert env["AZ_BATCH_NODE_ID"].startswith("tvmps_")
    assert env["AZ_BATCH_TASK_WORKING_DIR"].endswith(f"/workitems/{jid}/job-1/env/wd")
    assert env["AZ_BATCH_TASK_DIR"].endswith(f"/workitems/{jid}/job-1/env")
    assert env["AZ_BATCH_NODE_SHARED_DIR"] == env["AZ_BATCH_NODE_ROOT_DIR"] + "/shared"
    client.begin_delete_job(jid, polling_interval=1).result()


def test_retries_then_fail(client, pool_id):
    jid = uid("retryjob")
    client.create_job(m.BatchJobCreateOptions(id=jid, pool_info=m.BatchPoolInfo(pool_id=pool_id),
                                              constraints=m.BatchJobConstraints(max_task_retry_count=1)))
    # task constraint wins over the job's
    client.create_task(jid, m.BatchTaskCreateOptions(
        id="r", command_line="/bin/sh -c 'echo try >> $AZ_BATCH_NODE_SHARED_DIR/r-$AZ_BATCH_JOB_ID; exit 3'",
        constraints=m.BatchTaskConstraints(max_task_retry_count=2)))
    client.create_task(jid, m.BatchTaskCreateOptions(id="j", command_line="/bin/sh -c 'exit 4'"))
    t = wait_task(client, jid, "r")
    assert t.execution_info.retry_count == 2 and t.execution_info.exit_code == 3
    assert t.execution_info.result == "failure" and t.execution_info.last_retry_time is not None
    t = wait_task(client, jid, "j")
    assert t.execution_info.retry_count == 1
    client.begin_delete_job(jid, polling_interval=1).result()


def test_retry_succeeds_after_fail_next(client, job_id, emu):
    status, _ = control(emu, f"/_emulator/jobs/{job_id}/tasks/flaky/fail-next", {"count": 2})
    assert status == 200
    client.create_task(job_id, m.BatchTaskCreateOptions(
        id="flaky", command_line="/bin/sh -c 'echo ran'", constraints=m.BatchTaskConstraints(max_task_retry_count=3)))
    t = wait_task(client, job_id, "flaky")
    assert t.execution_info.result == "success" and t.execution_info.retry_count == 2
    assert read_file(client, job_id, "flaky", "stdout.txt") == "ran\n"


def test_fail_next_without_retries_fails(client, job_id, emu):
    control(emu, f"/_emulator/jobs/{job_id}/tasks/doomed/fail-next", {"count": 1})
    client.create_task(job_id, m.BatchTaskCreateOptions(id="doomed", command_line="true"))
    t = wait_task(client, job_id, "doomed")
    assert t.execution_info.result == "failure" and t.execution_info.exit_code == 1
    assert "injected failure" in read_file(client, job_id, "doomed", "stderr.txt")


def test_wall_clock_timeout(client, job_id):
    client.create_task(job_id, m.BatchTaskCreateOptions(
        id="slowpoke", command_line="sleep 30",
        constraints=m.BatchTaskConstraints(max_wall_clock_time=datetime.timedelta(seconds=1), max_task_retry_count=0)))
    t = wait_task(client, job_id, "slowpoke", timeout=15)
    assert t.execution_info.result == "failure"
    assert t.execution_info.failure_info.code == "MaxWallClockTimeExpiry"
    elapsed = (t.execution_info.end_time - t.execution_info.start_time).total_seconds()
    assert 0.9 <= elapsed < 10


def test_dependencies(client, job_id):
    client.create_tasks(job_id, [
        m.BatchTaskCreateOptions(id="after", command_line="/bin/sh -c 'cat $AZ_BATCH_NODE_SHARED_DIR/dep-$AZ_BATCH_JOB_ID'",
                                 depends_on=m.BatchTaskDependencies(task_ids=["1"], task_id_ranges=[
                                     m.BatchTaskIdRange(start=2, end=3)])),
        m.BatchTaskCreateOptions(id="1", command_line="/bin/sh -c 'sleep 0.3; echo one >> $AZ_BATCH_NODE_SHARED_DIR/dep-$AZ_BATCH_JOB_ID'"),
        m.BatchTaskCreateOptions(id="2", command_line="/bin/sh -c 'echo two >> $AZ_BATCH_NODE_SHARED_DIR/dep-$AZ_BATCH_JOB_ID'"),
        m.BatchTaskCreateOptions(id="3", command_line="/bin/sh -c 'echo three >> $AZ_BATCH_NODE_SHARED_DIR/dep-$AZ_BATCH_JOB_ID'"),
        m.BatchTaskCreateOptions(id="fails", command_line="false"),
        m.BatchTaskCreateOptions(id="blocked", command_line="true",
                                 depends_on=m.BatchTaskDependencies(task_ids=["fails"])),
    ])
    after = wait_task(client, job_id, "after")
    assert after.execution_info.result == "success"
    assert sorted(read_file(client, job_id, "after", "stdout.txt").split()) == ["one", "three", "two"]
    for tid in ("1", "2", "3"):
        assert client.get_task(job_id, tid).execution_info.end_time <= after.execution_info.start_time
    wait_task(client, job_id, "fails")
    # a failed dependency blocks the dependent (the service's default dependencyAction)
    assert client.get_task(job_id, "blocked").state == "active"
    assert client.get_task(job_id, "after").depends_on.task_ids == ["1"]


def test_dependencies_require_flag_on_job(client, pool_id):
    jid = uid("nodeps")
    client.create_job(m.BatchJobCreateOptions(id=jid, pool_info=m.BatchPoolInfo(pool_id=pool_id)))
    with pytest.raises(HttpResponseError) as exc:
        client.create_task(jid, m.BatchTaskCreateOptions(id="a", command_line="true",
                                                         depends_on=m.BatchTaskDependencies(task_ids=["b"])))
    assert exc.value.status_code == 400 and exc.value.error.code == "TaskDependenciesNotSpecifiedOnJob"
    client.begin_delete_job(jid, polling_interval=1).result()


def test_preemption_requeues_without_counting_a_retry(client, job_id, emu):
    control(emu, f"/_emulator/jobs/{job_id}/tasks/spot/slow", {"seconds": 30})
    client.create_task(job_id, m.BatchTaskCreateOptions(id="spot", command_line="/bin/sh -c 'echo finished'"))
    wait_task(client, job_id, "spot", state="running")
    status, body = control(emu, f"/_emulator/jobs/{job_id}/tasks/spot/preempt")
    assert status == 200 and body["preempted"] is True
    t = wait_task(client, job_id, "spot")
    assert t.execution_info.result == "success"
    assert t.execution_info.requeue_count == 1 and t.execution_info.retry_count == 0
    assert t.execution_info.last_requeue_time is not None
    assert read_file(client, job_id, "spot", "stdout.txt") == "finished\n"


def test_preemption_scheduled_before_task_exists(client, job_id, emu):
    status, body = control(emu, f"/_emulator/jobs/{job_id}/tasks/later/preempt")
    assert status == 202 and body["scheduled"] is True
    client.create_task(job_id, m.BatchTaskCreateOptions(id="later", command_line="true"))
    t = wait_task(client, job_id, "later")
    assert t.execution_info.result == "success" and t.execution_info.requeue_count == 1


def test_slow_fault_delays_start(client, job_id, emu):
    control(emu, f"/_emulator/jobs/{job_id}/tasks/lazy/slow", {"seconds": 1.0})
    client.create_task(job_id, m.BatchTaskCreateOptions(id="lazy", command_line="true"))
    t = wait_task(client, job_id, "lazy")
    assert (t.execution_info.end_time - t.execution_info.start_time).total_seconds() >= 0.9


def test_job_preparation_and_release(client, pool_id):
    jid = uid("prepjob")
    client.create_job(m.BatchJobCreateOptions(
        id=jid, pool_info=m.BatchPoolInfo(pool_id=pool_id),
        job_preparation_task=m.BatchJobPreparationTask(
            command_line="/bin/sh -c 'echo prepared > marker; echo x >> $AZ_BATCH_NODE_SHARED_DIR/prep-count-$AZ_BATCH_JOB_ID'"),
        job_release_task=m.BatchJobReleaseTask(command_line="/bin/sh -c 'echo released'")))
    client.create_tasks(jid, [m.BatchTaskCreateOptions(
        id=f"t{i}", command_line="/bin/sh -c 'cat $AZ_BATCH_JOB_PREP_WORKING_DIR/marker; cat $AZ_BATCH_NODE_SHARED_DIR/prep-count-$AZ_BATCH_JOB_ID | wc -l'")
        for i in range(4)])
    for i in range(4):
        t = wait_task(client, jid, f"t{i}")
        assert t.execution_info.result == "success"
        lines = read_file(client, jid, f"t{i}", "stdout.txt").split()
        assert lines == ["prepared", "1"]  # prep ran exactly once on the (single) node
    status = list(client.list_job_preparation_and_release_task_status(jid))
    assert len(status) == 1 and status[0].job_preparation_task_execution_info.exit_code == 0
    client.begin_terminate_job(jid, {"terminateReason": "done"}, polling_interval=1).result()
    status = list(client.list_job_preparation_and_release_task_status(jid))
    assert status[0].job_release_task_execution_info.exit_code == 0
    client.begin_delete_job(jid, polling_interval=1).result()


def test_failed_job_preparation_fails_tasks(client, pool_id):
    jid = uid("badprep")
    client.create_job(m.BatchJobCreateOptions(
        id=jid, pool_info=m.BatchPoolInfo(pool_id=pool_id),
        job_preparation_task=m.BatchJobPreparationTask(command_line="/bin/sh -c 'exit 9'")))
    client.create_task(jid, m.BatchTaskCreateOptions(id="t", command_line="true"))
    t = wait_task(client, jid, "t")
    assert t.execution_info.result == "failure"
    assert t.execution_info.failure_info.code == "JobPreparationTaskFailed"
    client.begin_delete_job(jid, polling_interval=1).result()


def test_container_task_runs_on_host_and_records_mode(client, pool_id):
    """The session emulator has no Docker engine (auto -> host)."""
    jid = uid("ctr")
    client.create_job(m.BatchJobCreateOptions(id=jid, pool_info=m.BatchPoolInfo(pool_id=pool_id)))
    client.create_task(jid, m.BatchTaskCreateOptions(
        id="c", command_line="/bin/sh -c 'echo in-container'",
        container_settings=m.BatchTaskContainerSettings(image_name="ubuntu:22.04")))
    client.create_task(jid, m.BatchTaskCreateOptions(id="plain", command_line="true"))
    t = wait_task(client, jid, "c")
    assert t.execution_info.result == "success"
    assert t.get("emulatorContainerMode") == "host"
    assert t.container_settings.image_name == "ubuntu:22.04"
    listed = {x.id: x for x in client.list_tasks(jid)}
    assert listed["c"].get("emulatorContainerMode") == "host"
    wait_task(client, jid, "plain")
    assert client.get_task(jid, "plain").get("emulatorContainerMode") is None
    client.begin_delete_job(jid, polling_interval=1).result()


def test_max_parallel_tasks(client, pool_id):
    jid = uid("mpt")
    client.create_job(m.BatchJobCreateOptions(id=jid, pool_info=m.BatchPoolInfo(pool_id=pool_id), max_parallel_tasks=1))
    client.create_tasks(jid, [m.BatchTaskCreateOptions(id=f"p{i}", command_line="sleep 0.3") for i in range(3)])
    seen_running = set()

    def done():
        c = client.get_job_task_counts(jid).task_counts
        seen_running.add(c.running)
        return c.completed == 3
    wait_for(done, timeout=20, interval=0.05, what="3 tasks done")
    assert max(seen_running) == 1
    client.begin_delete_job(jid, polling_interval=1).result()


def test_task_failure_terminates_job_with_exit_options(client, pool_id):
    jid = uid("tfail")
    client.create_job(m.BatchJobCreateOptions(id=jid, pool_info=m.BatchPoolInfo(pool_id=pool_id),
                                              task_failure_mode="performexitoptionsjobaction"))
    client.create_task(jid, m.BatchTaskCreateOptions(id="boom", command_line="false"))
    job = wait_for(lambda: (j := client.get_job(jid)).state == "completed" and j, what="job terminated")
    assert job.execution_info.termination_reason == "TaskFailed"
    client.begin_delete_job(jid, polling_interval=1).result()


def test_pool_start_task_runs_once_per_node(client):
    pid, jid = uid("stpool"), uid("stjob")
    client.create_pool(m.BatchPoolCreateOptions(
        id=pid, vm_size="x", target_dedicated_nodes=1, task_slots_per_node=2,
        start_task=m.BatchStartTask(command_line="/bin/sh -c 'echo started >> $AZ_BATCH_NODE_SHARED_DIR/boot'",
                                    wait_for_success=True)))
    client.create_job(m.BatchJobCreateOptions(id=jid, pool_info=m.BatchPoolInfo(pool_id=pid)))
    client.create_tasks(jid, [m.BatchTaskCreateOptions(id=f"t{i}", command_line="/bin/sh -c 'cat $AZ_BATCH_NODE_SHARED_DIR/boot'")
                              for i in range(3)])
    for i in range(3):
        assert wait_task(client, jid, f"t{i}").execution_info.result == "success"
        assert read_file(client, jid, f"t{i}", "stdout.txt") == "started\n"
    client.begin_delete_job(jid, polling_interval=1).result()
    client.begin_delete_pool(pid, polling_interval=1).result()


def test_job_manager_task_completion_terminates_job(client, pool_id):
    jid = uid("jm")
    client.create_job(m.BatchJobCreateOptions(
        id=jid, pool_info=m.BatchPoolInfo(pool_id=pool_id),
        job_manager_task=m.BatchJobManagerTask(id="manager", command_line="/bin/sh -c 'echo managing'")))
    t = wait_task(client, jid, "manager")
    assert t.execution_info.result == "success"
    job = wait_for(lambda: (j := client.get_job(jid)).state == "completed" and j, what="job completed")
    assert job.execution_info.termination_reason == "JMComplete"
    client.begin_delete_job(jid, polling_interval=1).result()
