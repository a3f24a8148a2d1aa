"""The session a run's requests go through: one HTTP client and one reader thread per slot.

Owns connection and thread policy. Each request in flight is read by a blocking reader in its
own thread, while asyncio schedules them. Why not httpx's async client: on a 2-core machine
shared with the engine, its per-chunk CPU cost (async generators through httpcore and h11, about
0.35 ms a chunk here) cut the engine's own decode rate by 3-5 %. Plain-HTTP requests on fresh
connections (local engines) go through ``plainhttp`` (a socket and h11); others (TLS,
keep-alive) through a blocking httpx client (benchmarks/client_overhead.py has the figures).
Local engines get a fresh loopback connection per request (microseconds), so no request ever
meets a kept-alive connection the server is closing. Whether to keep connections alive is the
engine's to say (its class's ``keep_alive``). A session given a ``transport`` (the replay
engine's, or a test's ``httpx.MockTransport``) sends every request through it and the same
reader code, so tests exercise the real client without a socket.

A blocked reader must be woken from outside when its request's deadline passes or the run
stops: each request has a ``RequestGuard`` holding what would wake it (the plain stream, the
httpx connection's socket, captured through httpcore's ``trace`` extension as the connection is
made, and the response's socket once headers arrive). ``abort_all`` also shuts every socket the
session's httpx client ever opened, which reaches a request waiting for headers on a reused
keep-alive connection.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import weakref
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType

import httpx


class RequestGuard:
    """One request's off switch, safe to throw from any thread.

    The reader ``attach``es what would wake it while it is blocked; ``expire`` (the deadline
    passed) or ``abort`` (the run stops) calls those at once, and also every one attached
    later. ``release`` disarms it when the request is over, so a late timer can never touch
    a connection that has gone back to the pool for another request.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wakers: list[Callable[[], None]] = []
        self._released = False
        self.expired = False
        self.aborted = False

    def attach(self, wake: Callable[[], None]) -> None:
        with self._lock:
            if self._released:
                return
            fire = self.expired or self.aborted
            if not fire:
                self._wakers.append(wake)
        if fire:
            wake()

    def expire(self) -> None:
        self._fire("expired")

    def abort(self) -> None:
        self._fire("aborted")

    def detach(self) -> None:
        """What was attached is done with (its socket may be closed or reused next)."""
        with self._lock:
            self._wakers.clear()

    def release(self) -> None:
        with self._lock:
            self._released = True
            self._wakers.clear()

    def _fire(self, flag: str) -> None:
        with self._lock:
            if self._released:
                return
            setattr(self, flag, True)
            wakers = list(self._wakers)
        for wake in wakers:
            wake()


class StreamSession:
    """``concurrency`` reader threads over one connection pool; use as a context manager."""

    def __init__(
        self, concurrency: int, keepalive: bool, transport: httpx.BaseTransport | None = None
    ) -> None:
        keep = concurrency if keepalive else 0
        limits = httpx.Limits(max_connections=concurrency + 2, max_keepalive_connections=keep)
        self.http = httpx.Client(limits=limits, timeout=None, transport=transport)
        self.injected = transport is not None
        self.executor = ThreadPoolExecutor(
            max_workers=max(1, concurrency), thread_name_prefix="servelab-reader"
        )
        self.keepalive = keepalive
        self._guards: set[RequestGuard] = set()
        self._sockets: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._closing = False

    def plain_for(self, url: str) -> bool:
        """Use the lean socket reader: plain HTTP, a fresh connection per request, and no
        injected transport (which must see every request)."""
        return not self.injected and not self.keepalive and url.startswith("http://")

    def track(self, guard: RequestGuard) -> None:
        with self._lock:
            self._guards.add(guard)
            closing = self._closing
        if closing:
            guard.abort()

    def untrack(self, guard: RequestGuard) -> None:
        with self._lock:
            self._guards.discard(guard)

    def trace_for(self, guard: RequestGuard) -> Callable[[str, Mapping[str, object]], None]:
        """An httpcore ``trace`` callback that hands each new connection's socket to ``guard``."""

        def trace(event: str, info: Mapping[str, object]) -> None:
            if event != "connection.connect_tcp.complete":
                return
            sock = _stream_socket(info.get("return_value"))
            if sock is not None:
                with self._lock:
                    self._sockets.add(sock)
                guard.attach(lambda: _shutdown(sock))

        return trace

    def attach_response(self, guard: RequestGuard, response: httpx.Response) -> None:
        """Let ``guard`` wake the reader of ``response`` (whichever connection it came on)."""
        sock = _stream_socket(response.extensions.get("network_stream"))
        if sock is not None:
            guard.attach(lambda: _shutdown(sock))

    def abort_all(self) -> None:
        """Wake every blocked reader thread at once; requests started later are aborted too."""
        with self._lock:
            self._closing = True
            guards = list(self._guards)
            sockets = list(self._sockets)
        for guard in guards:
            guard.abort()
        for sock in sockets:
            _shutdown(sock)

    def close(self) -> None:
        self.abort_all()
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.http.close()

    def __enter__(self) -> StreamSession:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _stream_socket(stream: object) -> socket.socket | None:
    """The socket under an httpcore network stream, if it exposes one."""
    get_extra_info = getattr(stream, "get_extra_info", None)
    sock = get_extra_info("socket") if get_extra_info is not None else None
    return sock if isinstance(sock, socket.socket) else None


def _shutdown(sock: socket.socket) -> None:
    """Wake a thread blocked in recv on ``sock`` (closing the fd alone may not)."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
