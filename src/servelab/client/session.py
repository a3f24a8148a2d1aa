"""The session a run's requests go through: one event loop's connections, and their pool.

Owns connection policy. Every request in flight is one ``asyncio.Protocol`` on the running
event loop (``wire``): its ``data_received`` timestamps each network read and h11 cuts it into
body pieces; SSE decoding waits until the stream has ended and then runs in the session's
``DecodeQueue``, about 0.2 ms per turn of the loop. No thread per request. Why, as measured on
an H200 with llama-server (docs/client-accuracy.md has the commands and every figure): the
previous design read each request in its own blocking thread (a socket and h11 for fresh plain
connections, a blocking httpx client for keep-alive) and measured decode rates 1.3-1.6 % below
the engine's own, single stream at 1,300 tok/s or 64 streams (likely: a reader thread must
get the GIL back before it can read the clock); this design measures 0.9998-1.0000, at 0.09 ms
of CPU per token at 64 streams (the threads: 0.11-0.13 ms), and held 1,000 streams at 0.04 ms.
On the 2-core machine the same code serves the ``openai`` kind (keep-alive), whose httpx reader
had slowed the engine it measured to 0.83-0.93x. One loop serves plain or TLS, fresh or
keep-alive, and 1 to 1,000 streams with the same code.

Whether to keep connections alive is the engine's to say (its class's ``keep_alive``): local
engines get a fresh loopback connection per request (microseconds), so no request ever meets
a kept-alive connection the server is closing; kept-alive connections go back to the pool only
after a cleanly completed cycle. A session given a ``transport`` (the replay engine's, or a
test's ``httpx.MockTransport``) sends every request through it in a thread with the blocking
httpx reader (``threaded``), as does a URL that an ``HTTP(S)_PROXY`` variable sends through a
proxy; a ``RequestGuard`` wakes such a reader from outside when its deadline passes or the run
stops. ``abort_all`` ends every request of the session at once, on either path.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
import time
import urllib.request
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx

from servelab.client.clock import Clock, MonotonicClock
from servelab.client.wire import Pool

if TYPE_CHECKING:
    from servelab.client.reading import StreamState

DECODE_SLICE = 4  # body blocks parsed between two looks at the clock
DECODE_BUDGET_S = 0.0002  # parsing per turn of the event loop, at most about this long


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


class DecodeQueue:
    """Finished streams are parsed here, one slice per turn of the event loop, first come first
    served. When many streams end at once, parsing each in its own task would not help: a turn
    runs every ready task, so 64 streams ending together blocked the loop for 100-200 ms (every
    other stream's timestamps late by that much); one queue parses for about ``DECODE_BUDGET_S``
    per turn (slices of 64 blocks took 2-4 ms each on the 2-core machine: too long)."""

    def __init__(self) -> None:
        self.jobs: deque[tuple[StreamState, asyncio.Future[None]]] = deque()
        self.task: asyncio.Task[None] | None = None

    async def decode(self, st: StreamState) -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self.jobs.append((st, done))
        if self.task is None or self.task.done():
            self.task = loop.create_task(self._run())
        await done

    async def _run(self) -> None:
        while self.jobs:
            self._turn(time.perf_counter() + DECODE_BUDGET_S)
            await asyncio.sleep(0)

    def _turn(self, until: float) -> None:
        """At least one slice, then more until ``until`` (``time.perf_counter``)."""
        while self.jobs:
            st, done = self.jobs[0]
            if done.cancelled() or st.decode_slice(DECODE_SLICE):
                self.jobs.popleft()
                if not done.done():
                    done.set_result(None)
            if time.perf_counter() >= until:
                return

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()


class StreamSession:
    """The connections of up to ``concurrency`` requests in flight; use as a context manager
    (inside the event loop that sends the requests)."""

    def __init__(
        self,
        concurrency: int,
        keepalive: bool,
        transport: httpx.BaseTransport | None = None,
        *,
        ssl_context: ssl.SSLContext | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.concurrency = max(1, concurrency)
        self.keepalive = keepalive
        self.transport = transport
        self.injected = transport is not None
        self.pool = Pool(clock or MonotonicClock(), keepalive, ssl_context)
        self.decoder = DecodeQueue()
        self._proxied: dict[str, bool] = {}
        self._http: httpx.Client | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._guards: set[RequestGuard] = set()
        self._sockets: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._closing = False
        self.in_flight = 0
        self.streams_max = 0  # the most requests in flight at once (``ClientMeter.result``)

    def opened(self) -> None:
        self.in_flight += 1
        self.streams_max = max(self.streams_max, self.in_flight)

    def finished(self) -> None:
        self.in_flight -= 1

    def threaded_for(self, url: str) -> bool:
        """Whether ``url`` goes through httpx in a thread: an injected transport must see every
        request, and only httpx speaks to an ``HTTP(S)_PROXY``."""
        if self.injected:
            return True
        proxied = self._proxied.get(url)
        if proxied is None:  # reading the environment costs tens of us: once per URL
            proxied = self._proxied[url] = _proxied(url)
        return proxied

    @property
    def closing(self) -> bool:
        return self._closing

    def httpx_client(self) -> httpx.Client:
        with self._lock:
            if self._http is None:
                keep = self.concurrency if self.keepalive else 0
                limits = httpx.Limits(
                    max_connections=self.concurrency + 2, max_keepalive_connections=keep
                )
                self._http = httpx.Client(limits=limits, timeout=None, transport=self.transport)
            return self._http

    def executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=self.concurrency, thread_name_prefix="servelab-reader"
                )
            return self._executor

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
        """End every request in flight at once; requests started later are aborted too."""
        with self._lock:
            self._closing = True
            guards = list(self._guards)
            sockets = list(self._sockets)
        self.pool.abort_all()
        for guard in guards:
            guard.abort()
        for sock in sockets:
            _shutdown(sock)

    def close(self) -> None:
        self.abort_all()
        self.decoder.close()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
        if self._http is not None:
            self._http.close()

    def __enter__(self) -> StreamSession:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _proxied(url: str) -> bool:
    """Whether httpx would send ``url`` through a proxy named in the environment (never for a
    loopback host: a local engine is reached directly, as it always was)."""
    proxies = urllib.request.getproxies_environment()
    parts = urlsplit(url)
    host = parts.hostname or ""
    if host in ("localhost", "::1") or host.startswith("127."):
        return False
    if parts.scheme not in proxies and "all" not in proxies:
        return False
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]  # untyped
    return not bypass(host, proxies)


def _stream_socket(stream: object) -> socket.socket | None:
    """The socket under an httpcore network stream, if it exposes one."""
    get_extra_info = getattr(stream, "get_extra_info", None)
    sock = get_extra_info("socket") if get_extra_info is not None else None
    return sock if isinstance(sock, socket.socket) else None


def _shutdown(sock: socket.socket) -> None:
    """Wake a thread blocked in recv on ``sock`` (closing the fd alone may not)."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
