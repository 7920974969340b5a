"""Run one invocation the way the Python worker does.

The host hands the worker the trigger value (a typed datum) and the trigger metadata; the
worker decodes the trigger parameter with the converter registered in azure.functions
(``func.get_binding_registry()``; ``str``/``bytes`` annotations use the generic binding),
adds ``context`` when the function declares it, and calls the function: coroutines on the
worker's event loop, plain functions on its one sync thread pool (``SyncPool``, sized by
PYTHON_THREADPOOL_THREAD_COUNT). A function without a ``$return`` binding that returns
something fails, as in the worker. devhost does the same with the same
converters, so the function receives the very classes the worker builds
(``azure.functions.blob.InputStream``, ``azure.functions.queue.QueueMessage``,
``azure.functions.timer.TimerRequest``).
"""
from __future__ import annotations

import asyncio
import concurrent.futures as cf
import logging
import os
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import azure.functions as func
from azure.functions import _abc, meta

from .hostconfig import format_timespan
from .indexing import FunctionSpec
from .logs import invocation_scope

__all__ = ["InvocationResult", "Invoker", "Datum", "EventLoopThread", "InvocationContext", "SyncPool",
           "sync_pool_size", "THREADPOOL_SETTING"]

Datum = meta.Datum
log = logging.getLogger("devhost.function")


@dataclass
class InvocationResult:
    function_name: str
    invocation_id: str
    succeeded: bool
    reason: str
    duration: float
    error: BaseException | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        state = "Succeeded" if self.succeeded else f"Failed: {type(self.error).__name__}"
        return f"<InvocationResult {self.function_name} {state} id={self.invocation_id}>"


class _TraceContext(_abc.TraceContext):
    def __init__(self, trace_parent: str, trace_state: str, attributes: dict[str, str]) -> None:
        self._trace_parent, self._trace_state, self._attributes = trace_parent, trace_state, attributes

    @property
    def trace_state(self) -> str:
        return self._trace_state

    @property
    def trace_parent(self) -> str:
        return self._trace_parent

    @property
    def attributes(self) -> dict[str, str]:
        return self._attributes


class _RetryContext(_abc.RetryContext):
    def __init__(self, retry_count: int, max_retry_count: int, exception: Any) -> None:
        self._retry_count, self._max_retry_count, self._exception = retry_count, max_retry_count, exception

    @property
    def retry_count(self) -> int:
        return self._retry_count

    @property
    def max_retry_count(self) -> int:
        return self._max_retry_count

    @property
    def exception(self) -> Any:
        return self._exception


