"""Request plumbing every REST handler shares: bodies, conditional headers, write answers, paging.

Guarantees: bodies are parsed as JSON and validated against the operation's schema before any handler
acts; conditional headers become a `Conditions` handed to the engine method (which checks them under its
lock); list operations page with ``maxresults`` (1-1000, default 1000) and an opaque ``$skiptoken``
carried in ``odata.nextLink``, after ``$filter`` and before ``$select``. Handlers never take the engine's
lock or read its state: they call engine methods and serialise what those return.
"""
from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

from . import validation as V
from .auth import SharedKeyVerifier
from .conditions import Conditions
from .engine import Engine
from .errors import BatchError, bad_query, invalid_body
from .model import Json, Stamp
from .odata import apply_select, compile_filter, dict_getter, parse_select
from .request import Request
from .responses import Response, _empty, _json, _lm
from .routing import Stats

MAX_RESULTS_DEFAULT = 1000


class AppCore:
    """What the handler mixins of `api.App` share."""

    def __init__(self, engine: Engine, account: str, key: str):
        self.engine = engine
        self.account = account
        self.verifier = SharedKeyVerifier(account, key)
        self.stats = Stats()
        self.started = time.time()

    @staticmethod
    def parse_body(req: Request, schema: V.Schema, required: bool = True) -> Json:
        if not req.body:
            if required:
                raise invalid_body("The request body is empty")
            return {}
        try:
            body = json.loads(req.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise invalid_body(f"Malformed JSON: {exc}") from exc
        return V.validate(body, schema)

    @staticmethod
    def not_emulated(operation: str, route: str) -> Callable[..., Response]:
        """The handler of a Batch operation the emulator does not implement: 400 NotSupportedByEmulator,
        naming the operation (its id in the REST spec) and its route."""
        def handler(req: Request, *args: str) -> Response:
            raise BatchError("NotSupportedByEmulator",
                             f"The operation {operation} ({route}) is not supported by the local Batch emulator "
                             "(batchemu).", [{"key": "Operation", "value": operation},
                                             {"key": "Route", "value": route}])
        return handler

    @staticmethod
    def conditions(req: Request) -> Conditions:
        return Conditions.from_request(req.method, req.headers)

    @staticmethod
    def created(req: Request, stamp: Stamp) -> Response:
        url = f"{req.base}/{stamp.path}"
        return _empty(201, {"ETag": stamp.etag, "Last-Modified": _lm(stamp.last_modified), "Location": url,
                            "DataServiceId": url})

    @staticmethod
    def written(req: Request, stamp: Stamp | None, status: int, path: str | None = None) -> Response:
        """The empty answer to a change: DataServiceId, and the ETag/Last-Modified of the written version
        (none if the resource is gone)."""
        if stamp is None:
            return _empty(status, {"DataServiceId": f"{req.base}/{path}"})
        return _empty(status, {"DataServiceId": f"{req.base}/{stamp.path}", "ETag": stamp.etag,
                               "Last-Modified": _lm(stamp.last_modified)})

    @staticmethod
    def resource(req: Request, d: Json) -> Response:
        """A single resource (after ``$select``), with its ETag and Last-Modified."""
        return _json(200, apply_select(d, parse_select(req.query.get("$select"))),
                     {"ETag": d["eTag"], "Last-Modified": _lm(d["lastModified"])})

    @staticmethod
    def max_results(req: Request) -> int:
        v = req.query.get("maxresults")
        if v is None:
            return MAX_RESULTS_DEFAULT
        try:
            n = int(v)
        except ValueError as exc:
            raise bad_query("maxresults", v) from exc
        if not 1 <= n <= 1000:
            raise bad_query("maxresults", v, "maxresults must be between 1 and 1000",
                            code="OutOfRangeQueryParameterValue")
        return n

    @staticmethod
    def skip_token(req: Request, default: int) -> int:
        tok = req.query.get("$skiptoken")
        if tok is None:
            return default
        try:
            return int(tok)
        except ValueError as exc:
            raise bad_query("$skiptoken", tok) from exc

    @staticmethod
    def next_link(req: Request, token: int | str) -> str:
        params = {k: v for k, v in req.query.items() if k != "$skiptoken"}
        params["$skiptoken"] = str(token)
        return f"{req.base}{req.path}?" + urllib.parse.urlencode(params, quote_via=urllib.parse.quote)

    def page(self, req: Request, value: list[Json], odata: str, more: int | str | None) -> Response:
        body: dict[str, Any] = {"odata.metadata": f"{req.base}/$metadata#{odata}", "value": value}
        if more is not None:
            body["odata.nextLink"] = self.next_link(req, more)
        return _json(200, body)

    def dict_page(self, req: Request, items: list[Json], odata: str) -> Response:
        """A list response from rendered items: ``$filter``, then paging by position, then ``$select``."""
        pred = compile_filter(req.query.get("$filter"))
        select = parse_select(req.query.get("$select"))
        n = self.max_results(req)
        start = max(0, self.skip_token(req, 0))
        out: list[Json] = []
        for i, d in enumerate(items[start:], start):
            if pred is not None and not pred(dict_getter(d)):
                continue
            if len(out) == n:
                return self.page(req, out, odata, i)
            out.append(apply_select(d, select))
        return self.page(req, out, odata, None)
