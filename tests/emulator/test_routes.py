"""Every operation of the Batch REST API (api-version 2025-06-01) has a route: the emulated ones answer as
the service, the rest 400 NotSupportedByEmulator naming the operation; never 404 InvalidUri or 405.

The operations are taken from the installed azure-batch SDK, which is generated from that spec: each of its
``build_batch_*_request`` functions builds one operation's verb and URL."""
from __future__ import annotations

import inspect

import pytest
from azure.batch._operations import _operations as sdk_ops
from azure.core.exceptions import HttpResponseError

from batchemu.api import NOT_EMULATED, ROUTES
from batchemu.routing import Router


def spec_operations() -> list[tuple[str, str, str]]:
    """(SDK operation, verb, URL with every id "nosuch") for each operation of the spec."""
    out = []
    for name, build in sorted(vars(sdk_ops).items()):
        if not (name.startswith("build_batch_") and name.endswith("_request")):
            continue
        required = {p.name: "nosuch" for p in inspect.signature(build).parameters.values()
                    if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        try:
            req = build(**required)
        except KeyError:  # the operations with a body need their content type
            req = build(**required, content_type="application/json; odata=minimalmetadata")
        out.append((name[len("build_batch_"):-len("_request")], req.method, req.url))
    return out


OPERATIONS = spec_operations()


def test_the_sdk_lists_the_whole_api():
    assert len(OPERATIONS) == 72  # the 72 operations of 2025-06-01 (azure-batch 15.1.0 is pinned)
    assert {verb for _, verb, _ in OPERATIONS} == {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"}


def test_the_route_tables_cover_the_spec_and_nothing_else():
    emulated, not_emulated = Router(), Router()
    for verb, template, _ in ROUTES:
        emulated.add(verb, template, print)
    for verb, template, _ in NOT_EMULATED:
        not_emulated.add(verb, template, print)
    for op, verb, url in OPERATIONS:
        path = url.split("?")[0]
        hits = 0
        for router in (emulated, not_emulated):
            try:
                router.match(verb, path)
                hits += 1
            except Exception:
                pass
        assert hits == 1, f"{op}: {verb} {path} is routed {hits} times"
    assert len(ROUTES) + len(NOT_EMULATED) == len(OPERATIONS)


@pytest.mark.parametrize("op,verb,url", OPERATIONS, ids=[o[0] for o in OPERATIONS])
def test_every_operation_answers_as_the_service_or_names_itself(client, op, verb, url):
    from azure.core.rest import HttpRequest
    body = b"{}" if verb in ("POST", "PUT", "PATCH") else None
    headers = {"Content-Type": "application/json; odata=minimalmetadata"} if body else {}
    try:
        resp = client.send_request(HttpRequest(verb, url, content=body, headers=headers))
    except HttpResponseError as e:
        resp = e.response
    err = resp.json() if resp.content else {}
    assert resp.status_code not in (405,), (op, resp.status_code, err)
    assert err.get("code") != "InvalidUri", (op, err)
    operation = not_emulated_operation(verb, url.split("?")[0])
    if operation is not None:
        assert resp.status_code == 400 and err["code"] == "NotSupportedByEmulator"
        assert operation in err["message"]["value"]
        assert {"key": "Operation", "value": operation} in err["values"]
    else:
        assert err.get("code") != "NotSupportedByEmulator", op


def not_emulated_operation(verb: str, path: str) -> str | None:
    """The spec's operation id if the emulator does not emulate this operation."""
    for v, template, operation in NOT_EMULATED:
        router = Router()
        router.add(v, template, print)
        try:
            router.match(verb, path)
            return operation
        except Exception:
            continue
    return None
