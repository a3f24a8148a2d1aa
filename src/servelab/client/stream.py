"""One streamed request: send, timestamp every byte's arrival, hand back an ``Observation``.

Owns the loop around a single HTTP streaming request. It only reads the clock, forwards bytes
to the pure decoders (``LineSplitter`` -> ``SSEParser`` -> ``ResponseAssembler``) and translates
httpx exceptions into outcomes, in this one place. It never sleeps or polls: it blocks on the
socket in a reader thread of the ``StreamSession`` (see session.py for why), and asyncio only
schedules requests, so it does not steal CPU from an engine on the same machine.

A request's whole deadline (``Deadline.total_s``) holds however the server misbehaves: the
socket reader bounds every wait by the time left, and the event loop's timer for the request
wakes a reader blocked anywhere (``RequestGuard``). What a hostile server can make servelab keep
is bounded too: one SSE line (``MAX_LINE_BYTES``), the stored text (``STORED_TEXT_LIMIT``), the
error body read (``ERROR_BODY_LIMIT``) and the error message (``ERROR_TEXT_LIMIT``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx

from servelab.client.assemble import ResponseAssembler
from servelab.client.clock import Clock
from servelab.client.payload import Body
from servelab.client.plainhttp import PlainHttpError, PlainHttpStream, read_head
from servelab.client.session import RequestGuard, StreamSession
from servelab.client.sse import LineSplitter, Malformed, SSEParser
from servelab.records import Observation, Outcome
from servelab.redact import redact

ERROR_BODY_LIMIT = 2000  # bytes of an error response's body read
ERROR_TEXT_LIMIT = 1000  # characters of a row's ``error``
DECODE_BATCH_BYTES = 2**20  # parse arrivals once this many are buffered, so memory stays bounded


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """What to send. Headers may hold an API key: they are never stored with results."""

    url: str
    payload: Body
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Deadline:
    """``total_s`` bounds the whole request; ``read_s`` bounds each wait for bytes."""

    total_s: float = 600.0
    connect_s: float = 10.0
    read_s: float = 120.0

    def httpx_timeout(self) -> httpx.Timeout:
        """No single wait may outlast the whole request (the guard's timer does the rest)."""
        return httpx.Timeout(
            min(self.read_s, self.total_s), connect=min(self.connect_s, self.total_s)
        )

    def message(self) -> str:
        return f"no complete response within {self.total_s:g} s"


class _Stream:
    def __init__(self, clock: Clock, t0_ns: int) -> None:
        self.clock = clock
        self.t0_ns = t0_ns
        self.lines = LineSplitter()
        self.parser = SSEParser()
        self.acc = ResponseAssembler()
        self.first_byte_s: float | None = None
        self.status: int | None = None
        self.closed_cleanly = False
        self.arrivals: list[tuple[int, bytes]] = []
        self.pending_bytes = 0
        self.lost_s = 0.0  # a first attempt's time, when the request had to be sent again
        self.end_s = 0.0

    def since_send(self) -> float:
        return (self.clock.now_ns() - self.t0_ns) / 1e9

    def arrive(self, chunk: bytes) -> int:
        """Hot path while the engine decodes: a timestamp and an append (and, past
        ``DECODE_BATCH_BYTES`` buffered, a parse, which stops a line past its limit).
        Returns the arrival time."""
        t_ns = self.clock.now_ns()
        self.arrivals.append((t_ns, chunk))
        self.pending_bytes += len(chunk)
        if self.pending_bytes > DECODE_BATCH_BYTES:
            self.decode_arrivals()
            if self.lines.overlong:
                raise _LineTooLong
        return t_ns

    def decode_arrivals(self) -> None:
        """Parse what arrived, each chunk with its own arrival time (after the stream, off the
        engine's critical path)."""
        for t_ns, chunk in self.arrivals:
            t_s = (t_ns - self.t0_ns) / 1e9
            if self.first_byte_s is None:
                self.first_byte_s = t_s
            for line in self.lines.feed(chunk):
                self._line(line, t_s)
        self.arrivals.clear()
        self.pending_bytes = 0

    def end(self) -> None:
        """The connection closed: anything still buffered is an unfinished message."""
        t_s = self.since_send()
        events = [e for line in self.lines.flush() for e in self.parser.feed_line(line)]
        events += self.parser.finish()
        if any(isinstance(e, Malformed) for e in events):
            self.acc.cut_mid_message = True  # a half-sent JSON line is a cut, not bad data
        elif events:
            self.acc.add(events, t_s)

    def _line(self, line: str, t_s: float) -> None:
        events = self.parser.feed_line(line)
        if events:
            self.acc.add(events, t_s)


def _retryable(exc: httpx.HTTPError, st: _Stream, guard: RequestGuard) -> bool:
    """A pooled connection the server had already closed: nothing was processed, so resend."""
    stopped = guard.expired or guard.aborted
    return isinstance(exc, httpx.RemoteProtocolError) and st.status is None and not stopped


async def stream_request(
    session: StreamSession,
    request: HttpRequest,
    clock: Clock,
    deadline: Deadline | None = None,
    wait_s: float = 0.0,
) -> Observation:
    """Send ``request`` and observe its stream. Never raises for a failed request.

    The bytes are read and timestamped in one of the session's reader threads. When the
    deadline passes, this loop's timer wakes that thread wherever it is blocked; if this
    coroutine is cancelled, every reader of the session is woken, so the run stops at once.
    """
    deadline = deadline or Deadline()
    guard = RequestGuard()
    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(
        session.executor, observe_blocking, session, request, clock, deadline, wait_s, guard
    )
    timer = loop.call_later(deadline.total_s, guard.expire)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        session.abort_all()
        raise
    finally:
        timer.cancel()


def observe_blocking(
    session: StreamSession,
    request: HttpRequest,
    clock: Clock,
    deadline: Deadline | None = None,
    wait_s: float = 0.0,
    guard: RequestGuard | None = None,
) -> Observation:
    """The whole request in the calling thread: send, read, timestamp, assemble.

    If the server closed a kept-alive connection before answering, the request is sent once
    more; the lost attempt's time is added to ``wait_s`` and ``extra["retries"]`` says so.
    ``guard`` (from ``stream_request``) lets another thread wake this one; without it, the
    socket reader still keeps to the deadline, the httpx one to each wait's.
    """
    deadline = deadline or Deadline()
    guard = guard or RequestGuard()
    session.track(guard)
    try:
        st, outcome, error, retries = _attempts(session, request, deadline, guard, clock)
    finally:
        session.untrack(guard)
        guard.release()
    if outcome is not Outcome.OK and (guard.expired or _past_deadline(outcome, st, deadline)):
        outcome, error = Outcome.TIMEOUT, deadline.message()
    obs = st.acc.observation(
        outcome=outcome,
        wait_s=wait_s + st.lost_s,
        end_s=st.end_s,
        first_byte_s=st.first_byte_s,
        http_status=st.status,
        error=error[:ERROR_TEXT_LIMIT] if error else error,
        invalid_utf8_bytes=st.lines.invalid_bytes,
    )
    if retries:
        obs.extra["retries"] = retries
    return obs


def _past_deadline(outcome: Outcome | None, st: _Stream, deadline: Deadline) -> bool:
    """A wait that timed out at the whole request's deadline: when ``read_s`` is not shorter
    than ``total_s``, httpx's own read timeout and the guard's timer fire together, and either
    may win; the request ran out of its total time either way (10 ms: timer resolution)."""
    return outcome is Outcome.TIMEOUT and st.since_send() >= deadline.total_s - 0.01


def _attempts(
    session: StreamSession,
    request: HttpRequest,
    deadline: Deadline,
    guard: RequestGuard,
    clock: Clock,
) -> tuple[_Stream, Outcome, str | None, int]:
    """Send, and once more if a kept-alive connection was found closed; decide the outcome."""
    st = _Stream(clock, clock.now_ns())
    outcome, error, exc = _attempt(session, request, deadline, st, guard)
    retries = 0
    if exc is not None and _retryable(exc, st, guard):
        retries = 1
        lost_s = st.since_send()
        st = _Stream(clock, clock.now_ns())
        st.lost_s = lost_s
        outcome, error, exc = _attempt(session, request, deadline, st, guard)
    st.end_s = st.since_send()
    if outcome is None:
        st.end()
        outcome, error = st.acc.outcome(st.closed_cleanly)
    if st.lines.overlong and outcome is not Outcome.TIMEOUT:
        outcome, error = Outcome.INVALID_STREAM, _overlong(st)
    return st, outcome, error, retries


def _overlong(st: _Stream) -> str:
    return f"an SSE line exceeded {st.lines.max_line_bytes} bytes; stopped reading"


class _TotalTimeout(Exception):
    pass


class _LineTooLong(Exception):
    pass


def _attempt(
    session: StreamSession,
    request: HttpRequest,
    deadline: Deadline,
    st: _Stream,
    guard: RequestGuard,
) -> tuple[Outcome | None, str | None, httpx.HTTPError | None]:
    """One send; transport exceptions become outcomes here and nowhere else."""
    try:
        outcome, error = _exchange(session, request, deadline, st, guard)
        return outcome, error, None
    except _TotalTimeout:
        return Outcome.TIMEOUT, deadline.message(), None
    except _LineTooLong:
        return Outcome.INVALID_STREAM, _overlong(st), None
    except httpx.TimeoutException as exc:
        return Outcome.TIMEOUT, f"{type(exc).__name__}: {exc or 'timed out'}", exc
    except httpx.StreamClosed:
        return Outcome.TRUNCATED_STREAM, "the run was aborted while this request streamed", None
    except PlainHttpError as exc:
        message = deadline.message() if exc.kind == "deadline" else str(exc)
        return _plain_outcome(exc, st), message, None
    except httpx.HTTPError as exc:
        outcome = Outcome.CONNECTION_ERROR if st.first_byte_s is None else Outcome.TRUNCATED_STREAM
        return outcome, f"{type(exc).__name__}: {exc}", exc


def _plain_outcome(exc: PlainHttpError, st: _Stream) -> Outcome:
    if exc.kind in ("timeout", "deadline"):
        return Outcome.TIMEOUT
    if exc.kind == "connect" or st.status is None:
        return Outcome.CONNECTION_ERROR
    return Outcome.TRUNCATED_STREAM


def _exchange_plain(
    request: HttpRequest, deadline: Deadline, st: _Stream, guard: RequestGuard
) -> tuple[Outcome | None, str | None]:
    body = json.dumps(request.payload, ensure_ascii=False, separators=(",", ":")).encode()
    stream = PlainHttpStream(
        request.url, body, request.headers, deadline.connect_s, deadline.read_s,
        remaining_s=lambda: deadline.total_s - st.since_send(),
    )  # fmt: skip
    guard.attach(stream.abort)
    try:
        st.status = stream.open()
        if st.status != 200:
            return _http_error(st.status, stream.read_body(ERROR_BODY_LIMIT))
        _receive(st, stream.chunks(), deadline)
        return None, None
    finally:
        guard.detach()  # before the socket closes: a late timer must not touch its number
        stream.close()


def _exchange(
    session: StreamSession,
    request: HttpRequest,
    deadline: Deadline,
    st: _Stream,
    guard: RequestGuard,
) -> tuple[Outcome | None, str | None]:
    if session.plain_for(request.url):
        return _exchange_plain(request, deadline, st, guard)
    with session.http.stream(
        "POST",
        request.url,
        json=request.payload,
        headers={"Accept-Encoding": "identity", **request.headers},
        timeout=deadline.httpx_timeout(),
        extensions={"trace": session.trace_for(guard)},
    ) as response:
        st.status = response.status_code
        session.attach_response(guard, response)
        try:
            if response.status_code != 200:
                body = read_head(response.iter_bytes(), ERROR_BODY_LIMIT)
                return _http_error(response.status_code, body)
            _receive(st, response.iter_bytes(), deadline)
        finally:
            guard.detach()  # before the connection goes back to the pool for another request
    return None, None


def _http_error(status: int, body: bytes) -> tuple[Outcome, str]:
    # Redacted before it is cut, so no part of an echoed API key survives the cut.
    text = redact(body.decode("utf-8", "replace")).strip().replace("\n", " ")
    return Outcome.HTTP_ERROR, f"HTTP {status}: {text[:300]}"


def _receive(st: _Stream, chunks: Iterator[bytes], deadline: Deadline) -> None:
    """Timestamp every block of body bytes; parse them all once the stream has ended."""
    limit_ns = st.t0_ns + round(deadline.total_s * 1e9)
    try:
        for chunk in chunks:
            if st.arrive(chunk) > limit_ns:
                raise _TotalTimeout
    finally:
        st.decode_arrivals()
    st.closed_cleanly = True
