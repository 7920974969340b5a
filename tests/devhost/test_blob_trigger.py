"""Blob trigger against Azurite: receipts, once per ETag, restarts, retries and the poison queue."""
from __future__ import annotations

import base64
import json
import threading

import azure.functions as func
import pytest

from devhost.blob_trigger import HOSTS_CONTAINER, POISON_QUEUE, shared_queue_name

from .helpers import queue_texts, wait_until


@pytest.fixture
def blobs_app(load_app, blob_service, uid, storage):
    app, mod = load_app("blobs")
    bp = __import__("blobs_bp")
    bp.reset()
    container = f"in-{uid}"
    blob_service.create_container(container)
    settings = {"IN_CONTAINER": container, "EG_CONTAINER": f"eg-{uid}", "DATA": storage.connection_string}
    return app, bp, container, settings


def upload(blob_service, container: str, name: str, data: bytes) -> str:
    return blob_service.get_blob_client(container, name).upload_blob(data, overwrite=True)["etag"]


def receipts(blob_service, host_id: str) -> dict[str, dict]:
    c = blob_service.get_container_client(HOSTS_CONTAINER)
    return {b.name: b.metadata for b in c.list_blobs(name_starts_with=f"blobreceipts/{host_id}/", include=["metadata"])}


def test_a_blob_is_processed_once_per_etag_even_across_a_restart(blobs_app, make_host, blob_service, uid):
    app, bp, container, settings = blobs_app
    etag = upload(blob_service, container, "jobs/a.json", b'{"job": 1}')
    host = make_host(app, "blobs", settings, host_id=f"h-{uid}")
    first = host.run_blob_triggers_once()
    assert [r.succeeded for r in first] == [True]
    assert host.run_blob_triggers_once() == []  # same ETag: nothing new
    assert len(bp.CALLS) == 1

    # the receipt is where the real host keeps it, and it is complete
    rec = receipts(blob_service, f"h-{uid}")
    name = f'blobreceipts/h-{uid}/Host.Functions.intake/{etag}/{container}/jobs/a.json'
    assert set(rec) == {name}
    assert not any(k.lower() == "incomplete" for k in rec[name])

    # a new host process (same host id) reads the receipts and does not re-run the blob
    host.close()
    restarted = make_host(app, "blobs", settings, host_id=f"h-{uid}")
    assert restarted.run_blob_triggers_once() == []
    assert len(bp.CALLS) == 1
    # ...while a host with another id has no receipts, so it processes it
    other = make_host(app, "blobs", settings, host_id=f"o-{uid}")
    assert len(other.run_blob_triggers_once()) == 1


def test_a_reupload_is_a_new_version_and_a_new_invocation(blobs_app, make_host, blob_service, uid):
    app, bp, container, settings = blobs_app
    host = make_host(app, "blobs", settings, host_id=f"h-{uid}")
    e1 = upload(blob_service, container, "job.json", b"v1")
    assert len(host.run_blob_triggers_once()) == 1
    e2 = upload(blob_service, container, "job.json", b"v2")
    assert e1 != e2
    assert len(host.run_blob_triggers_once()) == 1
    assert [c["data"] for c in bp.CALLS] == [b"v1", b"v2"]
    assert host.run_blob_triggers_once() == []


def test_the_function_gets_an_inputstream_built_like_the_workers(blobs_app, make_host, blob_service, uid, storage):
    app, bp, container, settings = blobs_app
    blob_service.get_blob_client(container, "dir/x y.csv").upload_blob(
        b"a,b\n1,2\n", metadata={"owner": "me"})
    host = make_host(app, "blobs", settings, host_id=f"h-{uid}")
    host.run_blob_triggers_once()
    (call,) = bp.CALLS
    assert call["type"] is func.blob.InputStream
    assert call["name"] == f"{container}/dir/x y.csv"
    assert call["length"] == 8 and call["data"] == b"a,b\n1,2\n"
    assert call["uri"] == f"http://127.0.0.1:{storage.blob_port}/devstoreaccount1/{container}/dir/x%20y.csv"
    assert call["properties"]["BlobType"] == "BlockBlob" and call["properties"]["ContentLength"] == 8
    assert call["metadata"] == {"owner": "me"}


def test_five_failures_put_a_poison_message_and_complete_the_receipt(blobs_app, make_host, blob_service,
                                                                     queue_service, uid):
    app, bp, container, settings = blobs_app
    poison = queue_service.get_queue_client(POISON_QUEUE)
    before = set(queue_texts(poison))
    etag = upload(blob_service, container, "bad.json", b"fail: this job file is broken")
    host = make_host(app, "blobs", settings, host_id=f"h-{uid}")
    attempts = []
    for _ in range(10):  # bounded: the real host stops at 5
        attempts += host.run_blob_triggers_once()
        if len(attempts) >= 5 and not host.process_blob_queue():
            break
    assert [r.succeeded for r in attempts] == [False] * 5
    assert [c["attempt"] for c in bp.CALLS] == [1, 2, 3, 4, 5]
    assert [r.details["dequeue_count"] for r in attempts] == [1, 2, 3, 4, 5]

    new = [json.loads(t) for t in set(queue_texts(poison)) - before]
    assert new == [{"Type": "BlobTrigger", "FunctionId": "Host.Functions.intake", "BlobType": "BlockBlob",
                    "ContainerName": container, "BlobName": "bad.json", "ETag": etag}]
    # the stored text is base64 (the host's default encoding)
    raw = [t for t in queue_texts(poison, decode=False) if base64.b64decode(t).decode() in
           {json.dumps(m, separators=(",", ":")) for m in new}]
    assert len(raw) == 1
    # nothing left to retry, and the receipt says done: a later scan or restart does nothing
    assert queue_texts(queue_service.get_queue_client(shared_queue_name(f"h-{uid}"))) == []
    assert host.run_blob_triggers_once() == []
    assert len(bp.CALLS) == 5


