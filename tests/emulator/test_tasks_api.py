"""Task API surface: create, add collection limits, TaskExists, list filter/select/paging, counts, updates."""
from __future__ import annotations

import json

import pytest
from azure.batch import models as m
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.core.rest import HttpRequest

from .conftest import uid, wait_for, wait_job_tasks_done, wait_task

API = "api-version=2025-06-01"


def raw(client, method, path, body=None, content_type="application/json; odata=minimalmetadata", headers=None):
    """A signed raw request through the SDK pipeline; returns (status, json|None)."""
    h = {"Content-Type": content_type} if body is not None else {}
    h.update(headers or {})
    content = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    try:
        resp = client.send_request(HttpRequest(method, path, content=content, headers=h))
    except HttpResponseError as e:
        resp = e.response
    try:
        return resp.status_code, resp.json()
    except Exception:
        return resp.status_code, None


def test_create_get_task_defaults(client, job_id):
    client.create_task(job_id, m.BatchTaskCreateOptions(id="t1", command_line="true", display_name="one"))
    t = client.get_task(job_id, "t1")
    assert t.id == "t1" and t.display_name == "one" and t.command_line == "true"
    assert t.execution_info.retry_count == 0 and t.execution_info.requeue_count == 0
    assert t.constraints.max_task_retry_count == 0 and t.required_slots == 1
    with pytest.raises(ResourceExistsError) as exc:
        client.create_task(job_id, m.BatchTaskCreateOptions(id="T1", command_line="true"))
    assert exc.value.error.code == "TaskExists"
    with pytest.raises(ResourceNotFoundError) as exc:
        client.get_task(job_id, "nope")
    assert exc.value.error.code == "TaskNotFound"
    with pytest.raises(ResourceNotFoundError) as exc:
        client.create_task(uid("nojob"), m.BatchTaskCreateOptions(id="t1", command_line="true"))
    assert exc.value.error.code == "JobNotFound"


def test_add_collection_results_and_task_exists(client, job_id):
    tasks = [m.BatchTaskCreateOptions(id=f"c{i}", command_line="true") for i in range(3)]
    res = client.create_task_collection(job_id, m.BatchTaskGroup(task_values=tasks))
    assert sorted(r.task_id for r in res.result_values) == ["c0", "c1", "c2"]
    assert all(r.status == "success" and r.etag and r.location for r in res.result_values)
    res = client.create_task_collection(job_id, m.BatchTaskGroup(task_values=tasks[:2] + [
        m.BatchTaskCreateOptions(id="c3", command_line="true")]))
    by_id = {r.task_id: r for r in res.result_values}
    assert by_id["c0"].status == "clienterror" and by_id["c0"].error.code == "TaskExists"
    assert by_id["c1"].error.code == "TaskExists"
    assert by_id["c3"].status == "success"
    # the SDK helper treats TaskExists as success (idempotent resubmission)
    client.create_tasks(job_id, tasks)


def test_add_collection_limits(client, job_id):
    too_many = {"value": [{"id": f"m{i}", "commandLine": "true"} for i in range(101)]}
    status, body = raw(client, "POST", f"/jobs/{job_id}/addtaskcollection?{API}", too_many)
    assert status == 400 and body["code"] == "InvalidPropertyValue"
    big = {"value": [{"id": f"b{i}", "commandLine": "echo " + "x" * 11000} for i in range(100)]}
    status, body = raw(client, "POST", f"/jobs/{job_id}/addtaskcollection?{API}", big)
    assert status == 413 and body["code"] == "RequestBodyTooLarge"
    # the SDK's create_tasks splits on RequestBodyTooLarge and gets everything in
    tasks = [m.BatchTaskCreateOptions(id=f"b{i}", command_line="echo " + "x" * 11000) for i in range(100)]
    result = client.create_tasks(job_id, tasks)
    assert len(result.result_values) == 100
    c = client.get_job_task_counts(job_id).task_counts
    assert c.active + c.running + c.completed == 100


