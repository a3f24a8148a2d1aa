"""One streamed request: send, timestamp every byte's arrival, hand back an ``Observation``.

Owns the loop around a single HTTP streaming request. It only reads the clock, forwards bytes
to the pure decoders (``LineSplitter`` -> ``SSEParser`` -> ``ResponseAssembler``) and translates
httpx exceptions into outcomes, in this one place. It never sleeps or polls: it blocks on the
socket in a reader thread of the ``StreamSession`` (see session.py for why), and asyncio only
schedules requests, so it does not steal CPU from an engine on the same machine.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from servelab.client.assemble import ResponseAssembler
from servelab.client.clock import Clock
from servelab.client.plainhttp import PlainHttpError, PlainHttpStream
from servelab.client.session import StreamSession
from servelab.client.sse import LineSplitter, Malformed, SSEParser
from servelab.records import Observation, Outcome

ERROR_BODY_LIMIT = 2000


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """What to send. Headers may hold an API key: they are never stored with results."""

    url: str
    payload: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Deadline:
    """``total_s`` bounds the whole request; ``read_s`` bounds each wait for bytes."""

    total_s: float = 600.0
    connect_s: float = 10.0
    read_s: float = 120.0

    def httpx_timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.read_s, connect=self.connect_s)


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

    def since_send(self) -> float:
        return (self.clock.now_ns() - self.t0_ns) / 1e9

    def arrive(self, chunk: bytes) -> None:
        """Hot path while the engine decodes: only a timestamp and an append."""
        self.arrivals.append((self.clock.now_ns(), chunk))

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


def _retryable(exc: httpx.HTTPError, st: _Stream) -> bool:
    """A pooled connection the server had already closed: nothing was processed, so resend."""
    return isinstance(exc, httpx.RemoteProtocolError) and st.status is None


async def stream_request(
    session: StreamSession,
    request: HttpRequest,
    clock: Clock,
    deadline: Deadline | None = None,
    wait_s: float = 0.0,
) -> Observation:
    """Send ``request`` and observe its stream. Never raises for a failed request.

    The bytes are read and timestamped in one of the session's reader threads; if this
    coroutine is cancelled, the response is closed so that thread ends at once.
    """
    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(
        session.executor, observe_blocking, session, request, clock, deadline, wait_s
    )
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        session.abort_all()
        raise


def observe_blocking(
    session: StreamSession,
    request: HttpRequest,
    clock: Clock,
    deadline: Deadline | None = None,
    wait_s: float = 0.0,
) -> Observation:
    """The whole request in the calling thread: send, read, timestamp, assemble.

    If the server closed a kept-alive connection before answering, the request is sent once
    more; the lost attempt's time is added to ``wait_s`` and ``extra["retries"]`` says so.
    """
    deadline = deadline or Deadline()
    retries = 0
    st = _Stream(clock, clock.now_ns())
    outcome, error, exc = _attempt(session, request, deadline, st)
    if exc is not None and _retryable(exc, st):
        retries = 1
        wait_s += st.since_send()
        st = _Stream(clock, clock.now_ns())
        outcome, error, exc = _attempt(session, request, deadline, st)
    end_s = st.since_send()
    if outcome is None:
        st.end()
        outcome, error = st.acc.outcome(st.closed_cleanly)
    obs = st.acc.observation(
        outcome=outcome,
        wait_s=wait_s,
        end_s=end_s,
        first_byte_s=st.first_byte_s,
        http_status=st.status,
        error=error,
        invalid_utf8_bytes=st.lines.invalid_bytes,
    )
    if retries:
        obs.extra["retries"] = retries
    return obs


class _TotalTimeout(Exception):
    pass


def _attempt(
    session: StreamSession, request: HttpRequest, deadline: Deadline, st: _Stream
) -> tuple[Outcome | None, str | None, httpx.HTTPError | None]:
    """One send; transport exceptions become outcomes here and nowhere else."""
    try:
        outcome, error = _exchange(session, request, deadline, st)
        return outcome, error, None
    except _TotalTimeout:
        return Outcome.TIMEOUT, f"no complete response within {deadline.total_s:g} s", None
    except httpx.TimeoutException as exc:
        return Outcome.TIMEOUT, f"{type(exc).__name__}: {exc or 'timed out'}", exc
    except httpx.StreamClosed:
        return Outcome.TRUNCATED_STREAM, "the run was aborted while this request streamed", None
    except PlainHttpError as exc:
        return _plain_outcome(exc, st), str(exc), None
    except httpx.HTTPError as exc:
        outcome = Outcome.CONNECTION_ERROR if st.first_byte_s is None else Outcome.TRUNCATED_STREAM
        return outcome, f"{type(exc).__name__}: {exc}", exc


def _plain_outcome(exc: PlainHttpError, st: _Stream) -> Outcome:
    if exc.kind == "timeout":
        return Outcome.TIMEOUT
    if exc.kind == "connect" or st.status is None:
        return Outcome.CONNECTION_ERROR
    return Outcome.TRUNCATED_STREAM


def _exchange_plain(
    session: StreamSession, request: HttpRequest, deadline: Deadline, st: _Stream
) -> tuple[Outcome | None, str | None]:
    body = json.dumps(request.payload, ensure_ascii=False, separators=(",", ":")).encode()
    stream = PlainHttpStream(
        request.url, body, request.headers, deadline.connect_s, deadline.read_s
    )
    session.track(stream)
    try:
        st.status = stream.open()
        if st.status != 200:
            return _http_error(st.status, stream.read_body(ERROR_BODY_LIMIT))
        _receive(st, stream.chunks(), deadline)
        return None, None
    finally:
        session.untrack(stream)
        stream.close()


def _exchange(
    session: StreamSession, request: HttpRequest, deadline: Deadline, st: _Stream
) -> tuple[Outcome | None, str | None]:
    if session.plain_for(request.url):
        return _exchange_plain(session, request, deadline, st)
    with session.http.stream(
        "POST",
        request.url,
        json=request.payload,
        headers={"Accept-Encoding": "identity", **request.headers},
        timeout=deadline.httpx_timeout(),
    ) as response:
        st.status = response.status_code
        if response.status_code != 200:
            return _http_error(response.status_code, response.read()[:ERROR_BODY_LIMIT])
        session.track(response)
        try:
            _receive(st, response.iter_bytes(), deadline)
        finally:
            session.untrack(response)
    return None, None


def _http_error(status: int, body: bytes) -> tuple[Outcome, str]:
    text = body.decode("utf-8", "replace").strip().replace("\n", " ")
    return Outcome.HTTP_ERROR, f"HTTP {status}: {text[:300]}"


def _receive(st: _Stream, chunks: Iterator[bytes], deadline: Deadline) -> None:
    """Timestamp every block of body bytes; parse them all once the stream has ended."""
    limit_ns = st.t0_ns + round(deadline.total_s * 1e9)
    try:
        for chunk in chunks:
            st.arrive(chunk)
            if st.arrivals[-1][0] > limit_ns:
                raise _TotalTimeout
    finally:
        st.decode_arrivals()
    st.closed_cleanly = True
