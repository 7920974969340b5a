"""Helpers for the devhost tests: bounded waits, thread checks, storage peeks."""
from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable
from typing import Any


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05,
               message: str = "condition") -> Any:
    """Bounded polling: the value of predicate() once truthy, else AssertionError at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{message} not met within {timeout}s")
        time.sleep(interval)


def devhost_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("devhost") and t.is_alive()]


def queue_texts(queue_client: Any, decode: bool = True) -> list[str]:
    """Texts of the messages currently visible on a queue (peek: does not change them)."""
    try:
        peeked = queue_client.peek_messages(max_messages=32)
    except Exception:  # the queue does not exist
        return []
    texts = [m.content for m in peeked]
    return [base64.b64decode(t).decode() for t in texts] if decode else texts
