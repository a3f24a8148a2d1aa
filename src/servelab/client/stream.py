"""One streamed request: send, timestamp every byte's arrival, hand back an ``Observation``.

Owns the exchange around a single HTTP streaming request on the session's event loop. The
connection's ``data_received`` (``wire``) reads the clock and appends each body block to the
request's ``StreamState``; this coroutine sleeps until the response has ended, then parses the
blocks (``LineSplitter`` -> ``SSEParser`` -> ``ResponseAssembler``) in the session's
``DecodeQueue``, one slice per turn of the loop, so parsing never delays another stream's
timestamps by more than a slice's parse (about 0.5 ms), however many streams end at once. Wire
errors become outcomes here and nowhere else. Why one event loop and not a thread per request:
session.py, with the figures (docs/client-accuracy.md has the commands).

A request's whole deadline (``Deadline.total_s``) holds however the server misbehaves: a timer
ends the exchange at the deadline wherever it waits (connect, head, body), another ends it
after ``read_s`` without a byte; cancelling this coroutine aborts every request of the session,
so a stopped run ends at once. A kept-alive connection found closed before any response byte
is resent once on a fresh one (``extra["retries"]``). Requests the session must send through
httpx (an injected transport, a proxy) run in a thread (``threaded``), with the same deadline.
"""

from __future__ import annotations

import asyncio
import json

from servelab.client.clock import Clock
from servelab.client.reading import (
    ERROR_BODY_LIMIT,
    ERROR_TEXT_LIMIT,
    Attempted,
    Deadline,
    HttpRequest,
    LineTooLong,
    StreamState,
    TotalTimeout,
    http_error,
    observation,
    overlong,
)
from servelab.client.session import RequestGuard, StreamSession
from servelab.client.threaded import observe_blocking
from servelab.client.wire import Connection, Origin, WireError
from servelab.records import Observation, Outcome

__all__ = [
    "ERROR_BODY_LIMIT",
    "ERROR_TEXT_LIMIT",
    "Deadline",
    "HttpRequest",
    "observe_blocking",
    "stream_request",
]


async def stream_request(
    session: StreamSession,
    request: HttpRequest,
    clock: Clock,
    deadline: Deadline | None = None,
    wait_s: float = 0.0,
) -> Observation:
    """Send ``request`` and observe its stream. Never raises for a failed request; if this
    coroutine is cancelled, every request of the session ends, so the run stops at once."""
    deadline = deadline or Deadline()
    session.opened()
    try:
        if session.threaded_for(request.url):
            return await _in_thread(session, request, clock, deadline, wait_s)
        done = await _attempts(session, request, clock, deadline)
        await session.decoder.decode(done.st)
        return observation(done, deadline, wait_s)
    except asyncio.CancelledError:
        session.abort_all()
        raise
    finally:
        session.finished()


async def _in_thread(
    session: StreamSession, request: HttpRequest, clock: Clock, deadline: Deadline, wait_s: float
) -> Observation:
    guard = RequestGuard()
    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(
        session.executor(), observe_blocking, session, request, clock, deadline, wait_s, guard
    )
    timer = loop.call_later(deadline.total_s, guard.expire)
    try:
        return await asyncio.shield(future)
    finally:
        timer.cancel()


async def _attempts(
    session: StreamSession, request: HttpRequest, clock: Clock, deadline: Deadline
) -> Attempted:
    """Send, and once more if a kept-alive connection was found closed before any answer."""
    body = json.dumps(request.payload, ensure_ascii=False, separators=(",", ":")).encode()
    st = StreamState(clock, clock.now_ns(), deadline)
    done, retry = await _attempt(session, request, body, deadline, st)
    if retry and not session.closing:
        lost_s = st.since_send()
        st = StreamState(clock, clock.now_ns(), deadline)
        st.lost_s = lost_s
        done, _ = await _attempt(session, request, body, deadline, st, reuse=False)
        done.retries = 1
    if done.st.end_ns is None:  # failed: it ended now, not once its bytes have been parsed
        done.st.end_ns = clock.now_ns()
    return done