def test_list_filter_select_paging(client, job_id):
    ok = [m.BatchTaskCreateOptions(id=f"ok{i:03d}", command_line="true") for i in range(120)]
    bad = [m.BatchTaskCreateOptions(id=f"bad{i}", command_line="false") for i in range(3)]
    client.create_tasks(job_id, ok + bad)
    wait_job_tasks_done(client, job_id, 123, timeout=40)
    # paging: 123 tasks in pages of 50 -> the SDK follows odata.nextLink (signed like any request)
    all_tasks = list(client.list_tasks(job_id, max_results=50))
    assert len(all_tasks) == 123 and len({t.id for t in all_tasks}) == 123
    failed = list(client.list_tasks(job_id, filter="executionInfo/result eq 'failure'"))
    assert sorted(t.id for t in failed) == ["bad0", "bad1", "bad2"]
    assert all(t.execution_info.exit_code == 1 for t in failed)
    done = list(client.list_tasks(job_id, filter="state eq 'completed' and executionInfo/exitCode eq 0",
                                  select=["id", "state"], max_results=40))
    assert len(done) == 120 and done[0].command_line is None and done[0].state == "completed"
    some = list(client.list_tasks(job_id, filter="startswith(id, 'ok11') or id eq 'bad1'"))
    assert sorted(t.id for t in some) == ["bad1"] + [f"ok11{i}" for i in range(10)]
    counts = client.get_job_task_counts(job_id)
    assert counts.task_counts.completed == 123 and counts.task_counts.succeeded == 120
    assert counts.task_counts.failed == 3 and counts.task_counts.active == 0
    assert counts.task_slot_counts.completed == 123
    with pytest.raises(HttpResponseError) as exc:
        list(client.list_tasks(job_id, filter="state eq"))
    assert exc.value.status_code == 400 and exc.value.error.code == "InvalidQueryParameterValue"


def test_task_counts_running_and_active(client, pool_id):
    jid = uid("job")
    client.create_job(m.BatchJobCreateOptions(id=jid, pool_info=m.BatchPoolInfo(pool_id=pool_id)))
    client.create_tasks(jid, [m.BatchTaskCreateOptions(id=f"s{i}", command_line="sleep 20") for i in range(4)])

    def two_running():
        c = client.get_job_task_counts(jid).task_counts
        return c if c.running == 2 else None
    c = wait_for(two_running, what="2 running (pool has 2 slots)")
    assert c.active == 2 and c.completed == 0
    client.begin_delete_job(jid, polling_interval=1).result()


def test_update_terminate_reactivate_delete(client, job_id):
    client.create_task(job_id, m.BatchTaskCreateOptions(id="long", command_line="sleep 30"))
    t = client.get_task(job_id, "long")
    t.constraints = m.BatchTaskConstraints(max_task_retry_count=3)
    client.replace_task(job_id, "long", t)
    assert client.get_task(job_id, "long").constraints.max_task_retry_count == 3
    wait_task(client, job_id, "long", state="running")
    client.terminate_task(job_id, "long")
    t = wait_task(client, job_id, "long")
    assert t.execution_info.result == "failure" and t.execution_info.failure_info.code == "TaskEnded"
    with pytest.raises(HttpResponseError) as exc:
        client.terminate_task(job_id, "long")
    assert exc.value.status_code == 409 and exc.value.error.code == "TaskCompleted"
    client.reactivate_task(job_id, "long")
    t = client.get_task(job_id, "long")
    assert t.state in ("active", "preparing", "running") and t.execution_info.retry_count == 0
    client.delete_task(job_id, "long")
    with pytest.raises(ResourceNotFoundError):
        client.get_task(job_id, "long")
    client.create_task(job_id, m.BatchTaskCreateOptions(id="ok", command_line="true"))
    wait_task(client, job_id, "ok")
    with pytest.raises(HttpResponseError) as exc:
        client.reactivate_task(job_id, "ok")
    assert exc.value.status_code == 409


