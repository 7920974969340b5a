"""Nodes agree with their pool (as many as its current dedicated + spot nodes, whatever the host's slot cap),
report their start task, totals and recent tasks, and serve their files; every URL the emulator hands out
(a task's taskRootDirectoryUrl, a preparation task's) is served by the node files API."""
from __future__ import annotations

import urllib.parse

import pytest
from azure.batch import models as m
from azure.core.exceptions import ResourceNotFoundError
from azure.core.rest import HttpRequest

from .conftest import uid, wait_for, wait_job_tasks_done, wait_task


def node_path(url: str) -> str:
    """The path of a URL the emulator handed out, to send through the signed client."""
    return urllib.parse.urlsplit(url).path


def head(client, path: str):
    return client.send_request(HttpRequest("HEAD", f"{path}?api-version=2025-06-01"))


def text(client, path: str) -> str:
    resp = client.send_request(HttpRequest("GET", f"{path}?api-version=2025-06-01"))
    assert resp.status_code == 200, (path, resp.status_code, resp.text())
    return resp.text()


@pytest.fixture
def pool4(client):
    """4 dedicated + 1 spot node of 1 slot: more nodes than the test emulator's 2 host slots."""
    pid = uid("pool4")
    client.create_pool(m.BatchPoolCreateOptions(id=pid, vm_size="standard_d2s_v3", target_dedicated_nodes=4,
                                                target_low_priority_nodes=1, task_slots_per_node=1))
    yield pid
    client.begin_delete_pool(pid, polling_interval=1).result()


def test_a_pool_lists_all_its_nodes_and_they_take_turns(client, pool4, emu):
    nodes = list(client.list_nodes(pool4))
    assert len(nodes) == 5 and sorted(n.is_dedicated for n in nodes) == [False, True, True, True, True]
    assert {n.state for n in nodes} == {"idle"}  # the client's "wait until all target nodes are idle" ends
    counts = next(c for c in client.list_pool_node_counts() if c.pool_id == pool4)
    assert (counts.dedicated.total, counts.dedicated.idle, counts.low_priority.total) == (4, 4, 1)

    jid = uid("job")
    client.create_job(m.BatchJobCreateOptions(id=jid, pool_info=m.BatchPoolInfo(pool_id=pool4)))
    client.create_tasks(jid, [m.BatchTaskCreateOptions(id=f"t{i}", command_line="sleep 0.3") for i in range(6)])
    peak = 0

    def done():
        nonlocal peak
        running = sum(n.running_tasks_count or 0 for n in client.list_nodes(pool4))
        peak = max(peak, running)
        c = client.get_job_task_counts(jid).task_counts
        return c if c.completed == 6 else None
    wait_for(done, 30, interval=0.05, what="6 tasks done")
    assert 1 <= peak <= 2  # the host-wide slot cap (2 here) still limits what runs at once

    nodes = list(client.list_nodes(pool4))
    assert len(nodes) == 5
    assert sum(n.total_tasks_run for n in nodes) == 6 and sum(n.total_tasks_succeeded for n in nodes) == 6
    recent = [r for n in nodes for r in (n.recent_tasks or [])]
    assert sorted(r.task_id for r in recent) == [f"t{i}" for i in range(6)]
    assert {r.task_state for r in recent} == {"completed"} and {r.job_id for r in recent} == {jid}
    assert all(r.execution_info.exit_code == 0 for r in recent)

    client.begin_resize_pool(pool4, m.BatchPoolResizeOptions(target_dedicated_nodes=2, target_low_priority_nodes=0),
                             polling_interval=1).result()
    assert len(list(client.list_nodes(pool4))) == 2
    counts = next(c for c in client.list_pool_node_counts() if c.pool_id == pool4)
    assert (counts.dedicated.total, counts.low_priority.total) == (2, 0)
    client.begin_delete_job(jid, polling_interval=1).result()


def test_node_start_task_info_and_files(client):
    pid = uid("pool")
    client.create_pool(m.BatchPoolCreateOptions(
        id=pid, vm_size="x", target_dedicated_nodes=1,
        start_task=m.BatchStartTask(command_line="/bin/sh -c 'echo started; echo s > $AZ_BATCH_NODE_SHARED_DIR/s'",
                                    wait_for_success=True)))
    jid = uid("job")
    client.create_job(m.BatchJobCreateOptions(id=jid, pool_info=m.BatchPoolInfo(pool_id=pid)))
    client.create_task(jid, m.BatchTaskCreateOptions(id="t", command_line="/bin/sh -c 'echo out; echo f > wd.txt'"))
    task = wait_task(client, jid, "t")
    assert task.execution_info.exit_code == 0

    node = client.get_node(pid, task.node_info.node_id)
    assert node.start_task.command_line.startswith("/bin/sh") and node.start_task.wait_for_success is True
    info = node.start_task_info
    assert (info.state, info.exit_code, info.retry_count) == ("completed", 0, 0) and info.end_time
    assert node.total_tasks_run == 1 and node.state == "idle" and node.node_agent_info.version

    top = {f.name: f.is_directory for f in client.list_node_files(pid, node.id)}
    assert {"shared", "startup", "workitems"} <= set(top) and all(top.values())
    names = {f.name for f in client.list_node_files(pid, node.id, recursive=True)}
    rel = task.node_info.task_root_directory
    assert rel == f"workitems/{jid}/job-1/t"  # relative to the node's root, never a host path
    assert {"startup/stdout.txt", "shared/s", f"{rel}/stdout.txt", f"{rel}/wd/wd.txt"} <= names
    assert b"".join(client.download_node_file(pid, node.id, "startup/stdout.txt")) == b"started\n"
    props = client.get_node_file_properties(pid, node.id, f"{rel}/stdout.txt")
    assert props.content_length == 4 and not props.is_directory

    # the URLs handed out are served: the task's root directory and the files under it
    root = node_path(task.node_info.task_root_directory_url)
    assert root == f"/pools/{pid}/nodes/{node.id}/files/{rel}"
    resp = head(client, root)
    assert resp.status_code == 200 and resp.headers["ocp-batch-file-isdirectory"] == "true"
    assert text(client, f"{root}/stdout.txt") == "out\n"
    assert text(client, f"{root}/wd/wd.txt") == "f\n"

    client.delete_node_file(pid, node.id, f"{rel}/wd/wd.txt")
    with pytest.raises(ResourceNotFoundError):
        client.get_node_file_properties(pid, node.id, f"{rel}/wd/wd.txt")
    with pytest.raises(ResourceNotFoundError):
        client.get_node_file_properties(pid, node.id, "../../../etc/passwd")
    with pytest.raises(ResourceNotFoundError) as exc:
        client.get_node(pid, "tvmps_nosuchnode_d")
    assert exc.value.error.code == "NodeNotFound"
    client.begin_delete_job(jid, polling_interval=1).result()
    client.begin_delete_pool(pid, polling_interval=1).result()


