"""Handler results and their JSON/empty shorthands, in the Batch service's wire format.

Guarantees: JSON bodies are compact UTF-8 with the OData ``minimalmetadata`` content type the SDK expects,
and never hold a write-only property such as a registry password (`redact`); ``Last-Modified`` values are
RFC 1123 dates.
"""
from __future__ import annotations

from .engine import dumps
from .redact import may_hold_write_only, without_write_only
from .util import http_date, parse_iso

JSON_CT = "application/json;odata=minimalmetadata"


class Response:
    __slots__ = ("status", "headers", "body", "stream")

    def __init__(self, status: int = 200, body: bytes | None = None, headers: dict[str, str] | None = None,
                 stream: tuple[str, int, int] | None = None):
        self.status = status
        self.headers = headers or {}
        self.body = body
        self.stream = stream  # (path, offset, length): a file range sent without reading it into memory


def _json(status: int, obj: object, headers: dict[str, str] | None = None) -> Response:
    """Every JSON body goes out through here: the one place write-only properties are left out."""
    h = {"Content-Type": JSON_CT}
    if headers:
        h.update(headers)
    body = dumps(obj)
    if may_hold_write_only(body):
        body = dumps(without_write_only(obj))
    return Response(status, body, h)


def _empty(status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(status, b"", headers or {})


def _lm(iso: str | None) -> str:
    ts = parse_iso(iso) if iso else None
    return http_date(ts)