@pytest.mark.parametrize("body,code", [
    (b"{not json", "InvalidRequestBody"),
    (b"[]", "InvalidRequestBody"),
    (json.dumps({"id": "t", "commandLine": "true", "bogus": 1}).encode(), "InvalidRequestBody"),
    (json.dumps({"id": "bad id!", "commandLine": "true"}).encode(), "InvalidPropertyValue"),
    (json.dumps({"id": "x" * 65, "commandLine": "true"}).encode(), "InvalidPropertyValue"),
    (json.dumps({"id": "t"}).encode(), "MissingRequiredProperty"),
    (json.dumps({"id": {"n": 5}, "commandLine": "true"}).encode(), "InvalidRequestBody"),
    (json.dumps({"id": "t", "commandLine": "true", "requiredSlots": "two"}).encode(), "InvalidRequestBody"),
    (json.dumps({"id": "t", "commandLine": "true", "constraints": {"maxWallClockTime": "5 minutes"}}).encode(),
     "InvalidPropertyValue"),
    (json.dumps({"id": "t", "commandLine": "true", "resourceFiles": [{"filePath": "x"}]}).encode(),
     "InvalidPropertyValue"),
    (b"\xff\xfe garbage", "InvalidRequestBody"),
])
def test_malformed_task_bodies_get_400(client, job_id, body, code):
    status, err = raw(client, "POST", f"/jobs/{job_id}/tasks?{API}", body)
    assert status == 400, err
    assert err["code"] == code and err["message"]["lang"] == "en-US" and err["message"]["value"]
    # the server is still fine
    assert client.get_job(job_id).id == job_id


def test_other_bad_requests(client, job_id, emu):
    assert raw(client, "GET", f"/jobs/{job_id}")[1]["code"] == "MissingRequiredQueryParameter"
    assert raw(client, "GET", f"/jobs/{job_id}?api-version=banana")[0] == 400
    status, err = raw(client, "GET", f"/jobs/{job_id}/tasks?{API}&maxresults=5000")
    assert status == 400
    status, err = raw(client, "POST", f"/jobs?{API}", {"id": "j", "poolInfo": {"poolId": "p"}, "unknownThing": True})
    assert status == 400 and err["code"] == "InvalidRequestBody"
    status, err = raw(client, "POST", f"/jobs?{API}", {"id": "j" * 65, "poolInfo": {"poolId": "p"}})
    assert status == 400 and err["code"] == "InvalidPropertyValue"
    status, err = raw(client, "POST", f"/pools?{API}", b"x" * (1024 * 1024 + 10))
    assert status == 413 and err["code"] == "RequestBodyTooLarge"
    status, err = raw(client, "GET", f"/nosuchthing?{API}")
    assert status == 404
    status, err = raw(client, "PATCH", f"/jobs/{job_id}/taskcounts?{API}", {})
    assert status == 405
    assert client.get_job(job_id).id == job_id
    import urllib.request
    with urllib.request.urlopen(emu.url + "/_emulator/health", timeout=5) as r:
        assert json.loads(r.read())["status"] == "ok"


def test_conditional_headers(client, job_id):
    from azure.core import MatchConditions
    client.create_task(job_id, m.BatchTaskCreateOptions(id="c", command_line="true"))
    etag = client.get_task(job_id, "c").etag
    wait_task(client, job_id, "c")
    with pytest.raises(HttpResponseError) as exc:
        client.get_job(job_id, etag="0xDEAD", match_condition=MatchConditions.IfNotModified)
    assert exc.value.status_code == 412
    job = client.get_job(job_id)
    assert client.get_job(job_id, etag=job.etag, match_condition=MatchConditions.IfNotModified).id == job_id
    assert etag
