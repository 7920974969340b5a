"""Fixtures for the Batch emulator tests: everything goes through the real azure-batch SDK."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid

import pytest
from azure.batch import BatchClient
from azure.batch import models as m
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import ResourceNotFoundError

from tests.services import wait_for  # noqa: F401  (re-exported for the emulator tests)


def uid(prefix: str = "x") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def make_client(emu) -> BatchClient:
    return BatchClient(endpoint=emu.url, credential=AzureNamedKeyCredential(emu.account, emu.key))


def wait_task(client, job_id, task_id, state="completed", timeout=20.0):
    def check():
        t = client.get_task(job_id, task_id)
        return t if t.state == state else None
    return wait_for(check, timeout, what=f"task {task_id} {state}")


def wait_job_tasks_done(client, job_id, n, timeout=30.0):
    def check():
        c = client.get_job_task_counts(job_id).task_counts
        return c if c.completed >= n else None
    return wait_for(check, timeout, interval=0.1, what=f"{n} tasks of {job_id} completed")


def control(emu, path: str, body: dict | None = None, method: str = "POST"):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(emu.url + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def read_file(client, job_id, task_id, name) -> str:
    return b"".join(client.download_task_file(job_id, task_id, name)).decode()


@pytest.fixture(scope="session")
def emu(batch_emulator):
    return batch_emulator


@pytest.fixture(scope="session")
def client(emu) -> BatchClient:
    return make_client(emu)


@pytest.fixture
def pool_id(client):
    pid = uid("pool")
    client.create_pool(m.BatchPoolCreateOptions(id=pid, vm_size="standard_d2s_v3", target_dedicated_nodes=1,
                                                task_slots_per_node=2))
    yield pid
    try:
        client.begin_delete_pool(pid, polling_interval=1).result()
    except ResourceNotFoundError:
        pass  # the test deleted it already; any other failure fails the teardown


@pytest.fixture
def job_id(client, pool_id):
    jid = uid("job")
    client.create_job(m.BatchJobCreateOptions(id=jid, pool_info=m.BatchPoolInfo(pool_id=pool_id),
                                              uses_task_dependencies=True))
    yield jid
    try:
        client.begin_delete_job(jid, polling_interval=1).result()
    except ResourceNotFoundError:
        pass  # the test deleted it already; any other failure fails the teardown
