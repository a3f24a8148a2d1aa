"""A lean HTTP/1.1 streaming POST for plain-HTTP endpoints: one socket, h11, nothing else.

Owns the byte path servelab uses to measure local engines. h11 (the protocol library httpx
itself is built on) parses the response; this module only connects, writes, and hands each
received block of body bytes to the caller. Why not httpx here: its pooling and layering cost
about 60 us more CPU per streamed chunk than a blocking socket, which on a 2-core machine shared
with the engine cut the engine's decode rate by about 1 % (benchmarks/client_overhead.py).
Errors are raised as ``PlainHttpError`` with whether any response byte had arrived. Every wait
(connect, each ``recv``) is bounded by the smaller of its own limit and the time ``remaining_s``
says is left of the request's whole deadline, so a server that stalls cannot hold a request past
it; ``abort()`` wakes a blocked reader from another thread.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Iterable, Iterator
from urllib.parse import urlsplit

import h11

READ_BYTES = 1 << 16


class PlainHttpError(Exception):
    """``kind`` is one of: connect, timeout (no byte for ``read_s``), deadline (the whole
    request's time is up), protocol, closed."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class PlainHttpStream:
    """POST ``body`` to ``url`` on a fresh connection and stream the response body."""

    def __init__(
        self,
        url: str,
        body: bytes,
        headers: dict[str, str],
        connect_s: float,
        read_s: float,
        remaining_s: Callable[[], float] | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"plain HTTP only, got {url!r}")
        self.host, self.port = parts.hostname, parts.port or 80
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.body, self.headers = body, headers
        self.connect_s, self.read_s = connect_s, read_s
        self.remaining_s = remaining_s
        self.sock_timeout_s = read_s
        self.sock: socket.socket | None = None
        self.aborted = False
        self.conn = h11.Connection(h11.CLIENT)
        self.status: int | None = None

    def open(self) -> int:
        """Connect, send the request, read the status line and headers; return the status."""
        connect_s = min(self.connect_s, self._left_s())
        try:
            self.sock = socket.create_connection((self.host, self.port), timeout=connect_s)
        except TimeoutError as exc:
            if connect_s < self.connect_s:
                raise PlainHttpError("deadline", "the request's deadline passed") from exc
            raise PlainHttpError("connect", f"connect timed out after {connect_s:g} s") from exc
        except OSError as exc:
            raise PlainHttpError("connect", f"cannot connect: {exc}") from exc
        if self.aborted:  # abort() ran while connecting, before there was a socket to shut
            raise PlainHttpError("closed", "aborted before the request was sent")
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(self.read_s)
        headers = [
            ("Host", f"{self.host}:{self.port}"),
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(self.body))),
            ("Accept-Encoding", "identity"),
            ("Connection", "close"),
            *self.headers.items(),
        ]
        request = h11.Request(method="POST", target=self.target, headers=headers)
        out = self.conn.send(request) + self.conn.send(h11.Data(data=self.body))
        out += self.conn.send(h11.EndOfMessage())
        try:
            self.sock.sendall(out)
        except OSError as exc:
            raise PlainHttpError("connect", f"cannot send the request: {exc}") from exc
        while True:
            event = self._next_event()
            if isinstance(event, h11.Response):
                self.status = event.status_code
                return event.status_code
            if isinstance(event, h11.ConnectionClosed):
                raise PlainHttpError("connect", "server closed the connection without a response")

    def chunks(self) -> Iterator[bytes]:
        """Body bytes as they arrive; ends at the end of the message."""
        while True:
            event = self._next_event()
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                return

    def read_body(self, limit: int) -> bytes:
        return read_head(self.chunks(), limit)

    def _next_event(self) -> h11.Event | type[h11.PAUSED]:
        assert self.sock is not None
        while True:
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise PlainHttpError("closed", f"response cut or malformed: {exc}") from exc
            if event is not h11.NEED_DATA:
                return event  # type: ignore[return-value]  # h11 types NEED_DATA as a class
            self._bound_wait()
            try:
                data = self.sock.recv(READ_BYTES)
            except TimeoutError as exc:
                if self.sock_timeout_s < self.read_s:
                    raise PlainHttpError("deadline", "the request's deadline passed") from exc
                raise PlainHttpError("timeout", f"no byte for {self.read_s:g} s") from exc
            except OSError as exc:
                raise PlainHttpError("closed", f"connection error: {exc}") from exc
            self.conn.receive_data(data)

    def _left_s(self) -> float:
        """Seconds left of the whole request's deadline (``read_s`` when it has none)."""
        left = self.read_s if self.remaining_s is None else self.remaining_s()
        if left <= 0:
            raise PlainHttpError("deadline", "the request's deadline passed")
        return left

    def _bound_wait(self) -> None:
        """Shorten the socket's timeout once the deadline is nearer than ``read_s``.

        The timeout only ever shrinks, and only when it would end 10 ms or more past the
        deadline, so a steady stream pays no system call per ``recv``.
        """
        assert self.sock is not None
        left = self._left_s()
        if left < self.sock_timeout_s - 0.01:
            self.sock_timeout_s = left
            self.sock.settimeout(left)

    def abort(self) -> None:
        """Wake a thread blocked in recv on this stream (closing alone may not)."""
        self.aborted = True
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()


def read_head(chunks: Iterable[bytes], limit: int) -> bytes:
    """At most ``limit`` bytes of a body given as chunks, however much the server sends: reading
    stops at the chunk that reaches the limit."""
    data = bytearray()
    for chunk in chunks:
        data += chunk
        if len(data) >= limit:
            break
    return bytes(data[:limit])
