"""An in-process stand-in for the Functions host, for the scale benchmarks (issue 12).

`Host` runs the pipeline's steps as their triggers would, and times every invocation:

- a dropped job file: `accept(ctx, container, name)` (the blob trigger), retried up to 5 times on an error;
- the queues (polled every 0.1 s, one message taken only when a worker is free, as the host's queue
  listener does): SUBMIT_QUEUE -> `continue_submission`, INTAKE_QUEUE -> `accept(..., etag)` (the
  monitor's re-drives and admissions), FINALIZE_QUEUE -> `finalize`. A failed invocation's message
  becomes visible again after 1 s; after 5 dequeues it is set aside as poison (counted, reported);
- the monitor: `watch(ctx)` on its own thread, a tick every `tick_every` seconds (the next tick
  starts right away when one overran, like a past-due timer), never two at once.

Queue and blob invocations share `workers` threads, like one host instance with that many
concurrent invocations. Queues in Azure are polled with a back-off of up to a minute when idle:
that wait is left out here, so wall times are the pipeline's own.
"""
from __future__ import annotations

import math
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from shared.accept import accept, continue_submission
from shared.context import Context
from shared.finalize import finalize
from shared.naming import intake_request_of_message, run_id_of_message
from shared.submit import run_id_of_continuation

MAX_DEQUEUE = 5  # the host's maxDequeueCount / blob trigger retries


@dataclass(frozen=True)
class Invocation:
    kind: str  # intake, continuation, intake_request, finalize
    key: str  # blob name or run id
    started: float  # time.monotonic()
    seconds: float
    error: str | None = None


@dataclass(frozen=True)
class Tick:
    started: float
    seconds: float
    runs: int  # runs the tick looked at (and admission outcomes)
    outcome: dict[str, str] = field(repr=False, default_factory=dict)


class Host:
    def __init__(self, ctx: Context, workers: int = 8, tick_every: float = 1.0,
                 keep_outcomes: bool = False) -> None:
        self.ctx = ctx
        self.workers = workers
        self.tick_every = tick_every
        self.keep_outcomes = keep_outcomes
        self.invocations: list[Invocation] = []
        self.ticks: list[Tick] = []
        self.poison: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._free = threading.Semaphore(workers)
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="host")
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.tick_errors: list[str] = []

    # ------------------------------------------------------------------ lifecycle

    def start(self, monitor: bool = True) -> Host:
        self._threads.append(threading.Thread(target=self._poll, name="host-queues", daemon=True))
        if monitor:
            self._threads.append(threading.Thread(target=self._monitor, name="host-timer", daemon=True))
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=120)
        self._pool.shutdown(wait=True)

    def __enter__(self) -> Host:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ triggers

    def blob_dropped(self, container: str, name: str) -> None:
        """What the blob trigger does for a new job file (waits for a free worker)."""
        self._free.acquire()
        self._pool.submit(self._blob_invocation, container, name)

    def _blob_invocation(self, container: str, name: str) -> None:
        try:
            for attempt in range(1, MAX_DEQUEUE + 1):
                if self._timed("intake", name, lambda: accept(self.ctx, container, name)) or attempt == MAX_DEQUEUE:
                    if attempt == MAX_DEQUEUE:
                        with self._lock:
                            self.poison.append(("intake", name))
                    return
                time.sleep(1)
        finally:
            self._free.release()

    def _poll(self) -> None:
        queues = [
            ("continuation", self.ctx.submit_queue,
             lambda body: continue_submission(self.ctx, run_id_of_continuation(body)), run_id_of_continuation),
            ("intake_request", self.ctx.intake_queue, self._intake_request, lambda body: body[:80]),
            ("finalize", self.ctx.finalize_queue, lambda body: finalize(self.ctx, run_id_of_message(body)),
             run_id_of_message),
        ]
        while not self._stop.is_set():
            took = False
            for kind, queue, handle, key in queues:
                if not self._free.acquire(timeout=0.1):
                    break
                try:
                    msg = next(iter(queue.receive_messages(messages_per_page=1, visibility_timeout=600)), None)
                except Exception:
                    msg = None
                if msg is None:
                    self._free.release()
                    continue
                took = True
                self._pool.submit(self._queue_invocation, kind, queue, msg, handle, key)
            if not took:
                self._stop.wait(0.1)

    def _intake_request(self, body: str) -> None:
        request = intake_request_of_message(body)
        accept(self.ctx, request.container, request.name, etag=request.etag)

    def _queue_invocation(self, kind, queue, msg, handle, key) -> None:
        try:
            try:
                name = key(msg.content)
            except Exception:
                name = str(msg.content)[:80]
            if self._timed(kind, name, lambda: handle(msg.content)):
                queue.delete_message(msg)
            elif msg.dequeue_count >= MAX_DEQUEUE:
                queue.delete_message(msg)
                with self._lock:
                    self.poison.append((kind, name))
            else:
                queue.update_message(msg, visibility_timeout=1)
        except Exception:
            traceback.print_exc()
        finally:
            self._free.release()

    def _timed(self, kind: str, key: str, step: Callable[[], object]) -> bool:
        began = time.monotonic()
        error = None
        try:
            step()
        except Exception as e:
            error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
        with self._lock:
            self.invocations.append(Invocation(kind, key, began, time.monotonic() - began, error))
        return error is None

    def _monitor(self) -> None:
        from shared.watch import watch

        next_at = time.monotonic()
        while not self._stop.is_set():
            delay = next_at - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                return
            began = time.monotonic()
            try:
                outcome = watch(self.ctx)
            except Exception as e:
                with self._lock:
                    self.tick_errors.append(f"{type(e).__name__}: {e}"[:300])
                outcome = {}
            seconds = time.monotonic() - began
            with self._lock:
                self.ticks.append(Tick(began, seconds, len(outcome), outcome if self.keep_outcomes else {}))
            next_at = max(began + self.tick_every, time.monotonic())

    # ------------------------------------------------------------------ waiting and reading

    def wait_until(self, done: Callable[[], bool], deadline_s: float, every: float = 1.0,
                   what: str = "condition") -> float:
        """Poll `done` until true; the seconds it took. TimeoutError after `deadline_s`. Every minute a
        line on stderr says how far the invocations got, so a run that never ends still tells."""
        began = told = time.monotonic()
        while time.monotonic() - began < deadline_s:
            if done():
                return time.monotonic() - began
            time.sleep(every)
            if time.monotonic() - told >= 60:
                told = time.monotonic()
                print(f"[{told - began:.0f} s] waiting for {what}: {self.progress()}", file=sys.stderr, flush=True)
        raise TimeoutError(f"{what} not reached within {deadline_s:.0f} s")

    def progress(self) -> str:
        with self._lock:
            done = list(self.invocations)
        kinds = sorted({i.kind for i in done})
        return "; ".join(f"{k} {sum(1 for i in done if i.kind == k)} (longest "
                         f"{max(i.seconds for i in done if i.kind == k):.1f} s)" for k in kinds) or "no invocation yet"

    def of(self, *kinds: str) -> list[Invocation]:
        with self._lock:
            return [i for i in self.invocations if i.kind in kinds]

    def errors(self) -> list[Invocation]:
        with self._lock:
            return [i for i in self.invocations if i.error]


def exit_on_sigterm() -> None:
    """SIGTERM (e.g. from `timeout`) unwinds like Ctrl-C, so `services()` still stops Azurite and the
    emulator (they run in their own sessions and would outlive the script)."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(p / 100 * len(ordered))))
    return ordered[rank - 1]