class InvocationContext(func.Context):
    """``func.Context`` as the worker provides it."""

    def __init__(self, function_name: str, function_directory: str, invocation_id: str) -> None:
        self._function_name = function_name
        self._function_directory = function_directory
        self._invocation_id = invocation_id
        self._thread_local_storage = threading.local()
        self._trace_context = _TraceContext(f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-00", "", {})
        self._retry_context = _RetryContext(0, 0, None)

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property  # the worker hands out an instance; the library's stub says the class
    def thread_local_storage(self) -> threading.local:  # type: ignore[override]
        return self._thread_local_storage

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return self._function_directory

    @property
    def trace_context(self) -> _abc.TraceContext:
        return self._trace_context

    @property
    def retry_context(self) -> _abc.RetryContext:
        return self._retry_context


class _GenericBinding:
    """The worker's generic binding: the datum's value as it is (str or bytes)."""

    @classmethod
    def decode(cls, data: Datum, *, trigger_metadata: Any) -> Any:
        if data.type in ("string", "bytes", "json"):
            return data.value
        raise ValueError(f'unexpected type of data received for the "generic" binding : {data.type!r}')


class EventLoopThread:
    """One event loop for async functions, like the worker's (started on first use)."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def run(self, coro: Any) -> Any:
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=self._loop.run_forever,
                                                name="devhost-asyncio", daemon=True)
                self._thread.start()
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def stop(self) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()


THREADPOOL_SETTING = "PYTHON_THREADPOOL_THREAD_COUNT"


def sync_pool_size(value: str | None) -> int | None:
    """The worker's sync thread pool size for a PYTHON_THREADPOOL_THREAD_COUNT value.

    As ``Dispatcher._get_sync_tp_max_workers`` (azure-functions-python-worker, Python 3.9+): unset,
    not an integer or below 1 means None, i.e. ThreadPoolExecutor's own default,
    ``min(32, cpu count + 4)``; the worker logs a warning for an invalid value.
    """
    if value is None:
        return None
    try:
        size = int(value)
    except ValueError:
        log.warning("%s must be an integer", THREADPOOL_SETTING)
        return None
    if size < 1:
        log.warning("%s must be set to a value between 1 and sys.maxint. Reverting to default value for "
                    "max_workers", THREADPOOL_SETTING)
        return None
    return size


class SyncPool:
    """The one thread pool every plain (``def``) function of the app runs on, as in the worker
    (``Dispatcher._sync_call_tp``): the triggers' own threads only wait for it, so at most
    ``max_workers`` sync invocations run at once, whatever the triggers' concurrency."""

    def __init__(self, max_workers: int | None = None) -> None:
        self.requested = max_workers
        self._pool: cf.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    @property
    def max_workers(self) -> int:
        return self.requested or min(32, (os.cpu_count() or 1) + 4)

    def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        with self._lock:
            if self._pool is None:  # (re)created on first use: a stopped host can start again
                self._pool = cf.ThreadPoolExecutor(self.max_workers, thread_name_prefix="devhost-sync")
            pool = self._pool
        return pool.submit(fn, *args).result()

    def stop(self) -> None:
        """Wait for running invocations, then end the threads."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)


class Invoker:
    """Decodes trigger data and runs a function, logging like the host."""

    def __init__(self, *, function_timeout: float | None, loop: EventLoopThread,
                 history: deque[InvocationResult] | None = None,
                 on_result: Callable[[InvocationResult], None] | None = None,
                 sync_pool: SyncPool | None = None) -> None:
        self.function_timeout = function_timeout
        self.loop = loop
        self.sync_pool = sync_pool if sync_pool is not None else SyncPool()
        self.history = history if history is not None else deque(maxlen=1000)
        self.on_result = on_result

    def build_argument(self, spec: FunctionSpec, data: Datum, metadata: Mapping[str, Datum]) -> Any:
        if spec.bind_type == "generic":
            converter: Any = _GenericBinding
        else:
            converter = func.get_binding_registry().get(spec.bind_type)
        try:
            return converter.decode(data, trigger_metadata=dict(metadata))
        except NotImplementedError:
            raise TypeError(
                f"unable to decode incoming TypedData: unsupported combination of TypedData field "
                f"{data.type!r} and expected binding type {converter}") from None

    def invoke(self, spec: FunctionSpec, data: Datum, metadata: Mapping[str, Datum], *,
               reason: str, details: Mapping[str, Any] | None = None) -> InvocationResult:
        invocation_id = str(uuid.uuid4())
        started = time.monotonic()
        log.info("Executing '%s' (Reason='%s', Id=%s)", spec.log_name, reason, invocation_id,
                 extra={"category": f"Function.{spec.name}"})
        watchdog = None
        if self.function_timeout:
            watchdog = threading.Timer(self.function_timeout, self._timeout_warning,
                                       args=(spec, invocation_id))
            watchdog.daemon = True
            watchdog.name = f"devhost-timeout-{spec.name}"
            watchdog.start()
        error: BaseException | None = None
        try:
            with invocation_scope(spec.name, invocation_id):
                try:
                    kwargs = {spec.param_name: self.build_argument(spec, data, metadata)}
                    if spec.requires_context:
                        kwargs["context"] = InvocationContext(spec.name, spec.directory, invocation_id)
                    if spec.is_async:
                        returned = self.loop.run(self._scoped(spec, invocation_id, kwargs))
                    else:
                        returned = self.sync_pool.run(self._run_sync, spec, invocation_id, kwargs)
                    if returned is not None:
                        # The worker (dispatcher.py, _handle__invocation_request) fails such an
                        # invocation; devhost supports no output binding, so there is no $return.
                        raise RuntimeError(
                            f"function {spec.name!r} without a $return binding returned a non-None "
                            f"value ({type(returned).__name__}); return None, or write the result "
                            "with an SDK client")
                except Exception as e:  # a failing function is an outcome, not a host error
                    error = e
        finally:
            if watchdog is not None:
                watchdog.cancel()
                watchdog.join()
        duration = time.monotonic() - started
        result = InvocationResult(spec.name, invocation_id, error is None, reason, duration, error,
                                  dict(details or {}))
        ms = int(duration * 1000)
        if error is None:
            log.info("Executed '%s' (Succeeded, Id=%s, Duration=%dms)", spec.log_name, invocation_id, ms,
                     extra={"category": f"Function.{spec.name}"})
        else:
            tb = "".join(traceback.format_exception(type(error), error, error.__traceback__))
            log.error("Executed '%s' (Failed, Id=%s, Duration=%dms)\nResult: Failure\nException: %s",
                      spec.log_name, invocation_id, ms, tb.rstrip(),
                      extra={"category": f"Function.{spec.name}"})
        self.history.append(result)
        if self.on_result is not None:
            self.on_result(result)
        return result

    @staticmethod
    def _run_sync(spec: FunctionSpec, invocation_id: str, kwargs: dict[str, Any]) -> Any:
        """On a pool thread: the invocation's log scope and ``context.thread_local_storage``
        (the worker's ``_run_sync_func`` sets it on the thread that runs the function)."""
        context = kwargs.get("context")
        if isinstance(context, InvocationContext):
            context.thread_local_storage.invocation_id = invocation_id
        try:
            with invocation_scope(spec.name, invocation_id):
                return spec.func(**kwargs)
        finally:
            if isinstance(context, InvocationContext):
                context.thread_local_storage.invocation_id = None

    @staticmethod
    async def _scoped(spec: FunctionSpec, invocation_id: str, kwargs: dict[str, Any]) -> Any:
        context = kwargs.get("context")
        if isinstance(context, InvocationContext):  # the worker sets it on its event loop's thread
            context.thread_local_storage.invocation_id = invocation_id
        with invocation_scope(spec.name, invocation_id):
            return await spec.func(**kwargs)

    def _timeout_warning(self, spec: FunctionSpec, invocation_id: str) -> None:
        log.warning(
            "Timeout value of %s exceeded by function '%s' (Id: '%s'). The real host would stop "
            "the invocation here and restart; devhost cannot stop a Python thread, so it keeps "
            "running.", format_timespan(self.function_timeout or 0), spec.log_name, invocation_id,
            extra={"category": f"Function.{spec.name}"})
