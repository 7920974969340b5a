"""The unauthenticated /_emulator control plane and server robustness."""
from __future__ import annotations

import json
import socket
import urllib.request

import pytest
from azure.batch import models as m

from .conftest import control, uid


def test_health(emu):
    with urllib.request.urlopen(emu.url + "/_emulator/health", timeout=5) as r:
        body = json.loads(r.read())
    assert r.status == 200 and body["status"] == "ok" and body["account"] == emu.account


def test_stats_count_batch_calls_by_operation(client, emu, job_id):
    status, _ = control(emu, "/_emulator/stats/reset")
    assert status == 200
    for _ in range(3):
        client.get_job_task_counts(job_id)
    client.get_job(job_id)
    client.create_tasks(job_id, [m.BatchTaskCreateOptions(id=f"s{i}", command_line="true") for i in range(150)])
    status, stats = control(emu, "/_emulator/stats", method="GET")
    assert status == 200
    req = stats["requests"]
    assert req["GET /jobs/{id}/taskcounts"] == 3
    assert req["GET /jobs/{id}"] == 1
    assert req["POST /jobs/{id}/addtaskcollection"] == 2
    assert stats["total"] == 6


def test_faults_are_listed_and_cleared(emu):
    jid, tid = uid("j"), "t"
    control(emu, f"/_emulator/jobs/{jid}/tasks/{tid}/fail-next", {"count": 2})
    control(emu, f"/_emulator/jobs/{jid}/tasks/{tid}/slow", {"seconds": 1.5})
    status, faults = control(emu, "/_emulator/faults", method="GET")
    mine = [f for f in faults["value"] if f["jobId"] == jid.lower()]
    assert mine and mine[0]["fail_next"] == {"count": 2} and mine[0]["slow"]["seconds"] == 1.5
    status, _ = control(emu, f"/_emulator/jobs/{jid}/tasks/{tid}/faults", method="DELETE")
    assert status == 200
    status, faults = control(emu, "/_emulator/faults", method="GET")
    assert not [f for f in faults["value"] if f["jobId"] == jid.lower()]
    assert control(emu, f"/_emulator/jobs/{jid}/tasks/{tid}/slow", {"seconds": "soon"})[0] == 400
    assert control(emu, f"/_emulator/jobs/{jid}/tasks/{tid}/fail-next", {"count": "x"})[0] == 400


def _raw(emu, payload: bytes) -> bytes:
    with socket.create_connection((emu.host, emu.port), timeout=5) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        try:
            while True:
                c = s.recv(65536)
                if not c:
                    break
                chunks.append(c)
        except TimeoutError:
            pass
    return b"".join(chunks)


@pytest.mark.parametrize("payload", [
    b"GARBAGE\r\n\r\n",
    b"GET /jobs?api-version=2025-06-01 HTTP/1.1\r\nHost: x\r\nContent-Length: banana\r\n\r\n",
    b"POST /jobs?api-version=2025-06-01 HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{",
    b"GET /jobs/%ZZ%00/tasks?api-version=%%% HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /_emulator/jobs/j/tasks/t/slow HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)),
])
def test_garbage_never_kills_the_server(emu, client, pool_id, payload):
    _raw(emu, payload)
    with urllib.request.urlopen(emu.url + "/_emulator/health", timeout=5) as r:
        assert r.status == 200
    # authenticated calls still work, and the state from before the garbage is intact
    assert [p.id for p in client.list_pools(filter=f"id eq '{pool_id}'")] == [pool_id]