async def _attempt(
    session: StreamSession,
    request: HttpRequest,
    body: bytes,
    deadline: Deadline,
    st: StreamState,
    reuse: bool = True,
) -> tuple[Attempted, bool]:
    """One send; returns how it ended and whether it may be sent again."""
    conn, reused = None, False
    try:
        origin = Origin.parse(request.url)
        conn = session.pool.take_idle(origin) if reuse and session.keepalive else None
        reused = conn is not None
        if conn is None:
            conn = await _connect(session, origin, deadline, st)
        error, error_body = await _exchange(session, origin, conn, request, body, deadline, st)
    except WireError as exc:
        return _failed(exc, st, deadline), False
    st.status = conn.status
    if isinstance(error, WireError):
        retry = reused and error.kind in ("closed", "connect") and not conn.got_bytes
        return _failed(error, st, deadline), retry
    if st.status is not None and st.status != 200:
        return Attempted(st, *http_error(st.status, bytes(error_body[:ERROR_BODY_LIMIT]))), False
    if isinstance(error, TotalTimeout):
        return Attempted(st, Outcome.TIMEOUT, deadline.message(), expired=True), False
    if isinstance(error, LineTooLong):
        return Attempted(st, Outcome.INVALID_STREAM, overlong(st)), False
    st.closed_cleanly = True
    st.end_ns = conn.end_ns
    return Attempted(st, None, None), False


async def _connect(
    session: StreamSession, origin: Origin, deadline: Deadline, st: StreamState
) -> Connection:
    left_s = deadline.total_s - st.since_send()
    if left_s <= 0:
        raise WireError("deadline", deadline.message())
    if session.closing:
        raise WireError("aborted", "the run was aborted before the request was sent")
    try:
        return await session.pool.connect(origin, min(deadline.connect_s, left_s))
    except WireError as exc:
        if "timed out" in str(exc) and left_s < deadline.connect_s:
            raise WireError("deadline", deadline.message()) from exc
        raise


async def _exchange(
    session: StreamSession,
    origin: Origin,
    conn: Connection,
    request: HttpRequest,
    body: bytes,
    deadline: Deadline,
    st: StreamState,
) -> tuple[BaseException | None, bytearray]:
    """Send on ``conn`` and wait for the whole response; the connection goes back to the pool
    (or is closed) however this ends."""
    error_body = bytearray()

    def sink(t_ns: int, data: bytes) -> None:
        if conn.status == 200:
            st.arrive(t_ns, data)
        else:
            error_body.extend(data)
            if len(error_body) >= ERROR_BODY_LIMIT:
                raise _ErrorBodyRead

    session.pool.live.add(conn)
    framed = conn.frame(origin, body, request.headers, session.keepalive)
    finished = conn.start(framed, sink)
    timers = _Timers(conn, deadline, st)
    if session.closing:
        conn.fail("aborted", "the run was aborted")
    try:
        error = await finished
    finally:
        timers.cancel()
        session.pool.put_back(origin, conn)
    return (None if isinstance(error, _ErrorBodyRead) else error), error_body


class _ErrorBodyRead(Exception):
    """As much of an error response's body as is kept has arrived."""


class _Timers:
    """The request's deadline, and ``read_s`` without a byte (re-armed from the last byte's
    time when it fires, so a byte costs no timer call)."""

    def __init__(self, conn: Connection, deadline: Deadline, st: StreamState) -> None:
        self.loop = asyncio.get_running_loop()
        self.conn, self.read_s = conn, deadline.read_s
        left_s = max(0.0, deadline.total_s - st.since_send())
        self.total = self.loop.call_later(left_s, conn.fail, "deadline", deadline.message())
        self.read = self.loop.call_later(self.read_s, self._check_read)

    def _check_read(self) -> None:
        idle_s = (self.conn.clock.now_ns() - self.conn.last_ns) / 1e9
        if idle_s >= self.read_s - 0.001:
            self.conn.fail("timeout", f"no byte for {self.read_s:g} s")
        else:
            self.read = self.loop.call_later(self.read_s - idle_s, self._check_read)

    def cancel(self) -> None:
        self.total.cancel()
        self.read.cancel()


def _failed(exc: WireError, st: StreamState, deadline: Deadline) -> Attempted:
    if exc.kind == "deadline":
        return Attempted(st, Outcome.TIMEOUT, deadline.message(), expired=True)
    if exc.kind == "timeout":
        return Attempted(st, Outcome.TIMEOUT, str(exc))
    if exc.kind == "connect" or st.status is None:
        return Attempted(st, Outcome.CONNECTION_ERROR, str(exc))
    return Attempted(st, Outcome.TRUNCATED_STREAM, str(exc))
