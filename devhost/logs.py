"""Logging for the local host: invocation context on every line, secrets never printed.

* ``invocation_scope(name, id)`` marks the current thread (or task) as running an invocation;
  `InvocationFilter` stamps every record emitted meanwhile with ``function`` / ``invocation_id``
  and gives user log records the host's category ``Function.<name>.User`` so host.json
  ``logging.logLevel`` applies to them.
* `RedactingFormatter` removes account keys, SAS signatures, SharedKey and bearer authorizations
  (`conventions.scrub`) and any registered secret from the final text, whatever logged it (SDK
  errors included).
"""
from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
from collections.abc import Callable, Iterable, Iterator

from conventions.scrub import scrub

__all__ = ["invocation_scope", "current_invocation", "InvocationFilter", "RedactingFormatter",
           "redact", "register_secrets", "setup_logging", "HOST_LOGGER"]

HOST_LOGGER = "devhost"

_current: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar(
    "devhost_invocation", default=None)

_secrets: set[str] = set()

# How secrets look in text (SAS signatures, account keys, SharedKey and bearer authorizations, ...) is
# conventions.scrub's, the one scrubber of the app and the emulator too; the host adds the values it
# knows (register_secrets).
REDACTED = "[REDACTED]"


def register_secrets(values: Iterable[str]) -> None:
    """Values (account keys, SAS tokens, client secrets) to strip from every log line."""
    for v in values:
        if v and len(v) >= 8:
            _secrets.add(v)


def redact(text: str) -> str:
    """`text` without any registered secret value and without anything `conventions.scrub` recognises."""
    for s in sorted(_secrets, key=len, reverse=True):
        if s in text:
            text = text.replace(s, REDACTED)
    return scrub(text, marker=REDACTED)


@contextlib.contextmanager
def invocation_scope(function_name: str, invocation_id: str) -> Iterator[None]:
    token = _current.set((function_name, invocation_id))
    try:
        yield
    finally:
        _current.reset(token)


def current_invocation() -> tuple[str, str] | None:
    return _current.get()


class InvocationFilter(logging.Filter):
    """Stamps records with the running invocation and applies host.json log levels.

    ``level_for`` maps a category (``Function.<name>.User``, ``Function.<name>``,
    ``Host.<...>``) to a minimum level; None keeps every record.
    """

    def __init__(self, level_for: Callable[[str], int] | None = None) -> None:
        super().__init__()
        self.level_for = level_for

    def filter(self, record: logging.LogRecord) -> bool:
        inv = _current.get()
        own = record.name == HOST_LOGGER or record.name.startswith(HOST_LOGGER + ".")
        if inv is not None:
            record.function, record.invocation_id = inv
            record.inv = f" [Functions.{inv[0]} {inv[1][:8]}]"
        else:
            record.function = record.invocation_id = None
            record.inv = ""
        if own:
            category = getattr(record, "category", None) or "Host.General"
        elif inv is not None:
            category = f"Function.{inv[0]}.User"
        else:
            category = record.name
        record.category = category
        if self.level_for is not None:
            return record.levelno >= self.level_for(category)
        return True


class RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "inv"):
            record.inv = ""
        return redact(super().format(record))


DEFAULT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s%(inv)s: %(message)s"


def setup_logging(level: int = logging.INFO, level_for: Callable[[str], int] | None = None,
                  stream=None) -> logging.Handler:
    """Install one redacting handler on the root logger (CLI use)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(RedactingFormatter(DEFAULT_FORMAT))
    handler.addFilter(InvocationFilter(level_for))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(min(level, logging.DEBUG) if level_for else level)
    # The SDKs log every HTTP request at INFO; the host keeps them out of the console.
    for noisy in ("azure", "azure.core.pipeline.policies.http_logging_policy", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return handler
