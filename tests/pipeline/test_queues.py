"""Creating a queue is idempotent under concurrency, against real Azurite: many callers creating the same
missing queue at the same moment all succeed, and the queue then works."""
from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

from azure.storage.queue import QueueServiceClient

from shared import storage
from shared.settings import Settings

CALLERS = 16


def _settings(azurite) -> Settings:
    return Settings.from_mapping({"AzureWebJobsStorage": azurite.connection_string,
                                  "BATCH_ACCOUNT_URL": "http://127.0.0.1:1"})


def _all_at_once(work, args: list) -> list[BaseException | None]:
    """`work(arg)` for each arg, each on its own thread, all released at the same moment; the
    exception each raised (None if none)."""
    barrier = threading.Barrier(len(args))

    def one(arg) -> BaseException | None:
        barrier.wait()
        try:
            work(arg)
        except Exception as e:  # noqa: BLE001 (collected and asserted on by the test)
            return e
        return None

    with ThreadPoolExecutor(len(args)) as pool:
        return list(pool.map(one, args))


def test_many_callers_creating_one_missing_queue_at_once_all_succeed(azurite):
    settings = _settings(azurite)
    for round_ in range(5):  # a few rounds: the race window is small
        name = f"race-{round_}-{uuid.uuid4().hex[:12]}"
        clients = [storage.queue_client(settings, name) for _ in range(CALLERS)]  # one per caller, as per process
        assert _all_at_once(storage.ensure_queue, clients) == [None] * CALLERS
        storage.queue_send(clients[0], f"hello {round_}")
        (message,) = clients[-1].receive_messages(max_messages=5, visibility_timeout=30)
        assert message.content == f"hello {round_}"


def test_ensuring_an_existing_queue_from_many_callers_keeps_it_and_its_messages(azurite):
    settings = _settings(azurite)
    name = f"keep-{uuid.uuid4().hex[:12]}"
    client = storage.queue_client(settings, name)
    storage.ensure_queue(client)
    storage.queue_send(client, "kept")
    clients = [storage.queue_client(settings, name) for _ in range(CALLERS)]
    assert _all_at_once(storage.ensure_queue, clients) == [None] * CALLERS
    assert QueueServiceClient.from_connection_string(azurite.connection_string).get_queue_client(name) \
        .get_queue_properties().approximate_message_count == 1


def test_senders_racing_on_a_missing_queue_all_deliver(azurite):
    settings = _settings(azurite)
    for round_ in range(3):
        name = f"send-{round_}-{uuid.uuid4().hex[:12]}"
        clients = [storage.queue_client(settings, name) for _ in range(8)]
        errors = _all_at_once(lambda client: storage.queue_send(client, "m"), clients)
        for e in errors:
            if e is not None:
                raise e
