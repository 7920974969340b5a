"""`Host`: index a function app and drive its triggers against Storage (Azurite).

Library use (tests)::

    app = load_function_app("tests/devhost/apps/blobs")
    host = Host(app, settings={"AzureWebJobsStorage": conn, ...}, app_dir="tests/devhost/apps/blobs")
    host.run_blob_triggers_once()      # detect new blob versions and run them, then return
    host.drain_queue("finalize")       # fetch one batch of one queue, run it, return
    host.fire_timer("monitor")         # run a timer function now
    host.start(); ...; host.stop()     # or run everything on background threads

Settings are used for ``%NAME%`` resolution and connections; the host never copies them into
``os.environ`` (the CLI does that before importing the app, as ``func start`` does).
"""
from __future__ import annotations

import datetime as _dt
import functools
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from .blob_trigger import (
    HOSTS_CONTAINER,
    POISON_QUEUE,
    BlobPathPattern,
    BlobQueueHandler,
    BlobRegistration,
    BlobScanner,
    poison_queue_for,
    shared_queue_name,
)
from .errors import ConfigurationError, DevhostError, IndexingError
from .hostconfig import HostConfig, load_host_json
from .indexing import FunctionSpec, index_functions
from .invoker import THREADPOOL_SETTING, Datum, EventLoopThread, InvocationResult, Invoker, SyncPool, sync_pool_size
from .logs import register_secrets
from .queue_listener import QueueListener, ReceivedMessage
from .settings import Settings, StorageConnection, default_host_id, validate_host_id
from .timer_trigger import ScheduleMonitor, TimerListener

__all__ = ["Host"]

log = logging.getLogger("devhost.host")


