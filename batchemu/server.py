"""HTTP front end: a ThreadingHTTPServer (HTTP/1.1 keep-alive) speaking the Batch REST API.

Every request is answered; any unexpected exception becomes a 500 InternalError in the Batch error format
and is logged, so a bad request can never take the server down.

The REST handlers live in `api` (and its `api_*` mixins); this module is the transport: reading requests
(Content-Length or chunked bodies, size limits), authentication and api-version checks, and writing
responses.
"""
from __future__ import annotations

import logging
import re
import socket
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from . import __version__
from .api import App
from .engine import Engine
from .errors import BatchError, NotModified, bad_header, bad_query, invalid_body
from .responses import Response, _empty, _json

log = logging.getLogger("batchemu.server")

MAX_BODY = 1024 * 1024          # the service's limit for request bodies (RequestBodyTooLarge above it)
MAX_DRAIN = 16 * 1024 * 1024    # bigger bodies are not drained: the connection is closed instead
API_VERSION_RE = re.compile(r"^\d{4}-\d{2}-\d{2}(\.\d+(\.\d+)?)?(-preview)?$")


class Request:
    __slots__ = ("method", "path", "raw_path", "query", "raw_query", "headers", "body", "base")


def _read_chunked(rfile, limit):
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


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = f"batchemu/{__version__}"
    sys_version = ""
    timeout = 300
    app: App = None  # set by make_server

    def setup(self):
        super().setup()
        try:  # responses are small: don't let Nagle + delayed ACK add 40 ms per request
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    def log_message(self, fmt, *args):  # quiet by default; never log query strings (may carry SAS)
        log.debug("%s %s", self.command, self.path.split("?", 1)[0])

    def do_GET(self):
        self._handle()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def _handle(self):
        rid = str(uuid.uuid4())
        crid = self.headers.get("client-request-id")
        stat_key = None
        status = 500
        try:
            req = Request()
            req.method = self.command
            raw_path, _, raw_query = self.path.partition("?")
            if raw_path.startswith("http://") or raw_path.startswith("https://"):
                raw_path = "/" + raw_path.split("/", 3)[3] if raw_path.count("/") >= 3 else "/"
            req.raw_path, req.raw_query = raw_path, raw_query
            req.path = raw_path.rstrip("/") or "/"
            try:
                q = urllib.parse.parse_qs(raw_query, keep_blank_values=True)
            except ValueError:
                q = {}
            req.query = {k: v[0] for k, v in q.items()}
            req.headers = {k.lower(): v for k, v in self.headers.items()}
            host = self.headers.get("Host") or f"{self.server.server_address[0]}:{self.server.server_address[1]}"
            req.base = f"http://{host}"
            req.body = b""
            # body
            body_error = None
            te = (self.headers.get("Transfer-Encoding") or "").lower()
            if "chunked" in te:
                try:
                    data, too_big = _read_chunked(self.rfile, MAX_BODY)
                except ValueError:
                    self.close_connection = True
                    raise invalid_body("Malformed chunked transfer encoding")
                if too_big:
                    self.close_connection = True
                    body_error = BatchError("RequestBodyTooLarge")
                else:
                    req.body = data
            else:
                cl = self.headers.get("Content-Length")
                if cl:
                    try:
                        n = int(cl)
                        if n < 0:
                            raise ValueError
                    except ValueError:
                        self.close_connection = True
                        raise bad_header("Content-Length")
                    if n > MAX_BODY:
                        body_error = BatchError("RequestBodyTooLarge", None,
                                                [{"key": "MaxLimit", "value": str(MAX_BODY)}])
                        if n <= MAX_DRAIN:
                            remaining = n
                            while remaining > 0:
                                chunk = self.rfile.read(min(remaining, 1 << 16))
                                if not chunk:
                                    break
                                remaining -= len(chunk)
                        else:
                            self.close_connection = True
                    elif n:
                        req.body = self.rfile.read(n)
            app = self.app
            if req.path.startswith("/_emulator/"):
                tpl, fn, args = app.control.match(req.method, req.path)
                if body_error:
                    raise body_error
                resp = fn(req, *args)
            else:
                route_error = None
                try:
                    tpl, fn, args = app.router.match(req.method, req.path)
                    stat_key = f"{req.method} {tpl}"
                except BatchError as e:
                    route_error = e
                app.verifier.verify(req.method, raw_path, raw_query, list(self.headers.items()))
                if route_error is not None:
                    raise route_error
                api = req.query.get("api-version")
                if api is None:
                    raise BatchError("MissingRequiredQueryParameter", None,
                                     [{"key": "QueryParameterName", "value": "api-version"}])
                if not API_VERSION_RE.match(api):
                    raise bad_query("api-version", api, "The api-version is not in a supported format",
                                    code="InvalidQueryParameterValue")
                if req.query.get("timeout") is not None:
                    try:
                        int(req.query["timeout"])
                    except ValueError:
                        raise bad_query("timeout", req.query["timeout"])
                if body_error:
                    raise body_error
                resp = fn(req, *args)
        except NotModified:
            resp = _empty(304)
        except BatchError as e:
            if self.command == "HEAD":
                resp = _empty(e.status)
            else:
                resp = _json(e.status, e.body(rid))
        except Exception as exc:  # never let a request kill the server
            log.exception("unhandled error for %s %s", self.command, self.path.split("?", 1)[0])
            resp = _json(500, BatchError("InternalError", f"Internal error in the emulator: {type(exc).__name__}").body(rid))
        status = resp.status
        if stat_key is None and not self.path.startswith("/_emulator/"):
            stat_key = f"{self.command} (unmatched)"
        if stat_key:
            self.app.stats.add(stat_key, status)
        try:
            self._send(resp, rid, crid)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _send(self, resp: Response, rid: str, crid: str | None):
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
            path, start, length = resp.stream
            with open(path, "rb") as f:
                f.seek(start)
                remaining = length
                while remaining > 0:
                    chunk = f.read(min(remaining, 1 << 16))
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    remaining -= len(chunk)
                if remaining > 0:  # file shrank: pad so the framing stays valid
                    self.wfile.write(b"\0" * remaining)
        elif resp.body:
            self.wfile.write(resp.body)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    allow_reuse_address = True

    def handle_error(self, request, client_address):  # connection-level errors: log, keep serving
        log.debug("connection error from %s", client_address, exc_info=True)


def make_server(engine: Engine, host: str, port: int, account: str, key: str) -> Server:
    app = App(engine, account, key)
    handler = type("BoundHandler", (Handler,), {"app": app})
    return Server((host, port), handler)