def test_a_failed_start_task_shows_on_the_node(client):
    pid = uid("pool")
    client.create_pool(m.BatchPoolCreateOptions(id=pid, vm_size="x", target_dedicated_nodes=1,
                                                start_task=m.BatchStartTask(command_line="/bin/sh -c 'exit 4'")))
    jid = uid("job")
    client.create_job(m.BatchJobCreateOptions(id=jid, pool_info=m.BatchPoolInfo(pool_id=pid)))
    client.create_task(jid, m.BatchTaskCreateOptions(id="t", command_line="true"))
    task = wait_task(client, jid, "t")
    assert task.execution_info.failure_info.code == "StartTaskFailed"
    node = client.get_node(pid, next(iter(client.list_nodes(pid))).id)
    assert node.state == "starttaskfailed"
    assert (node.start_task_info.exit_code, node.start_task_info.failure_info.code) == (4, "FailureExitCode")
    counts = next(c for c in client.list_pool_node_counts() if c.pool_id == pid)
    assert counts.dedicated.start_task_failed == 1
    client.begin_delete_job(jid, polling_interval=1).result()
    client.begin_delete_pool(pid, polling_interval=1).result()


def test_preparation_and_release_status_point_into_the_node(client, pool_id):
    jid = uid("job")
    client.create_job(m.BatchJobCreateOptions(
        id=jid, pool_info=m.BatchPoolInfo(pool_id=pool_id),
        job_preparation_task=m.BatchJobPreparationTask(command_line="/bin/sh -c 'echo prep'"),
        job_release_task=m.BatchJobReleaseTask(command_line="/bin/sh -c 'echo release'")))
    client.create_task(jid, m.BatchTaskCreateOptions(id="t", command_line="true"))
    wait_job_tasks_done(client, jid, 1)
    client.begin_terminate_job(jid, options={"terminateReason": "done"}, polling_interval=1).result()

    def released():
        items = list(client.list_job_preparation_and_release_task_status(jid))
        info = items[0].job_release_task_execution_info if items else None
        return items if info is not None and info.state == "completed" else None
    status = wait_for(released, 20, what="release task completed")[0]
    prep, rel = status.job_preparation_task_execution_info, status.job_release_task_execution_info
    assert prep.task_root_directory == f"workitems/{jid}/job-1/jobpreparation"
    assert rel.task_root_directory == f"workitems/{jid}/job-1/jobrelease"
    for info, out in ((prep, "prep\n"), (rel, "release\n")):
        assert node_path(info.task_root_directory_url) == \
            f"/pools/{pool_id}/nodes/{status.node_id}/files/{info.task_root_directory}"
        assert text(client, node_path(info.task_root_directory_url) + "/stdout.txt") == out
    client.begin_delete_job(jid, polling_interval=1).result()


def test_application_packages_fail_the_task_saying_why(client, job_id):
    client.create_task(job_id, m.BatchTaskCreateOptions(
        id="app", command_line="true",
        application_package_references=[m.BatchApplicationPackageReference(application_id="blender",
                                                                           version="3.6")]))
    t = wait_task(client, job_id, "app")
    fi = t.execution_info.failure_info
    assert t.execution_info.result == "failure" and fi.category == "usererror"
    assert fi.code == "ApplicationPackagesNotSupportedByEmulator" and "blender:3.6" in fi.message


def test_tasks_are_listed_in_id_order(client, job_id):
    ids = ["b", "a10", "C", "a2", "a1"]
    for tid in ids:
        client.create_task(job_id, m.BatchTaskCreateOptions(id=tid, command_line="true"))
    expected = sorted(ids, key=str.lower)  # ["a1", "a10", "a2", "b", "C"]: by id, not by creation
    assert [t.id for t in client.list_tasks(job_id)] == expected
    assert [t.id for t in client.list_tasks(job_id, max_results=2)] == expected  # paged: 3 pages
    assert [t.id for t in client.list_tasks(job_id, filter="startswith(id,'a')", max_results=1)] == expected[:3]
