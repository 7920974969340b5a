"""SharedKey authentication, exactly as the SDK signs requests."""
from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request

import pytest
from azure.batch import BatchClient
from azure.batch import models as m
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import HttpResponseError

from batchemu import DEFAULT_ACCOUNT, DEFAULT_KEY

from .conftest import uid


def test_right_key_is_accepted(client):
    assert list(client.list_pools(filter="id eq 'does-not-exist'")) == []


def test_wellknown_defaults(emu):
    """The emulator started without --account/--key serves the documented well-known account."""
    assert (DEFAULT_ACCOUNT, DEFAULT_KEY[:12]) == ("devbatch", "sWfZNinS7c/+")
    with urllib.request.urlopen(emu.url + "/_emulator/health", timeout=5) as r:
        assert json.loads(r.read())["account"] == DEFAULT_ACCOUNT
    client = BatchClient(emu.url, AzureNamedKeyCredential(DEFAULT_ACCOUNT, DEFAULT_KEY))
    pid = uid("wellknown")
    client.create_pool(m.BatchPoolCreateOptions(id=pid, vm_size="standard_d2s_v3", target_dedicated_nodes=0))
    try:
        assert client.get_pool(pid).id == pid
    finally:
        client.begin_delete_pool(pid, polling_interval=1).result()


def test_wrong_key_is_rejected(emu):
    bad_key = base64.b64encode(b"not-the-key" * 6).decode()
    client = BatchClient(emu.url, AzureNamedKeyCredential(emu.account, bad_key))
    with pytest.raises(HttpResponseError) as exc:
        list(client.list_jobs())
    assert exc.value.status_code == 403
    assert exc.value.error.code == "AuthenticationFailed"


def test_wrong_account_is_rejected(emu):
    client = BatchClient(emu.url, AzureNamedKeyCredential("otheraccount", emu.key))
    with pytest.raises(HttpResponseError) as exc:
        client.get_job_task_counts("anything")
    assert exc.value.status_code == 403
    assert exc.value.error.code == "AuthenticationFailed"


@pytest.mark.parametrize("auth", [None, "Bearer abc.def.ghi", "SharedKey devbatch:AAAA"])
def test_raw_requests_without_valid_auth_get_403(emu, auth):
    req = urllib.request.Request(emu.url + "/jobs?api-version=2025-06-01")
    if auth:
        req.add_header("Authorization", auth)
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(req, timeout=5)
    assert exc.value.code == 403
    assert json.loads(exc.value.read())["code"] == "AuthenticationFailed"


def test_tampered_request_fails_signature(emu):
    """A signature computed for another path does not verify."""
    from azure.batch._patch import BatchSharedKeyAuthPolicy  # the SDK's own signer
    from azure.core.pipeline import PipelineContext, PipelineRequest
    from azure.core.rest import HttpRequest
    req = HttpRequest("GET", emu.url + "/jobs?api-version=2025-06-01")
    policy = BatchSharedKeyAuthPolicy(AzureNamedKeyCredential(emu.account, emu.key))
    policy.on_request(PipelineRequest(req, PipelineContext(None)))
    raw = urllib.request.Request(emu.url + "/pools?api-version=2025-06-01")
    for k, v in req.headers.items():
        raw.add_header(k, v)
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(raw, timeout=5)
    assert exc.value.code == 403
    ok = urllib.request.Request(emu.url + "/jobs?api-version=2025-06-01")
    for k, v in req.headers.items():
        ok.add_header(k, v)
    with urllib.request.urlopen(ok, timeout=5) as r:
        assert r.status == 200


def test_older_api_versions_are_accepted(emu, client, pool_id):
    for version in ("2024-07-01.20.0", "2023-05-01.17.0"):
        old = BatchClient(emu.url, AzureNamedKeyCredential(emu.account, emu.key), api_version=version)
        seen: list[str] = []
        listed = list(old.list_pools(filter=f"id eq '{pool_id}'",
                                     raw_response_hook=lambda r, seen=seen: seen.append(r.http_request.url)))
        assert [(p.id, p.task_slots_per_node) for p in listed] == [(pool_id, 2)]
        assert seen and all(f"api-version={version}" in url for url in seen)
