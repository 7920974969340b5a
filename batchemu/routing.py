"""URL templates to handlers, and per-route request counters for the control plane.

Guarantees: a path that matches a template under another verb answers 405 ``UnsupportedHttpVerb``, one that
matches nothing 404 ``InvalidUri``; path parameters are URL-decoded; ``{path}`` at the end of a template
matches the rest of the path. Counters are keyed by template (ids folded to ``{id}``), never by raw URL.
"""
from __future__ import annotations

import re
import threading
import urllib.parse
from collections.abc import Callable
from typing import Any, NamedTuple

from .errors import BatchError, err
from .util import now_iso

Handler = Callable[..., Any]  # (request, *path parameters) -> Response


class Route(NamedTuple):
    template: str  # with ids folded to {id}: the key of the request counters
    handler: Handler
    args: list[str]  # URL-decoded path parameters


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: dict[str, int] = {}
        self.statuses: dict[str, int] = {}
        self.since = now_iso()

    def add(self, key: str, status: int) -> None:
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + 1
            s = str(status)
            self.statuses[s] = self.statuses.get(s, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {"requests": dict(sorted(self.counts.items())), "total": sum(self.counts.values()),
                    "statusCodes": dict(self.statuses), "since": self.since}

    def reset(self) -> None:
        with self.lock:
            self.counts.clear()
            self.statuses.clear()
            self.since = now_iso()


class Router:
    def __init__(self) -> None:
        self.routes: list[tuple[str, re.Pattern[str], str, Handler]] = []

    def add(self, method: str, template: str, fn: Handler) -> None:
        pattern = "^" + re.sub(r"\{[^}/]+\}", "([^/]+)", template) + "$"
        if template.endswith("{path}"):
            pattern = "^" + re.sub(r"\{[^}/]+\}", "([^/]+)", template[:-6]) + "(.+)$"
        key_tpl = re.sub(r"\{(jobId|poolId|taskId|nodeId)\}", "{id}", template)
        self.routes.append((method, re.compile(pattern), key_tpl, fn))

    def match(self, method: str, path: str) -> Route:
        allowed = False
        for m, rx, tpl, fn in self.routes:
            mt = rx.match(path)
            if mt:
                if m == method:
                    return Route(tpl, fn, [urllib.parse.unquote(g) for g in mt.groups()])
                allowed = True
        if allowed:
            raise BatchError("UnsupportedHttpVerb")
        raise err("InvalidUri")
