"""`az batch` (azure-cli, pinned in tests/clients/requirements.txt) against the emulator: pools, jobs, tasks,
files, nodes and autoscale, as a user would type them. azure-cli sends numbers as JSON strings
("targetDedicatedNodes": "1"), which the service's Json.NET converts; the same bodies are fast tests in
tests/emulator/test_cli_bodies.py."""
from __future__ import annotations

import uuid

import pytest

from tests.services import wait_for

from .conftest import AzError

IMAGE = ["--image", "canonical:0001-com-ubuntu-server-jammy:22_04-lts", "--node-agent-sku-id", "batch.node.ubuntu 22.04"]


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def all_target_nodes_idle(az, pool_id: str):
    """The usual client loop: the pool is steady and every one of its target nodes is idle."""
    pool = az("pool", "show", "--pool-id", pool_id)
    nodes = az("node", "list", "--pool-id", pool_id)
    target = pool["targetDedicatedNodes"] + pool["targetLowPriorityNodes"]
    ok = pool["allocationState"] == "steady" and len(nodes) == target and all(n["state"] == "idle" for n in nodes)
    return nodes if ok else None


@pytest.fixture
def pool(az):
    pid = uid("azpool")
    az("pool", "create", "--id", pid, "--vm-size", "standard_d2s_v3", "--target-dedicated-nodes", "1", *IMAGE)
    yield pid
    try:
        az("pool", "delete", "--pool-id", pid, "--yes")
    except AzError:
        pass  # the test deleted it


@pytest.fixture
def job(az, pool):
    jid = uid("azjob")
    az("job", "create", "--id", jid, "--pool-id", pool)
    yield jid
    try:
        az("job", "delete", "--job-id", jid, "--yes")
    except AzError:
        pass


def wait_task(az, job_id: str, task_id: str) -> dict:
    def done():
        t = az("task", "show", "--job-id", job_id, "--task-id", task_id)
        return t if t["state"] == "completed" else None
    return wait_for(done, 60, interval=0.2, what=f"task {task_id} completed")


def test_pool_create_resize_and_wait_for_idle_nodes(az):
    pid = uid("azpool")
    az("pool", "create", "--id", pid, "--vm-size", "standard_d2s_v3", "--target-dedicated-nodes", "4", *IMAGE)
    pool = az("pool", "show", "--pool-id", pid)
    assert (pool["targetDedicatedNodes"], pool["currentDedicatedNodes"]) == (4, 4)
    assert pool["virtualMachineConfiguration"]["nodeAgentSkuId"] == "batch.node.ubuntu 22.04"  # az's own casing
    nodes = wait_for(lambda: all_target_nodes_idle(az, pid), 30, what="4 idle nodes")  # ends on a 2-core host
    assert len(nodes) == 4
    counts = next(c for c in az("pool", "node-counts", "list") if c["poolId"] == pid)
    assert (counts["dedicated"]["total"], counts["dedicated"]["idle"]) == (4, 4)

    az("pool", "resize", "--pool-id", pid, "--target-dedicated-nodes", "2")
    assert len(wait_for(lambda: all_target_nodes_idle(az, pid), 30, what="2 idle nodes")) == 2
    assert pid in [p["id"] for p in az("pool", "list")]
    az("pool", "delete", "--pool-id", pid, "--yes")
    with pytest.raises(AzError) as exc:
        az("pool", "show", "--pool-id", pid)
    assert "PoolNotFound" in exc.value.stderr


def test_jobs_and_tasks(az, job):
    az("job", "set", "--job-id", job, "--priority", "5")
    assert az("job", "show", "--job-id", job)["priority"] == 5

    az("task", "create", "--job-id", job, "--task-id", "fails", "--command-line", "/bin/sh -c 'exit 3'",
       "--max-task-retry-count", "1")
    az("task", "create", "--job-id", job, "--task-id", "ok", "--command-line", "/bin/sh -c 'echo hello'")
    failed = wait_task(az, job, "fails")
    assert failed["constraints"]["maxTaskRetryCount"] == 1
    assert (failed["executionInfo"]["retryCount"], failed["executionInfo"]["exitCode"]) == (1, 3)
    assert failed["executionInfo"]["failureInfo"]["code"] == "FailureExitCode"
    assert wait_task(az, job, "ok")["executionInfo"]["exitCode"] == 0
    assert [t["id"] for t in az("task", "list", "--job-id", job)] == ["fails", "ok"]
    counts = az("job", "task-counts", "show", "--job-id", job)["taskCounts"]
    assert (counts["completed"], counts["succeeded"], counts["failed"]) == (2, 1, 1)

    az("task", "reactivate", "--job-id", job, "--task-id", "fails")
    assert wait_task(az, job, "fails")["executionInfo"]["exitCode"] == 3

    az("task", "create", "--job-id", job, "--task-id", "long", "--command-line", "sleep 60")
    az("task", "reset", "--job-id", job, "--task-id", "long", "--max-task-retry-count", "2")
    assert az("task", "show", "--job-id", job, "--task-id", "long")["constraints"]["maxTaskRetryCount"] == 2
    az("task", "stop", "--job-id", job, "--task-id", "long")
    assert wait_task(az, job, "long")["executionInfo"]["failureInfo"]["code"] == "TaskEnded"
    az("task", "delete", "--job-id", job, "--task-id", "long", "--yes")
    with pytest.raises(AzError) as exc:
        az("task", "show", "--job-id", job, "--task-id", "long")
    assert "TaskNotFound" in exc.value.stderr

    az("job", "disable", "--job-id", job, "--disable-tasks", "requeue")
    assert az("job", "show", "--job-id", job)["state"] in ("disabling", "disabled")
    az("job", "enable", "--job-id", job)
    az("job", "stop", "--job-id", job, "--terminate-reason", "done")
    job_now = wait_for(lambda: (j := az("job", "show", "--job-id", job))["state"] == "completed" and j,
                       30, what="job completed")
    assert job_now["executionInfo"]["terminateReason"] == "done"


