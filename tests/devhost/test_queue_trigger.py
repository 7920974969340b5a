"""Queue trigger against Azurite: delete on success, dequeue counts, poison queue, base64, concurrency."""
from __future__ import annotations

import base64
import datetime as dt

import azure.functions as func
import pytest

from devhost.hostconfig import parse_host_json

from .helpers import devhost_threads, queue_texts, wait_until


@pytest.fixture
def queues_app(load_app, queue_service, uid):
    app, mod = load_app("queues")
    mod.reset()
    settings = {"WORK_QUEUE": f"work-{uid}", "ASYNC_QUEUE": f"async-{uid}"}
    queue = queue_service.get_queue_client(settings["WORK_QUEUE"])
    return app, mod, settings, queue


def send(queue, body: bytes) -> str:
    """Send as producers do for the host (base64), creating the queue when needed."""
    from devhost.queue_listener import send_and_create

    send_and_create(queue, base64.b64encode(body).decode())
    return body.decode()


def test_success_deletes_the_message_and_the_function_gets_a_queuemessage(queues_app, make_host, uid):
    app, mod, settings, queue = queues_app
    host = make_host(app, "queues", settings, host_id=f"h-{uid}")
    assert host.drain_queue("finalize") == []  # creates the queue
    send(queue, b"ok")
    (result,) = host.drain_queue("finalize")
    assert result.succeeded
    (call,) = mod.CALLS
    assert call["type"] is func.queue.QueueMessage and issubclass(call["type"], func.QueueMessage)
    assert call["body"] == b"ok" and call["dequeue_count"] == 1 and call["id"] and call["pop_receipt"]
    now = dt.datetime.now(dt.UTC)
    assert abs((call["insertion_time"] - now).total_seconds()) < 60
    assert call["expiration_time"] > now + dt.timedelta(days=6)  # default TTL is 7 days
    assert queue_texts(queue) == []


def test_failure_is_retried_with_a_growing_dequeue_count(queues_app, make_host, uid):
    app, mod, settings, queue = queues_app
    host = make_host(app, "queues", settings, host_id=f"h-{uid}")
    send(queue, b"flaky:2")
    outcomes = []
    for _ in range(6):
        outcomes += [r.succeeded for r in host.drain_queue("finalize")]
        if outcomes and outcomes[-1]:
            break
    assert outcomes == [False, False, True]
    assert [c["dequeue_count"] for c in mod.CALLS] == [1, 2, 3]
    assert len({c["id"] for c in mod.CALLS}) == 1
    assert queue_texts(queue) == []


def test_poison_after_max_dequeue_count(queues_app, make_host, queue_service, uid):
    app, mod, settings, queue = queues_app
    host = make_host(app, "queues", settings, host_id=f"h-{uid}")  # host.json: maxDequeueCount 3
    original = base64.b64encode(b"fail").decode()
    queue.create_queue()
    queue.send_message(original)
    for _ in range(6):
        if not host.drain_queue("finalize"):
            break
    assert [c["dequeue_count"] for c in mod.CALLS] == [1, 2, 3]
    assert queue_texts(queue) == []
    poison = queue_service.get_queue_client(f"work-{uid}-poison")
    assert queue_texts(poison, decode=False) == [original]


def test_a_message_over_the_limit_goes_to_poison_without_running(queues_app, make_host, queue_service, uid):
    app, mod, settings, queue = queues_app
    host = make_host(app, "queues", settings, host_id=f"h-{uid}")
    send(queue, b"ok")
    # another consumer received it 3 times without settling it
    for _ in range(3):
        (m,) = queue.receive_messages(visibility_timeout=1, max_messages=1)
        queue.update_message(m.id, m.pop_receipt, visibility_timeout=0)
    assert host.drain_queue("finalize") == []
    assert mod.CALLS == []
    assert queue_texts(queue_service.get_queue_client(f"work-{uid}-poison")) == ["ok"]


def test_invalid_base64_is_moved_to_poison_as_is(queues_app, make_host, queue_service, uid, caplog):
    app, mod, settings, queue = queues_app
    host = make_host(app, "queues", settings, host_id=f"h-{uid}")
    queue.create_queue()
    queue.send_message("this is not base64!")
    with caplog.at_level("WARNING", logger="devhost"):
        assert host.drain_queue("finalize") == []
    assert mod.CALLS == []
    assert "Message decoding has failed! Check MessageEncoding settings." in caplog.text
    assert queue_texts(queue_service.get_queue_client(f"work-{uid}-poison"), decode=False) == ["this is not base64!"]
    assert queue_texts(queue) == []


def test_message_encoding_none_passes_the_text_through(queues_app, make_host, uid):
    app, mod, settings, queue = queues_app
    config = parse_host_json({"extensions": {"queues": {"messageEncoding": "none"}}})
    host = make_host(app, "queues", settings, host_id=f"h-{uid}", host_config=config)
    queue.create_queue()
    queue.send_message("plain text")
    assert [r.succeeded for r in host.drain_queue("finalize")] == [True]
    assert mod.CALLS[0]["body"] == b"plain text"


def test_visibility_timeout_delays_the_retry(queues_app, make_host, uid):
    app, mod, settings, queue = queues_app
    config = parse_host_json({"extensions": {"queues": {"visibilityTimeout": "00:00:01", "maxDequeueCount": 3}}})
    host = make_host(app, "queues", settings, host_id=f"h-{uid}", host_config=config)
    send(queue, b"flaky:1")
    assert [r.succeeded for r in host.drain_queue("finalize")] == [False]
    assert host.drain_queue("finalize") == []  # still invisible
    results = wait_until(lambda: host.drain_queue("finalize"), timeout=5, message="message visible again")
    assert [r.succeeded for r in results] == [True]
    assert [c["dequeue_count"] for c in mod.CALLS] == [1, 2]


def test_async_function_with_context_and_str_annotation(queues_app, make_host, queue_service, uid):
    app, mod, settings, _ = queues_app
    host = make_host(app, "queues", settings, host_id=f"h-{uid}")
    send(queue_service.get_queue_client(settings["ASYNC_QUEUE"]), "héllo".encode())
    (result,) = host.drain_queue("finalize_async")
    assert result.succeeded
    (call,) = mod.ASYNC_CALLS
    assert call["item"] == "héllo" and call["invocation_id"] == result.invocation_id
    assert call["function_name"] == "finalize_async" and call["directory"].endswith("apps/queues")


def test_background_listener_runs_a_batch_concurrently_and_stops_cleanly(queues_app, make_host, uid):
    app, mod, settings, queue = queues_app
    host = make_host(app, "queues", settings, host_id=f"h-{uid}", queue_workers=3)
    for _ in range(6):
        send(queue, b"sleep:0.3")
    host.start()
    try:
        host.wait_for(lambda inv: sum(r.function_name == "finalize" for r in inv) >= 6, timeout=15)
    finally:
        host.stop()
    assert 1 < mod.ACTIVE["max"] <= 3
    assert queue_texts(queue) == []
    wait_until(lambda: not devhost_threads(), timeout=5, message="devhost threads gone")


def test_stop_lets_the_running_invocation_finish(queues_app, make_host, uid):
    app, mod, settings, queue = queues_app
    host = make_host(app, "queues", settings, host_id=f"h-{uid}", queue_workers=1)
    send(queue, b"sleep:0.8")
    host.start()
    wait_until(lambda: mod.ACTIVE["now"] == 1, timeout=10, message="invocation running")
    host.stop()
    assert mod.ACTIVE["now"] == 0 and [r.succeeded for r in host.invocations] == [True]
    assert queue_texts(queue) == []