def test_a_transient_failure_is_retried_until_it_succeeds(blobs_app, make_host, blob_service, uid):
    app, bp, container, settings = blobs_app
    upload(blob_service, container, "flaky.json", b"flaky:2")
    host = make_host(app, "blobs", settings, host_id=f"h-{uid}")
    outcomes = []
    for _ in range(5):
        outcomes += [r.succeeded for r in host.run_blob_triggers_once()]
        if outcomes and outcomes[-1]:
            break
    assert outcomes == [False, False, True]
    assert host.run_blob_triggers_once() == []


def test_a_blob_deleted_before_it_runs_is_dropped(blobs_app, make_host, blob_service, uid):
    app, bp, container, settings = blobs_app
    upload(blob_service, container, "gone.json", b"x")
    host = make_host(app, "blobs", settings, host_id=f"h-{uid}")
    assert host.poll_blobs() == 1
    blob_service.get_blob_client(container, "gone.json").delete_blob()
    assert host.process_blob_queue() == []
    assert bp.CALLS == [] and host.process_blob_queue() == []


def test_event_grid_source_is_simulated_by_polling_and_path_patterns_apply(blobs_app, make_host, blob_service,
                                                                           uid, caplog):
    app, bp, container, settings = blobs_app
    eg = settings["EG_CONTAINER"]
    blob_service.create_container(eg)
    upload(blob_service, eg, "jobs/one.json", b"{}")
    upload(blob_service, eg, "jobs/skip.txt", b"{}")      # does not match {name}.json
    upload(blob_service, eg, "other/two.json", b"{}")     # outside jobs/
    with caplog.at_level("INFO", logger="devhost"):
        host = make_host(app, "blobs", settings, host_id=f"h-{uid}")
        results = host.run_blob_triggers_once("events")
    assert [c["name"] for c in bp.CALLS] == [f"{eg}/jobs/one.json"]
    assert results[0].reason == f"New blob detected(EventGrid): {eg}/jobs/one.json"
    assert "simulates Event Grid delivery by polling" in caplog.text


def test_two_hosts_with_one_host_id_enqueue_each_version_once(blobs_app, make_host, blob_service, uid):
    app, bp, container, settings = blobs_app
    for i in range(6):
        upload(blob_service, container, f"b{i}.json", b"x")
    a = make_host(app, "blobs", settings, host_id=f"h-{uid}")
    b = make_host(app, "blobs", settings, host_id=f"h-{uid}")
    counts: list[int] = []
    barrier = threading.Barrier(2)

    def scan(h):
        barrier.wait()
        total = 0
        for _ in range(5):  # "busy" versions are retried on later polls
            total += h.poll_blobs()
        counts.append(total)

    threads = [threading.Thread(target=scan, args=(h,)) for h in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sum(counts) == 6
    ran = a.process_blob_queue() + b.process_blob_queue()
    assert sorted(c["name"] for c in bp.CALLS) == sorted(f"{container}/b{i}.json" for i in range(6))
    assert len(ran) == 6


def test_background_host_processes_new_blobs_and_stops_cleanly(blobs_app, make_host, blob_service, uid):
    from .helpers import devhost_threads

    app, bp, container, settings = blobs_app
    host = make_host(app, "blobs", settings, host_id=f"h-{uid}")
    host.start()
    try:
        upload(blob_service, container, "live.json", b"hello")
        host.wait_for(lambda inv: any(r.function_name == "intake" for r in inv), timeout=15)
    finally:
        host.stop()
    assert [c["data"] for c in bp.CALLS] == [b"hello"]
    wait_until(lambda: not devhost_threads(), timeout=5, message="devhost threads gone")


def test_a_scan_that_queues_a_blob_wakes_the_idle_blob_listener(blobs_app, make_host, blob_service, uid,
                                                                monkeypatch):
    """As the host's blob-trigger queue writer notifies its queue listener: the blob runs at once, not
    after the listener's idle wait (30 s here, against a 10 s deadline)."""
    from devhost import queue_listener

    app, bp, container, settings = blobs_app
    monkeypatch.setattr(queue_listener, "MIN_POLL_INTERVAL", 30.0)
    host = make_host(app, "blobs", settings, host_id=f"h-{uid}", poll_interval=60.0)
    host.start()  # the scan loop scans the empty container now, then waits 60 s
    listener = host.blob_queue_listener()
    assert listener is not None
    wait_until(lambda: listener.polls >= 1, timeout=10, message="the blob listener's first (empty) poll")
    upload(blob_service, container, "wake.json", b"{}")
    assert host.poll_blobs("intake") == 1
    host.wait_for(lambda inv: any(r.details.get("blob") == f"{container}/wake.json" for r in inv), timeout=10)
