"""Hostile OpenAI-compatible endpoints for tests: servers that stall, never answer, or flood.

Each ``HostileServer`` listens on 127.0.0.1 (port 0) in a daemon thread of the test process and
answers ``GET /v1/models`` normally, so ``servelab bench --engine openai`` gets past its health
check; what it does with a ``POST`` is its ``mode``, which a test may change between runs:

- ``good``: a short, valid chat stream (three tokens, a finish reason, usage, ``[DONE]``);
- ``stall``: headers and three SSE tokens, then nothing, forever;
- ``silent``: reads the request and never answers;
- ``huge_line``: one SSE ``data:`` line of ``HUGE_LINE_BYTES``, then a valid end;
- ``slow``: ``good``, but the end comes ``SLOW_S`` after the tokens (holds many connections);
- ``long_reply``: a valid stream of ``LONG_REPLY_CHARS`` characters in 1,000-character tokens.

The first ``good_posts`` POSTs are answered as ``good`` whatever the mode.

Stalled connections are held until ``close()``.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

HUGE_LINE_BYTES = 10 * 2**20
LONG_REPLY_CHARS = 300_000
SLOW_S = 2.0
HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)


def _event(obj: object) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def _token(text: str) -> bytes:
    return _event({"choices": [{"index": 0, "delta": {"content": text}}]})


def _end(n_tokens: int) -> bytes:
    finish = {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}
    usage = {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": n_tokens}}
    return _event(finish) + _event(usage) + b"data: [DONE]\n\n"


def _send(conn: socket.socket, data: bytes) -> None:
    """One chunk of a chunked body (so a connection can be kept alive for the next request)."""
    conn.sendall(b"%x\r\n%s\r\n" % (len(data), data))


def _read_request(conn: socket.socket) -> tuple[str, bytes]:
    """The request line's method and path, after reading the whole request (body included)."""
    data = b""
    while b"\r\n\r\n" not in data:
        more = conn.recv(65536)
        if not more:
            return "", b""
        data += more
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    while len(body) < length:
        more = conn.recv(65536)
        if not more:
            break
        body += more
    method, path = [*lines[0].split(" "), "", ""][:2]
    return method, path.encode()


@dataclass
class HostileServer:
    mode: str = "good"
    good_posts: int = 0
    posts: int = 0
    post_at: list[float] = field(default_factory=list)  # time.monotonic() of each POST
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=512)
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_posts(self, n: int, timeout_s: float = 60.0) -> float:
        """Wait until ``n`` POSTs have arrived; return when the n-th did (monotonic)."""
        end = time.monotonic() + timeout_s
        while len(self.post_at) < n:
            if time.monotonic() > end:
                raise TimeoutError(f"only {len(self.post_at)} of {n} POSTs arrived")
            time.sleep(0.02)
        return self.post_at[n - 1]

    def close(self) -> None:
        self._stop.set()
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        """Requests on one connection, kept alive until the client closes it."""
        with conn:
            try:
                while not self._stop.is_set():
                    method, path = _read_request(conn)
                    if method == "GET":
                        self._get(conn, path)
                    elif method == "POST":
                        self._post(conn)
                    else:
                        return
            except OSError:
                return  # the client gave up; that is what these servers provoke

    def _get(self, conn: socket.socket, path: bytes) -> None:
        if path.rstrip(b"/").endswith(b"/v1/models"):
            body = json.dumps({"object": "list", "data": [{"id": "hostile"}]}).encode()
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
        else:
            conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")

    def _post(self, conn: socket.socket) -> None:
        with self._lock:
            self.posts += 1
            self.post_at.append(time.monotonic())
            mode = "good" if self.posts <= self.good_posts else self.mode
        if mode == "silent":
            self._stop.wait()
            return
        conn.sendall(HEAD)
        if mode == "huge_line":
            _send(conn, _token("x" * (HUGE_LINE_BYTES - 80)) + _end(1))
        elif mode == "long_reply":
            piece = _token("y" * 1000)
            for _ in range(LONG_REPLY_CHARS // 1000):
                _send(conn, piece)
            _send(conn, _end(LONG_REPLY_CHARS // 1000))
        else:
            _send(conn, _token("one") + _token(" two") + _token(" three"))
            if mode == "stall":
                self._stop.wait()
                return
            if mode == "slow":
                self._stop.wait(SLOW_S)
            _send(conn, _end(3))
        conn.sendall(b"0\r\n\r\n")


@contextmanager
def hostile_server(mode: str, good_posts: int = 0) -> Iterator[HostileServer]:
    server = HostileServer(mode=mode, good_posts=good_posts)
    server.start()
    try:
        yield server
    finally:
        server.close()
