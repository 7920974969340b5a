"""How the emulator's node agent reaches storage: retries of transient transfer failures, and the
injected storage outage (fault injection).

Guarantees: only transient failures are retried — a refused, reset or aborted connection, a timeout,
HTTP 408, 429 and 5xx (503 ServerBusy included) — never another 4xx: a missing blob or a refused SAS is
the user's to fix and fails at once. The waits between attempts double from ``first_delay`` up to
``MAX_DELAY`` (0.5, 1, 2, 4, 8 s by default: about 15 s in all); ``retries=0`` is a single attempt.
A try that is killed while waiting stops within ``STOP_POLL`` seconds. While an injected outage lasts,
every attempt fails as a refused connection would, without contacting storage, and takes the same
retry path; the outage ends by itself. Counters are kept for ``/_emulator/stats``.
"""
from __future__ import annotations

import errno
import http.client
import threading
import time
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

MAX_DELAY = 8.0
STOP_POLL = 0.05
DEFAULT_RETRIES = 5
DEFAULT_FIRST_DELAY = 0.5
TRANSIENT_STATUS = frozenset({408, 429})


class Stopped(Exception):
    """The try was killed while a transfer waited to be retried."""


@dataclass(frozen=True)
class RetryPolicy:
    """How many times a failed attempt is repeated, and the first wait (doubling, capped)."""

    retries: int = DEFAULT_RETRIES
    first_delay: float = DEFAULT_FIRST_DELAY

    def __post_init__(self) -> None:
        if self.retries < 0 or self.first_delay < 0:
            raise ValueError("transfer retries and retry delay must not be negative")

    def delays(self) -> tuple[float, ...]:
        cap = max(MAX_DELAY, self.first_delay)
        return tuple(min(self.first_delay * 2 ** i, cap) for i in range(self.retries))

    @property
    def budget(self) -> float:
        """Seconds spent waiting before a transfer gives up on a failure that does not go away."""
        return sum(self.delays())


def is_transient(exc: BaseException) -> bool:
    """Whether a failed attempt may succeed if repeated (storage unreachable, overloaded or slow)."""
    if isinstance(exc, urllib.error.HTTPError):  # before URLError: it is one
        return exc.code in TRANSIENT_STATUS or exc.code >= 500
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        return isinstance(reason, BaseException) and is_transient(reason)
    # ConnectionError: refused, reset, aborted, broken pipe (RemoteDisconnected is a reset);
    # IncompleteRead: the connection closed in the middle of a body
    return isinstance(exc, (ConnectionError, TimeoutError, http.client.IncompleteRead))


def _refused() -> urllib.error.URLError:
    """What urllib raises when nothing listens on the storage port."""
    return urllib.error.URLError(ConnectionRefusedError(
        errno.ECONNREFUSED, "Connection refused (batchemu storage-outage fault)"))


class StorageLink:
    """Every transfer attempt goes through `run`: the injected outage, the retries and their counters.

    Thread-safe (its own small lock, never the engine's)."""

    def __init__(self, policy: RetryPolicy | None = None):
        self.policy = policy or RetryPolicy()
        self._lock = threading.Lock()
        self._outage_until = 0.0
        self._counts = dict.fromkeys(("retries", "downloadRetries", "uploadRetries", "outageFailures",
                                      "exhausted"), 0)

    # ---- the outage fault ---------------------------------------------------------------------------
    def start_outage(self, seconds: float) -> dict[str, Any]:
        """Storage is unreachable for the next `seconds` (replacing any outage in progress)."""
        with self._lock:
            self._outage_until = time.monotonic() + seconds
        return self.outage()

    def end_outage(self) -> dict[str, Any]:
        with self._lock:
            self._outage_until = 0.0
        return self.outage()

    def outage(self) -> dict[str, Any]:
        with self._lock:
            left = max(0.0, self._outage_until - time.monotonic())
        return {"active": left > 0, "remainingSeconds": round(left, 3)}

    def _check_outage(self) -> None:
        with self._lock:
            down = time.monotonic() < self._outage_until
            if down:
                self._counts["outageFailures"] += 1
        if down:
            raise _refused()

    # ---- attempts -----------------------------------------------------------------------------------
    def run(self, attempt: Callable[[], T], kind: str, should_stop: Callable[[], bool] | None = None) -> T:
        """`attempt()`'s result, repeating it after transient failures; the last failure once the
        retries are spent, any other failure at once. `kind` is "download" or "upload" (counters)."""
        delays = self.policy.delays()
        for i in range(len(delays) + 1):
            try:
                self._check_outage()
                return attempt()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                if i == len(delays):
                    self._count("exhausted")
                    raise
                self._count("retries", f"{kind}Retries")
            self._wait(delays[i], should_stop)
        raise AssertionError("unreachable")  # the loop returns or raises

    def _wait(self, seconds: float, should_stop: Callable[[], bool] | None) -> None:
        deadline = time.monotonic() + seconds
        while True:
            if should_stop is not None and should_stop():
                raise Stopped()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(STOP_POLL, left))

    # ---- counters -----------------------------------------------------------------------------------
    def _count(self, *names: str) -> None:
        with self._lock:
            for name in names:
                self._counts[name] += 1

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._counts)

    def reset_stats(self) -> None:
        with self._lock:
            for name in self._counts:
                self._counts[name] = 0