def test_task_and_node_files(az, job, pool, tmp_path):
    az("task", "create", "--job-id", job, "--task-id", "files",
       "--command-line", "/bin/sh -c 'echo out; echo made > made.txt'")
    task = wait_task(az, job, "files")
    names = {f["name"] for f in az("task", "file", "list", "--job-id", job, "--task-id", "files", "--recursive")}
    assert {"stdout.txt", "stderr.txt", "wd/made.txt"} <= names
    az("task", "file", "download", "--job-id", job, "--task-id", "files", "--file-path", "wd/made.txt",
       "--destination", str(tmp_path / "made.txt"))
    assert (tmp_path / "made.txt").read_text() == "made\n"
    # not `az batch task file show` / `node file show`: azure-cli 2.91 crashes on any answer ('RestRequestsTransport
    # Response' object has no attribute 'items', in its own output transformer); the SDK's get_*_file_properties
    # are covered in tests/emulator/test_nodes.py

    node_id = task["nodeInfo"]["nodeId"]
    rel = task["nodeInfo"]["taskRootDirectory"]
    names = {f["name"] for f in az("node", "file", "list", "--pool-id", pool, "--node-id", node_id, "--recursive")}
    assert {"startup", "shared", f"{rel}/stdout.txt", f"{rel}/wd/made.txt"} <= names
    az("node", "file", "download", "--pool-id", pool, "--node-id", node_id, "--file-path", f"{rel}/stdout.txt",
       "--destination", str(tmp_path / "stdout.txt"))
    assert (tmp_path / "stdout.txt").read_text() == "out\n"
    az("task", "file", "delete", "--job-id", job, "--task-id", "files", "--file-path", "wd/made.txt", "--yes")
    names = {f["name"] for f in az("task", "file", "list", "--job-id", job, "--task-id", "files", "--recursive")}
    assert "wd/made.txt" not in names


def test_nodes(az, job, pool):
    az("task", "create", "--job-id", job, "--task-id", "n", "--command-line", "true")
    node_id = wait_task(az, job, "n")["nodeInfo"]["nodeId"]
    node = az("node", "show", "--pool-id", pool, "--node-id", node_id)
    assert node["state"] == "idle" and node["totalTasksRun"] == 1 and node["totalTasksSucceeded"] == 1
    assert [r["taskId"] for r in node["recentTasks"]] == ["n"]
    assert [n["id"] for n in az("node", "list", "--pool-id", pool)] == [node_id]
    with pytest.raises(AzError) as exc:  # not emulated: the error names the operation
        az("node", "reboot", "--pool-id", pool, "--node-id", node_id)
    assert "NotSupportedByEmulator" in exc.value.stderr and "Nodes_RebootNode" in exc.value.stderr


def test_autoscale(az, pool):
    az("pool", "autoscale", "enable", "--pool-id", pool, "--auto-scale-formula", "$TargetDedicatedNodes=3;")
    pool_now = az("pool", "show", "--pool-id", pool)
    assert pool_now["enableAutoScale"] is True and pool_now["currentDedicatedNodes"] == 3
    assert len(az("node", "list", "--pool-id", pool)) == 3
    run = az("pool", "autoscale", "evaluate", "--pool-id", pool, "--auto-scale-formula",
             "$TargetDedicatedNodes=min(2, 5);")
    assert "$TargetDedicatedNodes=2" in run["results"]
    az("pool", "autoscale", "disable", "--pool-id", pool)
    assert az("pool", "show", "--pool-id", pool)["enableAutoScale"] is False
    az("pool", "resize", "--pool-id", pool, "--target-dedicated-nodes", "1")
    assert len(wait_for(lambda: all_target_nodes_idle(az, pool), 30, what="1 idle node")) == 1
