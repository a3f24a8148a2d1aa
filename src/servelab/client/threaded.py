"""The blocking httpx reader, kept for what must go through httpx: an injected transport.

Owns the path for a session given a ``transport`` (the replay engine's, or a test's
``httpx.MockTransport``, which must see every request) and for URLs an ``HTTP(S)_PROXY``
variable sends through a proxy (httpx honours them; the asyncio reader does not speak to
proxies). Each request runs in one of the session's threads; a ``RequestGuard`` holds what
would wake it (the connection's socket, captured through httpcore's ``trace`` extension, and
the response's), so the event loop's timer or an abort wakes a reader blocked anywhere. httpx
exceptions become outcomes here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx

from servelab.client.clock import Clock
from servelab.client.reading import (
    ERROR_BODY_LIMIT,
    Attempted,
    Deadline,
    HttpRequest,
    LineTooLong,
    StreamState,
    TotalTimeout,
    http_error,
    observation,
    overlong,
    read_head,
)
from servelab.client.session import RequestGuard, StreamSession
from servelab.records import Observation, Outcome


def observe_blocking(
    session: StreamSession,
    request: HttpRequest,
    clock: Clock,
    deadline: Deadline | None = None,
    wait_s: float = 0.0,
    guard: RequestGuard | None = None,
) -> Observation:
    """The whole request through httpx in the calling thread: send, read, timestamp, assemble.

    If the server closed a kept-alive connection before answering, the request is sent once
    more; the lost attempt's time is added to ``wait_s`` and ``extra["retries"]`` says so.
    ``guard`` (from ``stream_request``) lets another thread wake this one; without it, each
    wait keeps to httpx's timeout.
    """
    deadline = deadline or Deadline()
    guard = guard or RequestGuard()
    session.track(guard)
    try:
        done = _attempts(session, request, deadline, guard, clock)
    finally:
        session.untrack(guard)
        guard.release()
    done.expired = guard.expired
    return observation(done, deadline, wait_s)


def _attempts(
    session: StreamSession,
    request: HttpRequest,
    deadline: Deadline,
    guard: RequestGuard,
    clock: Clock,
) -> Attempted:
    """Send, and once more if a kept-alive connection was found closed."""
    st = StreamState(clock, clock.now_ns(), deadline)
    outcome, error, exc = _attempt(session, request, deadline, st, guard)
    retries = 0
    if exc is not None and _retryable(exc, st, guard):
        retries = 1
        lost_s = st.since_send()
        st = StreamState(clock, clock.now_ns(), deadline)
        st.lost_s = lost_s
        outcome, error, exc = _attempt(session, request, deadline, st, guard)
    return Attempted(st, outcome, error, retries)


def _retryable(exc: httpx.HTTPError, st: StreamState, guard: RequestGuard) -> bool:
    """A pooled connection the server had already closed: nothing was processed, so resend."""
    stopped = guard.expired or guard.aborted
    return isinstance(exc, httpx.RemoteProtocolError) and st.status is None and not stopped


def _attempt(
    session: StreamSession,
    request: HttpRequest,
    deadline: Deadline,
    st: StreamState,
    guard: RequestGuard,
) -> tuple[Outcome | None, str | None, httpx.HTTPError | None]:
    """One send; httpx exceptions become outcomes here and nowhere else."""
    try:
        outcome, error = _exchange(session, request, deadline, st, guard)
        return outcome, error, None
    except TotalTimeout:
        return Outcome.TIMEOUT, deadline.message(), None
    except LineTooLong:
        return Outcome.INVALID_STREAM, overlong(st), None
    except httpx.TimeoutException as exc:
        return Outcome.TIMEOUT, f"{type(exc).__name__}: {exc or 'timed out'}", exc
    except httpx.StreamClosed:
        return Outcome.TRUNCATED_STREAM, "the run was aborted while this request streamed", None
    except httpx.HTTPError as exc:
        outcome = Outcome.CONNECTION_ERROR if st.first_byte_s is None else Outcome.TRUNCATED_STREAM
        return outcome, f"{type(exc).__name__}: {exc}", exc


def _exchange(
    session: StreamSession,
    request: HttpRequest,
    deadline: Deadline,
    st: StreamState,
    guard: RequestGuard,
) -> tuple[Outcome | None, str | None]:
    with session.httpx_client().stream(
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
                return http_error(response.status_code, body)
            _receive(st, response.iter_bytes())
        finally:
            guard.detach()  # before the connection goes back to the pool for another request
    return None, None


def _receive(st: StreamState, chunks: Iterator[bytes]) -> None:
    """Timestamp every block of body bytes; parse them all once the stream has ended."""
    try:
        for chunk in chunks:
            st.arrive(st.clock.now_ns(), chunk)
        st.end_ns = st.clock.now_ns()
    finally:
        st.decode_arrivals()
    st.closed_cleanly = True