class Host:
    """A local stand-in for the Functions host, for blob, queue and timer triggers.

    Args:
        app: the ``func.FunctionApp`` (see `devhost.load_function_app`).
        settings: app settings (name -> value); default: ``os.environ``.
        app_dir: the app's directory (host.json, the default host id, ``context.function_directory``).
        host_config: parsed host.json; default: read from ``app_dir``.
        host_id: overrides ``AzureFunctionsWebHost__hostid`` / the machine-derived id.
        poll_interval: longest wait between polls of an idle queue or container, seconds.
        queue_workers: threads per queue-triggered function (also capped by batchSize +
            newBatchThreshold).
        blob_workers: threads for blob-triggered invocations (default: host.json
            ``extensions.blobs.maxDegreeOfParallelism`` when set, else 4).
    """

    def __init__(self, app: Any, settings: Mapping[str, Any] | None = None, *,
                 app_dir: str | os.PathLike[str] | None = None, host_config: HostConfig | None = None,
                 host_id: str | None = None, poll_interval: float = 2.0, queue_workers: int = 4,
                 blob_workers: int | None = None,
                 now: Callable[[], _dt.datetime] | None = None) -> None:
        if poll_interval <= 0:
            raise ConfigurationError("devhost: poll interval must be positive")
        self.settings = settings if isinstance(settings, Settings) else Settings(settings)
        self.app_dir = str(app_dir) if app_dir is not None else None
        self.config = host_config if host_config is not None else load_host_json(app_dir)
        self.poll_interval = float(poll_interval)
        self.queue_workers = max(1, int(queue_workers))
        self.blob_workers = blob_workers
        self.functions: list[FunctionSpec] = index_functions(app, self.settings, app_dir, self.config.functions)
        self.host_id = validate_host_id(host_id) if host_id else default_host_id(self.settings, app_dir)
        self.invocations: deque[InvocationResult] = deque(maxlen=10_000)
        self._results_cond = threading.Condition()
        self._loop = EventLoopThread()
        self.sync_pool = SyncPool(sync_pool_size(self.settings.get(THREADPOOL_SETTING)))
        self.invoker = Invoker(function_timeout=self.config.function_timeout, loop=self._loop,
                               history=self.invocations, on_result=self._notify, sync_pool=self.sync_pool)
        self._now = now or _dt.datetime.now
        self._connections: dict[str, StorageConnection] = {}
        self._clients: dict[tuple[str, str], Any] = {}
        self._queue_listeners: dict[str, QueueListener] = {}
        self._timers: dict[str, TimerListener] = {}
        self._blob_regs: list[BlobRegistration] = []
        self._blob_scanner: BlobScanner | None = None
        self._blob_listener: QueueListener | None = None
        self._scan_thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._started = False
        self._prepared = False
        self._lock = threading.Lock()
        self._check_connections()
        for spec in self.functions:
            if spec.trigger_type == "blobTrigger" and spec.source == "EventGrid":
                log.info("Function '%s' uses an Event Grid blob trigger: devhost simulates Event Grid "
                         "delivery by polling container '%s'", spec.name, (spec.path or "").split("/")[0])

    def _check_connections(self) -> None:
        """The host fails indexing when a trigger's connection is not configured (the storage
        extensions' ``StorageClientProvider.Create``); so does devhost, before anything runs.
        Blob triggers and monitored timers also need AzureWebJobsStorage (receipts, status)."""
        needs_host_storage = any(s.trigger_type == "blobTrigger" or s.use_monitor for s in self.functions)
        for spec in self.functions:
            if spec.trigger_type in ("blobTrigger", "queueTrigger"):
                try:
                    self.connection(spec.connection)
                except ConfigurationError as e:
                    raise IndexingError(f"devhost: function '{spec.name}': {str(e).removeprefix('devhost: ')}") \
                        from None
        if needs_host_storage:
            self.connection(None)

    # -- introspection -------------------------------------------------------------------
    def function(self, name: str) -> FunctionSpec:
        for spec in self.functions:
            if spec.name == name:
                return spec
        raise KeyError(f"no function named {name!r} (have: {', '.join(f.name for f in self.functions)})")

    def describe(self) -> list[str]:
        lines = []
        for s in self.functions:
            if s.trigger_type == "blobTrigger":
                what = f"blobTrigger path={s.path} source={s.source} connection={self._conn_name(s.connection)}"
            elif s.trigger_type == "queueTrigger":
                what = f"queueTrigger queue={s.queue_name} connection={self._conn_name(s.connection)}"
            else:
                what = f"timerTrigger schedule={s.schedule} useMonitor={s.use_monitor} runOnStartup={s.run_on_startup}"
            lines.append(f"{s.name}: {what}")
        return lines

    @staticmethod
    def _conn_name(name: str | None) -> str:
        return name or "AzureWebJobsStorage"

    # -- storage ---------------------------------------------------------------------------
    def connection(self, name: str | None) -> StorageConnection:
        key = (name or "").lower()
        if key not in self._connections:
            conn = self.settings.connection(name)
            register_secrets(conn.secrets())
            self._connections[key] = conn
        return self._connections[key]

    def _client(self, name: str | None, kind: str) -> Any:
        key = ((name or "").lower(), kind)
        if key not in self._clients:
            conn = self.connection(name)
            self._clients[key] = conn.blob_service_client() if kind == "blob" else conn.queue_service_client()
        return self._clients[key]

    def blob_service(self, connection: str | None = None) -> Any:
        return self._client(connection, "blob")

    def queue_service(self, connection: str | None = None) -> Any:
        return self._client(connection, "queue")

    @property
    def hosts_container(self) -> Any:
        return self.blob_service(None).get_container_client(HOSTS_CONTAINER)

    # -- wiring ----------------------------------------------------------------------------
    def _prepare(self) -> None:
        with self._lock:
            if self._prepared:
                return
            for spec in self.functions:
                if spec.trigger_type == "queueTrigger":
                    self._queue_listeners[spec.name] = self._make_queue_listener(spec)
                elif spec.trigger_type == "timerTrigger":
                    monitor = ScheduleMonitor(self.hosts_container, self.host_id) if spec.use_monitor else None
                    self._timers[spec.name] = TimerListener(spec, self.invoker, monitor, now=self._now)
                elif spec.trigger_type == "blobTrigger":
                    conn = self.connection(spec.connection)
                    self._blob_regs.append(BlobRegistration(
                        spec=spec, pattern=BlobPathPattern(spec.path or ""), connection=conn,
                        blob_service=self.blob_service(spec.connection)))
            if self._blob_regs:
                host_queues = self.queue_service(None)
                shared = host_queues.get_queue_client(shared_queue_name(self.host_id))
                self._blob_scanner = BlobScanner(self.host_id, self._blob_regs, self.hosts_container, shared)
                handler = BlobQueueHandler(self._blob_regs, self.invoker)
                options = self.config.blobs.as_queues_options()
                workers = self.blob_workers or self.config.blobs.max_degree_of_parallelism or 4
                fallback = lambda: host_queues.get_queue_client(POISON_QUEUE)  # noqa: E731
                self._blob_listener = QueueListener(
                    name="blobtrigger", queue=shared, options=options, handler=handler,
                    poison_queue_for=poison_queue_for(handler, fallback), max_workers=workers,
                    max_polling_interval=self.poll_interval)
            self._prepared = True

    def _make_queue_listener(self, spec: FunctionSpec) -> QueueListener:
        qs = self.queue_service(spec.connection)
        queue = qs.get_queue_client(spec.queue_name)
        poison = qs.get_queue_client(f"{spec.queue_name}-poison")
        options = self.config.queues
        cap = options.batch_size + options.effective_new_batch_threshold
        return QueueListener(
            name=spec.name, queue=queue, options=options,
            handler=functools.partial(self._run_queue_message, spec),
            poison_queue_for=lambda _msg: poison, max_workers=min(self.queue_workers, cap),
            max_polling_interval=min(self.poll_interval, options.max_polling_interval))

    def _run_queue_message(self, spec: FunctionSpec, msg: ReceivedMessage) -> tuple[bool, InvocationResult]:
        body = msg.body or b""
        if spec.data_type == "binary":
            value = Datum(body, "bytes")
        else:
            try:
                value = Datum(body.decode("utf-8"), "string")
            except UnicodeDecodeError:
                value = Datum(body, "bytes")

        def iso(d: _dt.datetime | None) -> str | None:
            return d.astimezone(_dt.UTC).isoformat() if d else None

        md = {
            "QueueTrigger": Datum(value.value if value.type == "string" else body.decode("utf-8", "replace"), "string"),
            "Id": Datum(msg.id, "string"),
            "DequeueCount": Datum(json.dumps(msg.dequeue_count), "json"),
            "PopReceipt": Datum(msg.pop_receipt, "string"),
            "sys": Datum(json.dumps({"MethodName": spec.name,
                                     "UtcNow": _dt.datetime.now(_dt.UTC).isoformat()}), "json"),
        }
        for key, d in (("InsertionTime", msg.inserted_on), ("ExpirationTime", msg.expires_on),
                       ("NextVisibleTime", msg.next_visible_on)):
            if d is not None:
                md[key] = Datum(iso(d), "string")
        result = self.invoker.invoke(spec, value, md, reason=f"New queue message detected on '{spec.queue_name}'.",
                                     details={"message_id": msg.id, "dequeue_count": msg.dequeue_count})
        return result.succeeded, result

    # -- deterministic helpers (tests) -------------------------------------------------------
    def poll_blobs(self, function_name: str | None = None) -> int:
        """Detect new blob versions once (receipts + enqueue). Returns how many were enqueued; when
        any were, the running blob-trigger listener polls at once (the host's queue writer notifies it)."""
        self._prepare()
        if self._blob_scanner is None:
            return 0
        if function_name is not None:
            self._expect(function_name, "blobTrigger")
        queued = self._blob_scanner.scan_once(function_name)
        if queued and self._blob_listener is not None:
            self._blob_listener.notify()
        return queued

    def process_blob_queue(self) -> list[InvocationResult]:
        """Fetch one batch of the internal blob-trigger queue and run it."""
        self._prepare()
        return self._blob_listener.poll_once() if self._blob_listener else []

    def run_blob_triggers_once(self, function_name: str | None = None) -> list[InvocationResult]:
        """Detect new blob versions, then run every queued blob message once (retries are later calls)."""
        self.poll_blobs(function_name)
        results: list[InvocationResult] = []
        seen: set[str] = set()
        for _ in range(1000):
            batch = self.process_blob_queue()
            if not batch:
                break
            fresh = [r for r in batch if r.invocation_id not in seen]
            results.extend(fresh)
            seen.update(r.invocation_id for r in fresh)
            # A failed message is visible again at once; stop after one attempt per blob version.
            if any(not r.succeeded for r in batch):
                break
        return results

    def drain_queue(self, function_name: str) -> list[InvocationResult]:
        """Fetch one batch of a queue-triggered function's queue and run it (creates the queue)."""
        self._expect(function_name, "queueTrigger")
        self._prepare()
        return self._queue_listeners[function_name].poll_once()

    def fire_timer(self, function_name: str, past_due: bool = False) -> InvocationResult:
        """Run a timer function now (after any running invocation of it)."""
        self._expect(function_name, "timerTrigger")
        self._prepare()
        result = self._timers[function_name].fire(past_due=past_due)
        assert result is not None
        return result

    def timer(self, function_name: str) -> TimerListener:
        self._expect(function_name, "timerTrigger")
        self._prepare()
        return self._timers[function_name]

    def blob_queue_listener(self) -> QueueListener | None:
        """The listener of the internal blob-trigger queue (None without blob triggers)."""
        self._prepare()
        return self._blob_listener

    def queue_listener(self, function_name: str) -> QueueListener:
        self._expect(function_name, "queueTrigger")
        self._prepare()
        return self._queue_listeners[function_name]

    def _expect(self, name: str, trigger: str) -> None:
        spec = self.function(name)
        if spec.trigger_type != trigger:
            raise DevhostError(f"devhost: function '{name}' is a {spec.trigger_type}, not a {trigger}")

    def wait_for(self, predicate: Callable[[list[InvocationResult]], bool],
                 timeout: float = 10.0) -> list[InvocationResult]:
        """Block until ``predicate(invocations so far)`` holds; TimeoutError after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        with self._results_cond:
            while True:
                snapshot = list(self.invocations)
                if predicate(snapshot):
                    return snapshot
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"condition not met after {timeout}s; invocations: {snapshot!r}")
                self._results_cond.wait(min(remaining, 0.5))

    def _notify(self, _result: InvocationResult) -> None:
        with self._results_cond:
            self._results_cond.notify_all()

    # -- background running ------------------------------------------------------------------
    def start(self) -> None:
        """Start every listener on background threads."""
        if self._started:
            return
        self._prepare()
        self._stop.clear()
        for name, listener in self._queue_listeners.items():
            listener.ensure_queue()
            log.info("Function '%s' listens to queue '%s' (%s)", name, listener.queue.queue_name,
                     self.connection(self.function(name).connection).describe())
            listener.start()
        if self._blob_listener is not None:
            self._blob_listener.start()
            self._scan_thread = threading.Thread(target=self._scan_loop, name="devhost-blob-scan", daemon=True)
            self._scan_thread.start()
        for timer in self._timers.values():
            timer.start()
        self._started = True
        log.info("Host started (host id %s): %d function(s)", self.host_id, len(self.functions))

    def _scan_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_blobs()
            except Exception as e:
                log.warning("Blob scan failed: %s", e)
            self._stop.wait(self.poll_interval)

    def stop(self, timeout: float | None = 60.0) -> None:
        """Stop listening; running invocations finish first. Leaves no thread behind."""
        self._stop.set()
        if self._scan_thread is not None:
            self._scan_thread.join(timeout)
            self._scan_thread = None
        for timer in self._timers.values():
            timer.stop(timeout)
        for listener in self._queue_listeners.values():
            listener.stop(timeout)
        if self._blob_listener is not None:
            self._blob_listener.stop(timeout)
        self.sync_pool.stop()
        self._loop.stop()
        if self._started:
            log.info("Host stopped")
        self._started = False
        # A stopped host can be started again: rebuild the listeners next time.
        self._queue_listeners.clear()
        self._timers.clear()
        self._blob_regs.clear()
        self._blob_scanner = self._blob_listener = None
        self._prepared = False

    def close(self) -> None:
        self.stop()
        for client in self._clients.values():
            try:
                client.close()
            except Exception:
                pass
        self._clients.clear()

    def __enter__(self) -> Host:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
