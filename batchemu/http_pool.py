"""Kept-alive HTTP connections for the node agent's storage transfers.

A try's input download and output uploads were one new connection each (urllib): some 0.5 ms of a
request's 1.5 against Azurite, on every task. Connections are now kept per (scheme, host, port) and
taken by one request at a time. Behaves as `urllib.request.urlopen` does for what transfer.py relies
on: a GET redirected (3xx) is sent again through urllib, which follows it; any other status of 300
or more raises ``urllib.error.HTTPError`` (its URL without the SAS); a failure to connect, send or
read the answer's status raises ``urllib.error.URLError`` around the cause (urllib raises some of
these bare: transfer_retry.is_transient and transfer's error codes treat both alike); a failure
while reading the body is raised as it is; header names are merged as urllib's ``add_header`` does;
the configured proxies are honoured (such a request goes through urllib).

A kept connection the server closed meanwhile (Azurite closes idle ones after 5 s) fails when it is
used: the request is then sent once more on a new connection, before anything of an answer was read,
which is safe because every request here is idempotent (Get Blob, List Blobs, Put Blob, Put Block,
Put Block List). Connections idle for longer than ``IDLE_SECONDS`` are not reused at all.
"""
from __future__ import annotations

import http.client
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from .util import strip_sas

IDLE_SECONDS = 2.0  # well under the servers' own idle limits (Azurite 5 s)
IDLE_PER_HOST = 16  # more than a host runs tries at once with every slot transferring
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# what a kept connection the server closed meanwhile fails with (RemoteDisconnected is both)
_STALE = (ConnectionError, http.client.BadStatusLine, ssl.SSLEOFError)
_Key = tuple[str, str, int, float]


class _Idle:
    """Idle connections by host, newest last; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_key: dict[_Key, list[tuple[float, http.client.HTTPConnection]]] = {}

    def take(self, key: _Key) -> http.client.HTTPConnection | None:
        with self._lock:
            idle = self._by_key.get(key) or []
            while idle:
                since, conn = idle.pop()
                if time.monotonic() - since <= IDLE_SECONDS:
                    return conn
                conn.close()
        return None

    def give(self, key: _Key, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._by_key.setdefault(key, [])
            if len(idle) < IDLE_PER_HOST:
                idle.append((time.monotonic(), conn))
                return
        conn.close()


_IDLE = _Idle()


def _proxied(scheme: str, host: str) -> bool:
    return scheme in urllib.request.getproxies() and not urllib.request.proxy_bypass(host)


@contextmanager
def request(method: str, url: str, headers: dict[str, str], body: bytes | BinaryIO | None = None,
            timeout: float = 60.0) -> Iterator[Any]:
    """The response to one request, to be read inside the ``with`` block (the connection is kept for
    the next request only when its answer was read to the end)."""
    parts = urlsplit(url)
    scheme, host = parts.scheme.lower(), parts.hostname or ""
    merged = {name.capitalize(): value for name, value in headers.items()}  # as urllib's add_header
    if scheme not in ("http", "https") or _proxied(scheme, host):
        with _urlopen(method, url, merged, body, timeout) as resp:
            yield resp
        return
    key: _Key = (scheme, host, parts.port or (443 if scheme == "https" else 80), timeout)
    conn, resp = _send(key, method, parts.path + ("?" + parts.query if parts.query else ""), merged, body)
    reusable, redirected = False, False
    try:
        if resp.status >= 300:
            try:
                resp.read()  # to keep the connection; urllib never reads it, so its failure is not the error
                reusable = not resp.will_close
            except (OSError, http.client.HTTPException):
                pass
            redirected = method == "GET" and resp.status in _REDIRECTS
            if not redirected:
                raise urllib.error.HTTPError(strip_sas(url), resp.status, resp.reason, resp.headers, None)
        else:
            yield resp
            reusable = resp.isclosed() and not resp.will_close  # read to its end, and the server keeps it open
    finally:
        if reusable:
            _IDLE.give(key, conn)
        else:
            conn.close()
    if redirected:  # rare for storage: urllib follows it, as it did for every request before
        with _urlopen(method, url, merged, body, timeout) as resp:
            yield resp


def _urlopen(method: str, url: str, headers: dict[str, str], body: bytes | BinaryIO | None, timeout: float) -> Any:
    return urllib.request.urlopen(urllib.request.Request(url, data=body, headers=headers, method=method),
                                  timeout=timeout)


def _send(key: _Key, method: str, target: str, headers: dict[str, str],
          body: bytes | BinaryIO | None) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    scheme, host, port, timeout = key
    start = body.tell() if body is not None and not isinstance(body, bytes) else None
    conn = _IDLE.take(key)
    while True:
        reused = conn is not None
        if conn is None:
            kind = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
            conn = kind(host, port, timeout=timeout)
        try:
            conn.request(method, target, body=body, headers=headers)
            return conn, conn.getresponse()
        except _STALE as exc:
            conn.close()
            if not reused:
                raise urllib.error.URLError(exc) from exc
            # the server had closed this kept connection: once more on a new one, the body from its start
            if start is not None:
                body.seek(start)  # type: ignore[union-attr]
            conn = None
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise urllib.error.URLError(exc) from exc
