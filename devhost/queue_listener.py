"""A storage queue listener with the WebJobs SDK's QueueListener/QueueProcessor semantics.

* Messages are fetched in batches of ``batchSize`` (at most 32) with a 10-minute visibility
  lease, renewed at half time while the function runs; a new batch is fetched only while
  the number of messages in flight is at most ``newBatchThreshold``.
* ``messageEncoding`` base64: the text is base64-decoded; a message that is not valid base64
  is moved, as it is, to the poison queue without running the function (the host logs
  "Message decoding has failed! Check MessageEncoding settings.").
* Before running: ``dequeueCount > maxDequeueCount`` goes straight to the poison queue.
* After running: success deletes the message; failure with ``dequeueCount >= maxDequeueCount``
  copies the message text to the poison queue (created if missing) and deletes it; any other
  failure releases it with ``visibilityTimeout`` (default 0: visible again at once).
* An empty poll backs off from 100 ms, doubling up to the maximum polling interval; `notify`
  (a message this host just enqueued) ends the wait and starts the back-off again.
"""
from __future__ import annotations

import base64
import binascii
import concurrent.futures as cf
import datetime as _dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError

from .hostconfig import MAX_BATCH_SIZE, QueuesOptions
from .invoker import InvocationResult

__all__ = ["ReceivedMessage", "QueueListener", "send_and_create"]

log = logging.getLogger("devhost.queues")

FETCH_LEASE_SECONDS = 600.0   # the host's visibility lease while a message is processed
MIN_POLL_INTERVAL = 0.1


@dataclass
class ReceivedMessage:
    id: str
    pop_receipt: str
    dequeue_count: int
    content: str                      # the text as stored (base64 when encoded)
    inserted_on: _dt.datetime | None
    expires_on: _dt.datetime | None
    next_visible_on: _dt.datetime | None
    body: bytes | None = None         # decoded body (None when decoding failed)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    renew_at: float = 0.0
    started: bool = False
    done: bool = False

    @property
    def text(self) -> str:
        return (self.body or b"").decode("utf-8", errors="replace")


def send_and_create(queue: Any, content: str) -> None:
    """AddMessageAndCreateIfNotExists."""
    try:
        queue.send_message(content)
    except ResourceNotFoundError:
        try:
            queue.create_queue()
        except ResourceExistsError:
            pass
        queue.send_message(content)


def _err_code(e: HttpResponseError) -> str:
    return str(getattr(e, "error_code", None) or "")


# handler(message) -> (succeeded, invocation result or None when the function did not run)
Handler = Callable[[ReceivedMessage], "tuple[bool, InvocationResult | None]"]


