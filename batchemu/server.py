"""HTTP front end: a ThreadingHTTPServer (HTTP/1.1 keep-alive) speaking the Batch REST API.

Every request is answered; any unexpected exception becomes a 500 InternalError in the Batch error format
and is logged, so a bad request can never take the server down.

The REST handlers live in `api` (and its `api_*` mixins); this module is the transport: reading requests
(Content-Length or chunked bodies, size limits), authentication and api-version checks, and writing
responses.
"""
from __future__ import annotations

import io
import logging
import re
import socket
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from . import __version__
from .api import App
from .engine import Engine
from .errors import BatchError, NotModified, bad_header, bad_query, invalid_body
from .request import Request
from .responses import Response, _empty, _json

log = logging.getLogger("batchemu.server")

MAX_BODY = 1024 * 1024          # the service's limit for request bodies (RequestBodyTooLarge above it)
MAX_DRAIN = 16 * 1024 * 1024    # bigger bodies are not drained: the connection is closed instead
API_VERSION_RE = re.compile(r"^\d{4}-\d{2}-\d{2}(\.\d+(\.\d+)?)?(-preview)?$")


def _read_chunked(rfile: io.BufferedIOBase, limit: int) -> tuple[bytes | None, bool]:
    """(body, too_big): a body over `limit` bytes is not kept."""
    data = bytearray()
    while True:
        line = rfile.readline(1024)
        if not line:
            raise ValueError("truncated chunked body")
        size = int(line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            while True:
                trailer = rfile.readline(1024)
                if trailer in (b"\r\n", b"\n", b""):
                    break
            return bytes(data), False
        if len(data) + size > limit:
            return None, True
        data += rfile.read(size)
        rfile.readline(4)


def _check_query(req: Request) -> None:
    """The query parameters every Batch operation takes: ``api-version`` (required) and ``timeout``."""
    api = req.query.get("api-version")
    if api is None:
        raise BatchError("MissingRequiredQueryParameter", None,
                         [{"key": "QueryParameterName", "value": "api-version"}])
    if not API_VERSION_RE.match(api):
        raise bad_query("api-version", api, "The api-version is not in a supported format")
    timeout = req.query.get("timeout")
    if timeout is not None:
        try:
            int(timeout)
        except ValueError as exc:
            raise bad_query("timeout", timeout) from exc


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = f"batchemu/{__version__}"
    sys_version = ""
    timeout = 300
    app: App  # set by make_server
    _stat_key: str | None = None
    _headers_buffer: list[bytes]  # BaseHTTPRequestHandler's buffer of unsent header lines

    def setup(self) -> None:
        super().setup()
        try:  # responses are small: don't let Nagle + delayed ACK add 40 ms per request
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:  # quiet; never log query strings (may carry SAS)
        log.debug("%s %s", self.command, self.path.split("?", 1)[0])

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def _handle(self) -> None:
        """Read, authenticate, dispatch, respond: every request gets an answer, whatever goes wrong."""
        rid = str(uuid.uuid4())
        self._stat_key = None
        try:
            resp = self._dispatch(self._read())
        except NotModified:
            resp = _empty(304)
        except BatchError as e:
            resp = _empty(e.status) if self.command == "HEAD" else _json(e.status, e.body(rid))
        except Exception as exc:  # never let a request kill the server
            log.exception("unhandled error for %s %s", self.command, self.path.split("?", 1)[0])
            error = BatchError("InternalError", f"Internal error in the emulator: {type(exc).__name__}")
            resp = _json(500, error.body(rid))
        self._count(resp.status)
        self._respond(resp, rid, self.headers.get("client-request-id"))

    # ------------------------------------------------------------------------------------------- read
    def _read(self) -> Request:
        raw_path, _, raw_query = self.path.partition("?")
        if raw_path.startswith(("http://", "https://")):  # absolute-form request target
            raw_path = "/" + raw_path.split("/", 3)[3] if raw_path.count("/") >= 3 else "/"
        try:
            q = urllib.parse.parse_qs(raw_query, keep_blank_values=True)
        except ValueError:
            q = {}
        local = self.connection.getsockname()
        host = self.headers.get("Host") or f"{local[0]}:{local[1]}"
        req = Request(method=self.command, path=raw_path.rstrip("/") or "/", raw_path=raw_path, raw_query=raw_query,
                      query={k: v[0] for k, v in q.items()}, headers={k.lower(): v for k, v in self.headers.items()},
                      raw_headers=list(self.headers.items()), base=f"http://{host}")
        req.body, req.body_error = self._read_body()
        return req

    def _read_body(self) -> tuple[bytes, BatchError | None]:
        """The body, or the error to answer once the request is authenticated (a body that is too big)."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            try:
                data, too_big = _read_chunked(self.rfile, MAX_BODY)
            except ValueError as exc:
                self.close_connection = True
                raise invalid_body("Malformed chunked transfer encoding") from exc
            if too_big or data is None:
                self.close_connection = True
                return b"", BatchError("RequestBodyTooLarge")
            return data, None
        cl = self.headers.get("Content-Length")
        if not cl:
            return b"", None
        try:
            n = int(cl)
            if n < 0:
                raise ValueError(cl)
        except ValueError as exc:
            self.close_connection = True
            raise bad_header("Content-Length") from exc
        if n > MAX_BODY:
            self._drain(n)
            return b"", BatchError("RequestBodyTooLarge", None, [{"key": "MaxLimit", "value": str(MAX_BODY)}])
        return (self.rfile.read(n) if n else b""), None

    def _drain(self, n: int) -> None:
        """Skip a body we won't read (or close the connection if it is too big to be worth reading)."""
        if n > MAX_DRAIN:
            self.close_connection = True
            return
        remaining = n
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 1 << 16))
            if not chunk:
                break
            remaining -= len(chunk)

    # ------------------------------------------------------------------------------------------- authenticate
    def _authenticate(self, req: Request) -> None:
        self.app.verifier.verify(req.method, req.raw_path, req.raw_query, req.raw_headers)

    # ------------------------------------------------------------------------------------------- dispatch
    def _dispatch(self, req: Request) -> Response:
        if req.path.startswith("/_emulator/"):  # the control plane: no authentication, not counted
            route = self.app.control.match(req.method, req.path)
            req.raise_body_error()
            return route.handler(req, *route.args)  # type: ignore[no-any-return]
        try:
            route = self.app.router.match(req.method, req.path)
        except BatchError:
            self._authenticate(req)  # an unknown URL is only revealed to an authenticated client
            raise
        self._stat_key = f"{req.method} {route.template}"
        self._authenticate(req)
        _check_query(req)
        req.raise_body_error()
        return route.handler(req, *route.args)  # type: ignore[no-any-return]

    # ------------------------------------------------------------------------------------------- respond
    def _count(self, status: int) -> None:
        key = self._stat_key
        if key is None and not self.path.startswith("/_emulator/"):
            key = f"{self.command} (unmatched)"
        if key:
            self.app.stats.add(key, status)

    def _respond(self, resp: Response, rid: str, crid: str | None) -> None:
        try:
            self._send(resp, rid, crid)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _send(self, resp: Response, rid: str, crid: str | None) -> None:
        self.send_response(resp.status)
        self.send_header("request-id", rid)
        if crid:
            self.send_header("client-request-id", crid)
        self.send_header("DataServiceVersion", "3.0")
        headers = dict(resp.headers)
        if resp.stream is None:
            body = resp.body or b""
            if self.command == "HEAD":
                headers.setdefault("Content-Length", str(len(body)))
            else:
                headers["Content-Length"] = str(len(body))
        for k, v in headers.items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        if resp.stream is None and resp.body and self.command != "HEAD":
            # one write for headers + body
            self._headers_buffer.append(b"\r\n")
            self._headers_buffer.append(resp.body)
            self.flush_headers()
            return
        self.end_headers()
        if self.command == "HEAD":
            return
        if resp.stream is not None:
            self._stream(*resp.stream)
        elif resp.body:
            self.wfile.write(resp.body)

    def _stream(self, path: str, start: int, length: int) -> None:
        """`length` bytes of a file from `start`, padded with NULs if the file shrank (framing stays valid)."""
        with open(path, "rb") as f:
            f.seek(start)
            remaining = length
            while remaining > 0:
                chunk = f.read(min(remaining, 1 << 16))
                if not chunk:
                    break
                self.wfile.write(chunk)
                remaining -= len(chunk)
            if remaining > 0:
                self.wfile.write(b"\0" * remaining)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:  # connection-level errors: log, keep serving
        log.debug("connection error from %s", client_address, exc_info=True)


def make_server(engine: Engine, host: str, port: int, account: str, key: str) -> Server:
    app = App(engine, account, key)
    handler = type("BoundHandler", (Handler,), {"app": app})
    return Server((host, port), handler)
