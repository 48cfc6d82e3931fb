"""A stub Prometheus HTTP API on loopback: answers /api/v1/query from a table keyed by the query text.

Used by unit tests of the metrics adapter and by integration tests (the operator queries it for real).
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlparse

Answer = tuple[int, Any]  # (HTTP status, JSON body or raw bytes)


def vector(*values: float | str, labels: dict[str, str] | None = None) -> Answer:
    result = [
        {
            "metric": dict(labels or {}, i=str(i)) if len(values) > 1 else dict(labels or {}),
            "value": [1700000000.0, str(v)],
        }
        for i, v in enumerate(values)
    ]
    return 200, {"status": "success", "data": {"resultType": "vector", "result": result}}


def scalar(value: float | str) -> Answer:
    return 200, {"status": "success", "data": {"resultType": "scalar", "result": [1700000000.0, str(value)]}}


def bad_query(message: str) -> Answer:
    return 400, {"status": "error", "errorType": "bad_data", "error": message}


class StubPrometheus:
    def __init__(self, host: str = "127.0.0.1", default: Answer | None = None) -> None:
        self.answers: dict[str, Answer] = {}
        self.responder: Callable[[str], Answer | None] | None = None
        self.default = default or vector()
        self.queries: list[str] = []
        self.server = ThreadingHTTPServer((host, 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        assert isinstance(host, str)  # an AF_INET server's address is (str, int); typeshed allows bytes
        return f"http://{host}:{port}"

    def __enter__(self) -> StubPrometheus:
        self.thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer(self, query: str) -> Answer:
        if self.responder is not None:
            found = self.responder(query)
            if found is not None:
                return found
        return self.answers.get(query, self.default)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlparse(self.path)
                if url.path != "/api/v1/query":
                    self.send_error(404)
                    return
                query = parse_qs(url.query).get("query", [""])[0]
                stub.queries.append(query)
                code, body = stub.answer(query)
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_: Any) -> None:
                pass

        return Handler


class LoopbackServer:
    """A raw TCP server on 127.0.0.1 that hands each accepted connection to `_accepted` (a
    subclass decides what a misbehaving Prometheus does with it); stops on exit."""

    def __init__(self, backlog: int = 16, poll: float = 0.1) -> None:
        self._stop = threading.Event()
        self._sock = socket.create_server(("127.0.0.1", 0), backlog=backlog)
        self._sock.settimeout(poll)
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._sock.getsockname()[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            self._accepted(conn)

    def _accepted(self, conn: socket.socket) -> None:
        raise NotImplementedError


class TricklingPrometheus(LoopbackServer):
    """A loopback HTTP server that answers every request with a valid Prometheus answer, one
    byte every `delay` seconds: each read sees progress, so only a total deadline stops it."""

    def __init__(self, answer: Answer | None = None, delay: float = 0.05, endless_header: bool = False) -> None:
        super().__init__()
        code, body = answer or vector(0.5)
        self.body = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.head = (
            f"HTTP/1.1 {code} OK\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(self.body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        if endless_header:  # a header line that never ends: the answer's body never starts
            self.head, self.body = b"HTTP/1.1 200 OK\r\nX-Slow: ", b"a" * 10_000_000
        self.delay = delay
        self.connections = 0

    def _accepted(self, conn: socket.socket) -> None:
        self.connections += 1
        threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)  # the request; its content does not matter
                conn.sendall(self.head)
                for i in range(len(self.body)):
                    if self._stop.wait(self.delay):
                        return
                    conn.sendall(self.body[i : i + 1])
            except OSError:  # the client gave up (what a deadline does)
                return


class HungPrometheus(LoopbackServer):
    """Accepts every connection, reads the request, never answers; holds it until the client
    hangs up. Records how many queries were open together in each wave."""

    def __init__(self) -> None:
        super().__init__(backlog=64, poll=0.05)
        self.waves: list[int] = []  # peak open queries per wave
        self._open = 0
        self._lock = threading.Lock()

    def _accepted(self, conn: socket.socket) -> None:
        with self._lock:
            if self._open == 0:
                self.waves.append(0)
            self._open += 1
            self.waves[-1] = max(self.waves[-1], self._open)
        threading.Thread(target=self._hold, args=(conn,), daemon=True).start()

    def _hold(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(0.05)
            while not self._stop.is_set():
                try:
                    if not conn.recv(65536):  # the client hung up (its deadline shut the socket)
                        break
                except TimeoutError:
                    continue
                except OSError:
                    break
        with self._lock:
            self._open -= 1