class QueueListener:
    def __init__(self, *, name: str, queue: Any, options: QueuesOptions, handler: Handler,
                 poison_queue_for: Callable[[ReceivedMessage], Any], max_workers: int,
                 max_polling_interval: float, raw_poison_queue_for: Callable[[ReceivedMessage], Any] | None = None,
                 create_queue: bool = True, lease_seconds: float = FETCH_LEASE_SECONDS) -> None:
        self.name = name
        self.queue = queue
        self.options = options
        self.handler = handler
        self.poison_queue_for = poison_queue_for
        self.raw_poison_queue_for = raw_poison_queue_for or poison_queue_for
        self.max_workers = max(1, max_workers)
        self.max_polling_interval = max(MIN_POLL_INTERVAL, max_polling_interval)
        self.create_queue = create_queue
        self.lease_seconds = lease_seconds
        self._executor = cf.ThreadPoolExecutor(self.max_workers, thread_name_prefix=f"devhost-q-{name}")
        self._in_flight: dict[str, ReceivedMessage] = {}
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._wake = threading.Event()  # ends an idle wait early (notify, stop)
        self._thread: threading.Thread | None = None
        self._queue_ready = False
        self._closed = False
        self.polls = 0  # receive calls so far (introspection)

    # -- public -------------------------------------------------------------------------
    def ensure_queue(self) -> bool:
        if self._queue_ready:
            return True
        try:
            self.queue.get_queue_properties()
            self._queue_ready = True
        except ResourceNotFoundError:
            if not self.create_queue:
                return False
            try:
                self.queue.create_queue()
            except ResourceExistsError:
                pass
            log.info("Created queue '%s'", self.queue.queue_name)
            self._queue_ready = True
        return True

    def poll_once(self) -> list[InvocationResult]:
        """Fetch one batch, process it, wait for it; return the invocations it ran."""
        _, futures = self._fetch_and_dispatch()
        results = []
        for f in futures:
            outcome = f.result()
            if outcome is not None:
                results.append(outcome)
        return results

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._wake.clear()
        self._thread = threading.Thread(target=self._run, name=f"devhost-listen-{self.name}", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        """A message was just put on this queue by this host: poll now, backing off from the start
        again (the WebJobs SDK's QueueListener.Notify, called by its blob-trigger queue writer)."""
        self._wake.set()

    def stop(self, timeout: float | None = None) -> None:
        """Stop fetching, let running invocations finish, release fetched-but-unstarted ones."""
        self._stop.set()
        self._wake.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._executor.shutdown(wait=True, cancel_futures=True)
        for msg in list(self._in_flight.values()):
            if not msg.started:
                self._release(msg, 0.0)
        self._in_flight.clear()
        self._closed = True

    # -- loop ---------------------------------------------------------------------------
    def _run(self) -> None:
        delay = MIN_POLL_INTERVAL
        while not self._stop.is_set():
            try:
                fetched, _ = self._fetch_and_dispatch()
            except Exception as e:  # storage down or similar: keep the listener alive
                log.warning("Queue '%s': polling failed: %s", self.queue.queue_name, e)
                fetched = 0
            self._renew_due()
            if fetched:
                delay = MIN_POLL_INTERVAL
                with self._cond:  # wait for room before the next batch
                    while not self._stop.is_set() and not self._has_room():
                        self._cond.wait(1.0)
                        self._renew_due()
            elif self._wake.wait(delay):
                self._wake.clear()
                delay = MIN_POLL_INTERVAL
            else:
                delay = min(delay * 2, self.max_polling_interval)

    def _has_room(self) -> bool:
        n = len(self._in_flight)
        return n <= self.options.effective_new_batch_threshold and n < self.max_workers

    def _fetch_and_dispatch(self) -> tuple[int, list[cf.Future]]:
        """Receive one batch; returns (messages received, futures of the dispatched ones)."""
        if self._closed or not self.ensure_queue():
            return 0, []
        with self._cond:
            if not self._has_room():
                return 0, []
            room = self.max_workers - len(self._in_flight)
        n = max(1, min(self.options.batch_size, MAX_BATCH_SIZE, room))
        self.polls += 1
        pages = self.queue.receive_messages(messages_per_page=n, max_messages=n,
                                            visibility_timeout=int(self.lease_seconds)).by_page()
        raw = list(next(pages, []))
        dispatched: list[cf.Future] = []
        for m in raw:
            msg = ReceivedMessage(id=m.id, pop_receipt=m.pop_receipt, dequeue_count=m.dequeue_count or 0,
                                  content=m.content if isinstance(m.content, str) else (m.content or b"").decode(),
                                  inserted_on=m.inserted_on, expires_on=m.expires_on,
                                  next_visible_on=m.next_visible_on)
            msg.renew_at = time.monotonic() + self.lease_seconds / 2
            if not self._decode(msg):
                log.warning("Message decoding has failed! Check MessageEncoding settings. MessageId=%s.", msg.id)
                self._poison(msg, raw_copy=True)
                continue
            if msg.dequeue_count > self.options.max_dequeue_count:
                self._poison(msg)
                continue
            with self._cond:
                self._in_flight[msg.id] = msg
            try:
                dispatched.append(self._executor.submit(self._process, msg))
            except RuntimeError:  # executor shut down while we fetched: give the message back
                self._in_flight.pop(msg.id, None)
                self._release(msg, 0.0)
        return len(raw), dispatched

    def _decode(self, msg: ReceivedMessage) -> bool:
        if self.options.message_encoding == "none":
            msg.body = msg.content.encode("utf-8")
            return True
        try:
            msg.body = base64.b64decode(msg.content.encode("ascii"), validate=True)
            return True
        except (binascii.Error, ValueError, UnicodeEncodeError):
            return False

    def _process(self, msg: ReceivedMessage) -> InvocationResult | None:
        msg.started = True
        result: InvocationResult | None = None
        try:
            try:
                succeeded, result = self.handler(msg)
            except Exception as e:
                log.error("Queue '%s': processing message %s failed in the host: %s",
                          self.queue.queue_name, msg.id, e)
                succeeded = False
            self._complete(msg, succeeded)
        finally:
            with self._cond:
                self._in_flight.pop(msg.id, None)
                self._cond.notify_all()
        return result

    # -- settlement ---------------------------------------------------------------------
    def _complete(self, msg: ReceivedMessage, succeeded: bool) -> None:
        if succeeded:
            self._delete(msg)
        elif msg.dequeue_count >= self.options.max_dequeue_count:
            self._poison(msg)
        else:
            self._release(msg, self.options.visibility_timeout)

    def _poison(self, msg: ReceivedMessage, raw_copy: bool = False) -> None:
        poison = (self.raw_poison_queue_for if raw_copy else self.poison_queue_for)(msg)
        if not raw_copy:
            log.warning("Message has reached MaxDequeueCount of %d. Moving message to queue '%s'.",
                        self.options.max_dequeue_count, poison.queue_name)
        else:
            log.warning("Moving message %s to queue '%s'.", msg.id, poison.queue_name)
        # The host re-adds the decoded text through a base64 client; the stored text is the same.
        send_and_create(poison, msg.content)
        self._delete(msg)

    def _delete(self, msg: ReceivedMessage) -> None:
        with msg.lock:
            msg.done = True
            try:
                self.queue.delete_message(msg.id, msg.pop_receipt)
            except ResourceNotFoundError:
                log.debug("Unable to delete queue message '%s': message or queue not found", msg.id)
            except HttpResponseError as e:
                if e.status_code == 400 and "popreceipt" in _err_code(e).lower():
                    log.debug("Unable to delete queue message '%s' because the PopReceipt did not match", msg.id)
                else:
                    raise

    def _release(self, msg: ReceivedMessage, visibility_timeout: float) -> None:
        with msg.lock:
            msg.done = True
            try:
                self.queue.update_message(msg.id, msg.pop_receipt, visibility_timeout=int(visibility_timeout))
            except ResourceNotFoundError:
                pass
            except HttpResponseError as e:
                if not (e.status_code == 400 and "popreceipt" in _err_code(e).lower()):
                    raise

    def _renew_due(self) -> None:
        now = time.monotonic()
        for msg in list(self._in_flight.values()):
            if msg.done or msg.renew_at > now:
                continue
            with msg.lock:
                if msg.done:
                    continue
                try:
                    updated = self.queue.update_message(msg.id, msg.pop_receipt,
                                                        visibility_timeout=int(self.lease_seconds))
                    msg.pop_receipt = updated.pop_receipt
                    msg.renew_at = now + self.lease_seconds / 2
                except (ResourceNotFoundError, HttpResponseError) as e:
                    log.warning("Queue '%s': could not renew the lease of message %s: %s",
                                self.queue.queue_name, msg.id, e)
                    msg.renew_at = now + 30
