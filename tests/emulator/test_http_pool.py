"""The node agent's kept-alive connections (batchemu/http_pool.py), against a real HTTP/1.1 server
on this machine that records which connection served each request."""
from __future__ import annotations

import io
import socket
import threading
import urllib.error
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from batchemu import http_pool
from batchemu.transfer_retry import is_transient


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seen: list[tuple[int, str, str, bytes]] = []  # (client port, method, path, body)
        self.headers: list = []  # each request's headers
        self.close_after = False  # close each connection after its answer, without saying so


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *args: object) -> None:
        pass

    def _hang_up(self) -> None:
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)
        self.close_connection = True

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        sent = self.rfile.read(length) if length else b""
        self.server.seen.append((self.client_address[1], self.command, self.path, sent))
        self.server.headers.append(self.headers)
        if self.path.startswith("/moved"):
            self.send_response(302)
            self.send_header("Location", "/target")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path.startswith("/cut"):  # an error whose body is cut short: the connection closes mid-body
            self.send_response(404)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b"only ten b")
            self._hang_up()
            return
        status = 404 if self.path.startswith("/missing") else 200
        payload = b"x" * 100_000 if self.path.startswith("/big") else b"hello"
        self.send_response(status)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        if self.server.close_after:
            self._hang_up()

    do_GET = do_PUT = _answer


@pytest.fixture
def server() -> Iterator[_Server]:
    s = _Server()
    t = threading.Thread(target=s.serve_forever, daemon=True)
    t.start()
    try:
        yield s
    finally:
        s.shutdown()
        s.server_close()


def _url(s: _Server, path: str) -> str:
    return f"http://127.0.0.1:{s.server_address[1]}{path}"


def _get(url: str, headers: dict[str, str] | None = None) -> bytes:
    with http_pool.request("GET", url, headers or {"x-ms-version": "2021-08-06"}, timeout=5) as resp:
        return resp.read()


def test_requests_read_to_their_end_share_one_connection(server: _Server) -> None:
    for _ in range(5):
        assert _get(_url(server, "/c/blob?sv=1&sig=abc")) == b"hello"
    with http_pool.request("PUT", _url(server, "/c/out"), {"Content-Length": "3"}, b"abc", timeout=5) as resp:
        resp.read()
    ports = {port for port, *_ in server.seen}
    assert len(server.seen) == 6 and len(ports) == 1
    assert server.seen[0][2] == "/c/blob?sv=1&sig=abc" and server.seen[-1][1:] == ("PUT", "/c/out", b"abc")


def test_an_answer_not_read_to_its_end_does_not_keep_its_connection(server: _Server) -> None:
    with http_pool.request("GET", _url(server, "/big"), {}, timeout=5) as resp:
        assert len(resp.read(10)) == 10
    assert _get(_url(server, "/small")) == b"hello"
    assert len({port for port, *_ in server.seen}) == 2


def test_a_connection_the_server_closed_is_replaced_and_the_body_sent_again(server: _Server, monkeypatch) -> None:
    server.close_after = True
    handed_out: list[bool] = []
    real_take = http_pool._IDLE.take

    def take(key):
        conn = real_take(key)
        handed_out.append(conn is not None)
        return conn

    monkeypatch.setattr(http_pool._IDLE, "take", take)
    assert _get(_url(server, "/first")) == b"hello"  # its connection is kept; the server closes it
    body = io.BytesIO(b"preamble|payload")
    body.seek(len(b"preamble|"))  # a body sent from where the file stands, again from there
    with http_pool.request("PUT", _url(server, "/c/out"), {"Content-Length": "7"}, body, timeout=5) as resp:
        assert resp.read() == b"hello"
    assert handed_out == [False, True]  # the PUT was tried on the kept (closed) connection first
    assert [s[1:] for s in server.seen] == [("GET", "/first", b""), ("PUT", "/c/out", b"payload")]
    assert server.seen[0][0] != server.seen[1][0]


def test_an_error_status_is_urllibs_http_error_without_the_sas(server: _Server) -> None:
    with pytest.raises(urllib.error.HTTPError) as info:
        _get(_url(server, "/missing/blob?sv=1&sig=secret"))
    assert info.value.code == 404 and "sig=" not in info.value.geturl() and "secret" not in str(info.value)
    assert not is_transient(info.value)
    assert _get(_url(server, "/after")) == b"hello"  # the error's connection is kept too
    assert len({port for port, *_ in server.seen}) == 1


def test_an_error_whose_body_is_cut_short_is_still_the_error(server: _Server) -> None:
    with pytest.raises(urllib.error.HTTPError) as info:  # not IncompleteRead: urllib never reads that body
        _get(_url(server, "/cut/blob"))
    assert info.value.code == 404 and not is_transient(info.value)
    assert _get(_url(server, "/after")) == b"hello"  # on a new connection


def test_a_redirected_get_is_followed_as_urllib_does(server: _Server) -> None:
    assert _get(_url(server, "/moved?sig=x")) == b"hello"
    assert [s[2] for s in server.seen] == ["/moved?sig=x", "/moved?sig=x", "/target"]  # then urllib's two


def test_header_names_are_merged_as_urllibs_add_header_does(server: _Server) -> None:
    _get(_url(server, "/h"), {"x-ms-version": "1", "X-MS-VERSION": "2", "x-ms-blob-content-type": "a/b"})
    sent = server.headers[0]
    assert sent.get_all("x-ms-version") == ["2"] and sent.get_all("x-ms-blob-content-type") == ["a/b"]


def test_nothing_listening_is_a_transient_url_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        with pytest.raises(urllib.error.URLError) as info:
            _get(f"http://127.0.0.1:{port}/c/b")
    assert isinstance(info.value.reason, ConnectionRefusedError) and is_transient(info.value)
