"""Thread pools that outlive an invocation, one per kind of fan-out.

A ThreadPoolExecutor made per call starts its threads anew each time, and each start waits for the
GIL to be handed over while the other threads work (5-15 ms a thread): about half a second of an
intake's 16 upload threads, and again for finalize's manifest reads. The Functions worker keeps its
process between invocations, so the pools are made once and kept. Each purpose has its own pool
and no task waits on work of its own purpose, so a pool never waits on itself; concurrent
invocations share a purpose's threads (the storage or Batch account behind them is shared anyway).
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import TypeVar

_T = TypeVar("_T")
_R = TypeVar("_R")

_pools: dict[tuple[str, int], ThreadPoolExecutor] = {}
_lock = threading.Lock()


def pool(purpose: str, size: int) -> ThreadPoolExecutor:
    """The process's pool of `size` threads for `purpose` (made on first use)."""
    key = (purpose, max(1, size))
    with _lock:
        found = _pools.get(key)
        if found is None:
            found = _pools[key] = ThreadPoolExecutor(key[1], thread_name_prefix=purpose)
        return found


def settle(futures: Sequence[Future], cancel: bool) -> None:
    """Wait until none of `futures` runs any more (cancelling those not started when `cancel`), so
    that nothing of a call goes on after it returned or raised, as when leaving a `with
    ThreadPoolExecutor` block."""
    if cancel:
        for f in futures:
            f.cancel()
    wait(futures)


def map_all(purpose: str, size: int, fn: Callable[[_T], _R], items: Iterable[_T]) -> list[_R]:
    """`fn` over `items` on the purpose's pool; the results in order. The first error is raised once
    the calls not started are cancelled and the running ones have ended."""
    executor = pool(purpose, size)
    futures = [executor.submit(fn, item) for item in items]
    try:
        return [f.result() for f in futures]
    except BaseException:
        settle(futures, cancel=True)
        raise


@contextmanager
def submitting(purpose: str, size: int) -> Iterator[Callable[..., Future]]:
    """A `submit(fn, *args)` onto the purpose's pool for the block. Leaving the block waits for all
    that was submitted (cancelling what has not started when the block raised), then raises the
    first error of the work, like leaving a `with ThreadPoolExecutor` block."""
    executor = pool(purpose, size)
    futures: list[Future] = []

    def submit(fn: Callable[..., object], *args: object) -> Future:
        futures.append(executor.submit(fn, *args))
        return futures[-1]

    try:
        yield submit
    except BaseException:
        settle(futures, cancel=True)
        raise
    settle(futures, cancel=False)
    for f in futures:
        f.result()
