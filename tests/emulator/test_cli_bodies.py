"""Request bodies exactly as `az batch` (azure-cli 2.91, api-version 2024-02-01.19.0) sends them: numbers as
JSON strings. The service's Json.NET converts what it can ("1" to 1, "true" to true) and rejects the rest
("abc" for an int) with its own messages; so does the emulator. `make test-clients` runs the real `az`."""
from __future__ import annotations

import pytest
from azure.batch import models as m

from .conftest import uid, wait_task
from .test_tasks_api import raw

AZ_API = "api-version=2024-02-01.19.0"  # what azure-cli 2.91's batch commands send


def reason(err: dict) -> str:
    return next(v["value"] for v in err.get("values", []) if v["key"] == "Reason")


def test_az_pool_create_and_resize_bodies(client):
    pid = uid("azpool")
    status, err = raw(client, "POST", f"/pools?{AZ_API}", {
        "id": pid, "vmSize": "standard_d2s_v3",
        "virtualMachineConfiguration": {"imageReference": {"publisher": "canonical", "offer": "ubuntu",
                                                           "sku": "22_04-lts"},
                                        "nodeAgentSKUId": "batch.node.ubuntu 22.04"},
        "targetDedicatedNodes": "1"})
    assert status == 201, err
    pool = client.get_pool(pid)
    assert (pool.target_dedicated_nodes, pool.current_dedicated_nodes) == (1, 1)

    status, err = raw(client, "POST", f"/pools/{pid}/resize?{AZ_API}", {"targetDedicatedNodes": "2"})
    assert status == 202, err
    assert client.get_pool(pid).current_dedicated_nodes == 2

    status, err = raw(client, "POST", f"/pools/{pid}/resize?{AZ_API}", {"targetDedicatedNodes": "abc"})
    assert status == 400 and err["code"] == "InvalidRequestBody"
    assert reason(err) == "Could not convert string to integer: abc. Path 'targetDedicatedNodes'."
    assert client.get_pool(pid).target_dedicated_nodes == 2  # nothing changed
    client.begin_delete_pool(pid, polling_interval=1).result()


def test_az_task_create_and_job_set_bodies(client, job_id):
    status, err = raw(client, "POST", f"/jobs/{job_id}/tasks?{AZ_API}",
                      {"id": "t1", "commandLine": "/bin/sh -c 'exit 3'", "constraints": {"maxTaskRetryCount": "1"}})
    assert status == 201, err
    t = wait_task(client, job_id, "t1")
    assert t.constraints.max_task_retry_count == 1 and t.execution_info.retry_count == 1

    status, err = raw(client, "PATCH", f"/jobs/{job_id}?{AZ_API}", {"priority": "5"})
    assert status == 200, err
    assert client.get_job(job_id).priority == 5


@pytest.mark.parametrize("body,converted", [
    ({"priority": " +7 "}, ("priority", 7)),               # int.TryParse: white space and a sign
    ({"allowTaskPreemption": "True"}, ("allow_task_preemption", True)),   # bool.TryParse: any case
    ({"allowTaskPreemption": "false"}, ("allow_task_preemption", False)),
    ({"maxParallelTasks": 3}, ("max_parallel_tasks", 3)),  # plain JSON numbers still work
])
def test_strings_json_net_converts(client, job_id, body, converted):
    status, err = raw(client, "PATCH", f"/jobs/{job_id}?{AZ_API}", body)
    assert status == 200, err
    attr, value = converted
    assert getattr(client.get_job(job_id), attr) == value


@pytest.mark.parametrize("body,message", [
    ({"priority": "abc"}, "Could not convert string to integer: abc. Path 'priority'."),
    ({"priority": "1.5"}, "Could not convert string to integer: 1.5. Path 'priority'."),
    ({"priority": 1.5}, "Input string '1.5' is not a valid integer. Path 'priority'."),
    ({"priority": "3000000000"}, "JSON integer 3000000000 is too large or small for an Int32. Path 'priority'."),
    ({"priority": True}, "Unexpected character encountered while parsing value: t. Path 'priority'."),
    ({"allowTaskPreemption": "yes"}, "Could not convert string to boolean: yes. Path 'allowTaskPreemption'."),
    ({"constraints": {"maxTaskRetryCount": "x1"}},
     "Could not convert string to integer: x1. Path 'constraints.maxTaskRetryCount'."),
    ({"metadata": [{"name": {"a": 1}, "value": "v"}]},
     "Unexpected character encountered while parsing value: {. Path 'metadata[0].name'."),
])
def test_values_json_net_rejects(client, job_id, body, message):
    before = client.get_job(job_id).etag
    status, err = raw(client, "PATCH", f"/jobs/{job_id}?{AZ_API}", body)
    assert status == 400 and err["code"] == "InvalidRequestBody"
    assert reason(err) == message
    assert client.get_job(job_id).etag == before


def test_numbers_and_booleans_read_as_text_where_a_string_is_expected(client, job_id):
    """Json.NET reads a number or a boolean literal as its text for a string property."""
    status, err = raw(client, "POST", f"/jobs/{job_id}/tasks?{AZ_API}", {"id": 42, "commandLine": "true",
                                                                          "displayName": False})
    assert status == 201, err
    t = client.get_task(job_id, "42")
    assert t.display_name == "false"


def test_an_empty_string_is_null(client):
    """Json.NET reads "" as null for a number: the property is simply not set."""
    pid = uid("azpool")
    status, err = raw(client, "POST", f"/pools?{AZ_API}", {"id": pid, "vmSize": "x", "targetDedicatedNodes": "",
                                                            "targetLowPriorityNodes": "1"})
    assert status == 201, err
    pool = client.get_pool(pid)
    assert (pool.target_dedicated_nodes, pool.target_low_priority_nodes) == (0, 1)
    client.begin_delete_pool(pid, polling_interval=1).result()


def test_autoscale_bodies(client):
    pid = uid("azpool")
    client.create_pool(m.BatchPoolCreateOptions(id=pid, vm_size="x", target_dedicated_nodes=0))
    status, err = raw(client, "POST", f"/pools/{pid}/enableautoscale?{AZ_API}",
                      {"autoScaleFormula": "$TargetDedicatedNodes=3;"})
    assert status == 200, err
    status, run = raw(client, "POST", f"/pools/{pid}/evaluateautoscale?{AZ_API}",
                      {"autoScaleFormula": "$TargetDedicatedNodes=2;"})
    assert status == 200 and "$TargetDedicatedNodes=2" in run["results"]
    assert client.get_pool(pid).target_dedicated_nodes == 3
    assert len(list(client.list_nodes(pid))) == 3
    client.begin_delete_pool(pid, polling_interval=1).result()
