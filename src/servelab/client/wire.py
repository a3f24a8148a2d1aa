"""HTTP/1.1 on asyncio: one ``asyncio.Protocol`` per connection, h11 for the protocol.

Owns connections: opening them (plain or TLS, ``loop.create_connection``), sending one request,
and handing each block of response body bytes to the caller with the time it arrived. The hot
path is ``data_received``: it reads the clock first, then lets h11 cut the bytes into the head
and body pieces, and passes each body piece on with that one timestamp. No thread, no task and
no future per chunk: the coroutine that sent a request sleeps until the response has ended (or
failed), so a stream costs the event loop one callback per network read. Timers, not waits,
bound a request: ``read_s`` without a byte (one timer per request that re-arms itself from the
last byte's time, so a byte costs no timer call) and the request's whole deadline (one
``call_later``); both, and ``abort``, end the wait at once with ``transport.abort()``.

``Pool`` keeps connections alive per host: a connection goes back only when h11 says the
request/response cycle completed cleanly (both sides ``DONE``), and ``Exchange.reused`` tells
the caller when a failure before any response byte may be a kept-alive connection the server
had just closed (worth one resend).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import h11

from servelab.client.clock import Clock

BodySink = Callable[[int, bytes], None]
"""Called with (arrival time in ns, body bytes); may raise to stop reading."""


class WireError(Exception):
    """``kind``: connect, timeout (no byte for ``read_s``), deadline (the request's whole time
    is up), closed (cut, reset or malformed), aborted (the run stopped)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class Origin:
    scheme: str
    host: str
    port: int
    target: str

    @classmethod
    def parse(cls, url: str) -> Origin:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise WireError("connect", f"an http:// or https:// URL is needed, got {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(parts.scheme, parts.hostname, port, target)

    @property
    def key(self) -> tuple[str, str, int]:
        return self.scheme, self.host, self.port

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"


class Connection(asyncio.Protocol):
    """One HTTP/1.1 connection; at most one request on it at a time."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.h11 = h11.Connection(h11.CLIENT)
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.status: int | None = None
        self.got_bytes = False
        self.last_ns = 0
        self.end_ns: int | None = None  # when the response's end arrived
        self._sink: BodySink | None = None
        self._done: asyncio.Future[BaseException | None] | None = None

    # -- asyncio.Protocol: the hot path ------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        t_ns = self.clock.now_ns()
        self.last_ns = t_ns
        if self._done is None:
            self.lost = True  # bytes nobody asked for: never reuse this connection
            self._abort()
            return
        self.got_bytes = True
        self.h11.receive_data(data)
        self._events(t_ns)

    def eof_received(self) -> bool:
        if self._done is not None:
            self.h11.receive_data(b"")
            self._events(self.clock.now_ns())
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self._done is not None:
            self.finish(WireError("closed", f"connection lost: {exc or 'closed by the server'}"))

    # -- parsing -----------------------------------------------------------------------------
    def _events(self, t_ns: int) -> None:
        try:
            while self._done is not None:
                event = self.h11.next_event()
                if event is h11.NEED_DATA:
                    return
                self._event(event, t_ns)  # type: ignore[arg-type]  # h11 types sentinels oddly
        except h11.RemoteProtocolError as exc:
            self.finish(WireError("closed", f"response cut or malformed: {exc}"))
        except Exception as exc:  # the sink stopped reading (a line too long, the deadline)
            self.finish(exc)

    def _event(self, event: h11.Event, t_ns: int) -> None:
        if isinstance(event, h11.Data):
            assert self._sink is not None
            self._sink(t_ns, bytes(event.data))
        elif isinstance(event, h11.Response):
            self.status = event.status_code
        elif isinstance(event, h11.EndOfMessage):
            self.end_ns = t_ns
            self.finish(None)
        elif isinstance(event, h11.ConnectionClosed):
            kind = "closed" if self.status is not None else "connect"
            self.finish(WireError(kind, "server closed the connection without a response"))

    # -- one exchange ------------------------------------------------------------------------
    def start(self, request: bytes, sink: BodySink) -> asyncio.Future[BaseException | None]:
        """Send ``request`` (already framed by ``frame``); the future ends with the response."""
        assert self.transport is not None
        self.status = None
        self.end_ns = None
        self.got_bytes = False
        self.last_ns = self.clock.now_ns()
        self._sink = sink
        self._done = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self._done

    def frame(self, origin: Origin, body: bytes, headers: dict[str, str], keep: bool) -> bytes:
        head = [
            ("Host", origin.host_header),
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("Accept-Encoding", "identity"),
            *([] if keep else [("Connection", "close")]),
            *headers.items(),
        ]
        out = self.h11.send(h11.Request(method="POST", target=origin.target, headers=head))
        out = (out or b"") + (self.h11.send(h11.Data(data=body)) or b"")
        return out + (self.h11.send(h11.EndOfMessage()) or b"")

    def finish(self, error: BaseException | None) -> None:
        """End the exchange in progress (the first call wins); a failure closes the connection."""
        done, self._done, self._sink = self._done, None, None
        if error is not None:
            self._abort()
        if done is not None and not done.done():
            done.set_result(error)

    def fail(self, kind: str, message: str) -> None:
        self.finish(WireError(kind, message))

    def alive(self) -> bool:
        return not self.lost and self.transport is not None and not self.transport.is_closing()

    def reusable(self) -> bool:
        """The cycle ended cleanly on both sides; if so, h11 is readied for the next one."""
        if not self.alive():
            return False
        done = self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE
        if done and not self.h11.trailing_data[0]:  # bytes past the response: never reuse
            self.h11.start_next_cycle()
            return True
        return False

    def _abort(self) -> None:
        self.lost = True
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        self._abort()


class Pool:
    """Open connections, and keep finished ones per origin when ``keepalive`` is on."""

    def __init__(self, clock: Clock, keepalive: bool, ssl_context: ssl.SSLContext | None) -> None:
        self.clock = clock
        self.keepalive = keepalive
        self.ssl_context = ssl_context
        self.idle: dict[tuple[str, str, int], list[Connection]] = {}
        self.live: set[Connection] = set()
        self.closed = False

    def take_idle(self, origin: Origin) -> Connection | None:
        idle = self.idle.get(origin.key, [])
        while idle:
            conn = idle.pop()
            if conn.alive():
                return conn
            conn.close()
        return None

    async def connect(self, origin: Origin, timeout_s: float) -> Connection:
        loop = asyncio.get_running_loop()
        tls = self._tls() if origin.scheme == "https" else None
        opening = loop.create_connection(
            lambda: Connection(self.clock), origin.host, origin.port, ssl=tls,
            server_hostname=origin.host if tls else None,
        )  # fmt: skip
        try:
            _, proto = await asyncio.wait_for(opening, timeout_s)
        except TimeoutError as exc:
            raise WireError("connect", f"connect timed out after {timeout_s:g} s") from exc
        except (OSError, ssl.SSLError) as exc:
            raise WireError("connect", f"cannot connect: {exc}") from exc
        return proto

    def put_back(self, origin: Origin, conn: Connection) -> None:
        self.live.discard(conn)
        if self.keepalive and not self.closed and conn.reusable():
            self.idle.setdefault(origin.key, []).append(conn)
        else:
            conn.close()

    def _tls(self) -> ssl.SSLContext:
        if self.ssl_context is None:
            self.ssl_context = default_tls()
        return self.ssl_context

    def abort_all(self) -> None:
        self.closed = True
        for conn in list(self.live):
            conn.fail("aborted", "the run was aborted")
        for conns in self.idle.values():
            for conn in conns:
                conn.close()
        self.idle.clear()


def default_tls() -> ssl.SSLContext:
    """The system's certificate store, plus certifi's where it is installed (httpx's default)."""
    context = ssl.create_default_context()
    with contextlib.suppress(ImportError, OSError):
        import certifi

        context.load_verify_locations(certifi.where())
    return context
