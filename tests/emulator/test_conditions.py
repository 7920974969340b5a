"""Conditional requests are checked where the write happens: two writers with the same If-Match ETag can
never both succeed (the check and the write are one step under the engine's lock)."""
from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest
from azure.batch import models as m
from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError

from batchemu import DEFAULT_ACCOUNT, DEFAULT_KEY
from batchemu.engine import Engine
from batchemu.server import make_server

from .conftest import make_client, uid

WRITERS = 4
ROUNDS = 15


def _race(write, etag: str) -> list[tuple[int, object]]:
    """`WRITERS` threads call write(i, etag) at once; (status, ETag answered or error code) per writer."""
    barrier = threading.Barrier(WRITERS)
    results: list[tuple[int, object]] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        barrier.wait()
        try:
            headers = write(i, etag)
            outcome: tuple[int, object] = (200, headers["ETag"])
        except HttpResponseError as exc:
            outcome = (exc.status_code or 0, exc.error.code if exc.error else None)
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(WRITERS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    return results


def _headers(_response, _deserialized, headers):
    return headers


class _YieldingRLock(threading._PyRLock):  # type: ignore[name-defined,misc]
    """The engine's lock, but whoever releases it last steps aside for a few milliseconds: any code path
    that checks a condition, releases the lock and takes it again to write lets the other writers in."""

    def release(self):
        super().release()
        if not self._is_owned():
            time.sleep(0.005)


@pytest.fixture
def yielding_emulator(tmp_path):
    """An in-process emulator whose lock hands over at every release (the real server and the real SDK)."""
    engine = Engine(str(tmp_path), DEFAULT_ACCOUNT, max_concurrency=1, container_mode="host")
    lock = _YieldingRLock()
    engine.lock, engine.cv, engine.state_cv = lock, threading.Condition(lock), threading.Condition(lock)
    engine.load()
    server = make_server(engine, "127.0.0.1", 0, DEFAULT_ACCOUNT, DEFAULT_KEY)
    engine.start()
    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    serving.start()
    try:
        yield SimpleNamespace(url=f"http://127.0.0.1:{server.server_address[1]}", account=DEFAULT_ACCOUNT,
                              key=DEFAULT_KEY)
    finally:
        server.shutdown()
        server.server_close()
        engine.stop()


@pytest.mark.parametrize("resource", ["job", "pool"])
def test_concurrent_updates_with_the_same_if_match_only_one_wins(client, job_id, pool_id, resource):
    _only_one_wins(client, job_id, pool_id, resource)


def test_only_one_wins_even_when_the_lock_changes_hands_at_every_release(yielding_emulator):
    client = make_client(yielding_emulator)
    client.create_pool(m.BatchPoolCreateOptions(id="p", vm_size="x", target_dedicated_nodes=0))
    client.create_job(m.BatchJobCreateOptions(id="j", pool_info=m.BatchPoolInfo(pool_id="p")))
    _only_one_wins(client, "j", "p", "job", rounds=3)


def _only_one_wins(client, job_id, pool_id, resource, rounds=ROUNDS):
    if resource == "job":
        def write(i, etag):
            return client.update_job(job_id, m.BatchJobUpdateOptions(priority=i + 1), etag=etag,
                                     match_condition=MatchConditions.IfNotModified, cls=_headers)

        def read():
            job = client.get_job(job_id)
            return job.etag, job.priority
    else:
        def write(i, etag):
            return client.update_pool(pool_id, m.BatchPoolUpdateOptions(
                metadata=[m.BatchMetadataItem(name="writer", value=str(i + 1))]), etag=etag,
                match_condition=MatchConditions.IfNotModified, cls=_headers)

        def read():
            pool = client.get_pool(pool_id)
            return pool.etag, int(pool.metadata[0].value) if pool.metadata else None

    for _ in range(rounds):
        etag, _ = read()
        results = _race(write, etag)
        wins = [r for r in results if r[0] == 200]
        assert len(results) == WRITERS
        assert len(wins) == 1, results
        assert sorted(r for r in results if r[0] != 200) == [(412, "ConditionNotMet")] * (WRITERS - 1)
        new_etag, value = read()
        assert wins[0][1] == new_etag != etag  # the answered ETag is the version now stored: nobody slipped in
        assert value is not None and 1 <= value <= WRITERS


def test_a_task_update_with_a_stale_etag_is_refused(client):
    pid, jid = uid("held"), uid("held")
    client.create_pool(m.BatchPoolCreateOptions(id=pid, vm_size="x", target_dedicated_nodes=0))  # runs nothing
    client.create_job(m.BatchJobCreateOptions(id=jid, pool_info=m.BatchPoolInfo(pool_id=pid)))
    try:
        client.create_task(jid, m.BatchTaskCreateOptions(id="t", command_line="true"))
        task = client.get_task(jid, "t")
        task.constraints = m.BatchTaskConstraints(max_task_retry_count=3)
        headers = client.replace_task(jid, "t", task, etag=task.etag, match_condition=MatchConditions.IfNotModified,
                                      cls=_headers)
        assert headers["ETag"] == client.get_task(jid, "t").etag != task.etag
        with pytest.raises(HttpResponseError) as exc:
            client.replace_task(jid, "t", task, etag=task.etag, match_condition=MatchConditions.IfNotModified)
        assert exc.value.status_code == 412 and exc.value.error.code == "ConditionNotMet"
        assert client.get_task(jid, "t").constraints.max_task_retry_count == 3
    finally:
        client.begin_delete_job(jid, polling_interval=1).result()
        client.begin_delete_pool(pid, polling_interval=1).result()
