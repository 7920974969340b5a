"""Write-only properties: stored for the emulator's own use, never sent back (as the service does).

Guarantees: no response body holds a property named in ``WRITE_ONLY`` at any depth (a registry's
``password`` in ``containerRegistries`` or ``containerSettings.registry`` of pools, auto pool
specifications, jobs' manager/preparation/release tasks and tasks, a user account's ``password``, a
mount's ``accountKey``/``sasKey``); a ``$filter`` on such a property sees null, so it is no oracle either.
"""
from __future__ import annotations

import re

WRITE_ONLY = frozenset({"password", "accountKey", "sasKey"})
# a JSON key is a quoted string followed by a colon; values that merely contain the word do not match
_KEY = re.compile(rb'"(?:' + b"|".join(re.escape(k.encode()) for k in sorted(WRITE_ONLY)) + rb')"\s*:')


def may_hold_write_only(body: bytes) -> bool:
    """Cheap test on a serialised body (most bodies have no such key and are sent as they are)."""
    return _KEY.search(body) is not None


def without_write_only(obj):
    """A copy of a JSON-like value with every ``WRITE_ONLY`` key removed, at any depth."""
    if isinstance(obj, dict):
        return {k: without_write_only(v) for k, v in obj.items() if k not in WRITE_ONLY}
    if isinstance(obj, list):
        return [without_write_only(v) for v in obj]
    return obj


def is_write_only_path(path: str) -> bool:
    """True for a ``$filter`` property path that reads a write-only property (``a/b/password``)."""
    return any(part in WRITE_ONLY for part in path.split("/"))
