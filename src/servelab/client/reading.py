"""What both readers share: the request, its deadline, and one response's state as it arrives.

Owns ``HttpRequest``, ``Deadline``, ``StreamState`` (the timestamped body blocks of one
response, parsed in batches off the hot path by the pure decoders ``LineSplitter`` ->
``SSEParser`` -> ``ResponseAssembler``) and ``observation``, which turns a finished attempt into
an ``Observation``. What a hostile server can make servelab keep is bounded here: one SSE line
(``MAX_LINE_BYTES``, checked every ``DECODE_BATCH_BYTES``), the error body read
(``ERROR_BODY_LIMIT``) and the error message (``ERROR_TEXT_LIMIT``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import httpx

from servelab.client.assemble import ResponseAssembler
from servelab.client.clock import Clock
from servelab.client.payload import Body
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


class TotalTimeout(Exception):
    """A body block arrived after the request's whole deadline."""


class LineTooLong(Exception):
    """An SSE line grew past ``MAX_LINE_BYTES``."""


class StreamState:
    """One attempt's response as it arrives: timestamped body blocks, then what they mean."""

    def __init__(self, clock: Clock, t0_ns: int, deadline: Deadline) -> None:
        self.clock = clock
        self.t0_ns = t0_ns
        self.limit_ns = t0_ns + round(deadline.total_s * 1e9)
        self.lines = LineSplitter()
        self.parser = SSEParser()
        self.acc = ResponseAssembler()
        self.first_byte_s: float | None = None
        self.status: int | None = None
        self.closed_cleanly = False
        self.arrivals: list[tuple[int, bytes]] = []
        self._decoded = 0  # arrivals parsed so far
        self.pending_bytes = 0
        self.lost_s = 0.0  # a first attempt's time, when the request had to be sent again
        self.end_s = 0.0
        self.end_ns: int | None = None  # when the response's last byte arrived (None: cut)

    def since_send(self) -> float:
        return (self.clock.now_ns() - self.t0_ns) / 1e9

    def arrive(self, t_ns: int, chunk: bytes) -> None:
        """Hot path while the engine decodes: an append (and, past ``DECODE_BATCH_BYTES``
        buffered, a parse, which stops a line past its limit)."""
        if t_ns > self.limit_ns:
            raise TotalTimeout
        self.arrivals.append((t_ns, chunk))
        self.pending_bytes += len(chunk)
        if self.pending_bytes > DECODE_BATCH_BYTES:
            self.decode_arrivals()
            if self.lines.overlong:
                raise LineTooLong

    def decode_arrivals(self) -> None:
        """Parse everything that arrived, each block with its own arrival time."""
        while not self.decode_slice(len(self.arrivals)):
            pass

    def decode_slice(self, n: int) -> bool:
        """Parse the next ``n`` blocks that arrived (after the stream, off the engine's critical
        path); True once none is left."""
        start, stop = self._decoded, min(self._decoded + max(n, 1), len(self.arrivals))
        for t_ns, chunk in self.arrivals[start:stop]:
            t_s = (t_ns - self.t0_ns) / 1e9
            if self.first_byte_s is None:
                self.first_byte_s = t_s
            for line in self.lines.feed(chunk):
                self._line(line, t_s)
        self._decoded = stop
        if stop < len(self.arrivals):
            return False
        self.arrivals, self._decoded, self.pending_bytes = [], 0, 0
        return True

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


@dataclass
class Attempted:
    """How the attempts at one request ended (``outcome`` None: decide from the stream)."""

    st: StreamState
    outcome: Outcome | None
    error: str | None
    retries: int = 0
    expired: bool = False


def settle(done: Attempted, deadline: Deadline) -> tuple[Outcome, str | None]:
    """The final outcome: the stream's own, unless the wait ran out of the request's time."""
    st, outcome, error = done.st, done.outcome, done.error
    end_ns = st.clock.now_ns() if st.end_ns is None else st.end_ns
    st.end_s = (end_ns - st.t0_ns) / 1e9
    if outcome is None:
        st.end()
        outcome, error = st.acc.outcome(st.closed_cleanly)
    if st.lines.overlong and outcome is not Outcome.TIMEOUT:
        outcome, error = Outcome.INVALID_STREAM, overlong(st)
    if outcome is not Outcome.OK and (done.expired or _past_deadline(outcome, st, deadline)):
        outcome, error = Outcome.TIMEOUT, deadline.message()
    return outcome, error


def observation(done: Attempted, deadline: Deadline, wait_s: float) -> Observation:
    outcome, error = settle(done, deadline)
    st = done.st
    obs = st.acc.observation(
        outcome=outcome,
        wait_s=wait_s + st.lost_s,
        end_s=st.end_s,
        first_byte_s=st.first_byte_s,
        http_status=st.status,
        error=error[:ERROR_TEXT_LIMIT] if error else error,
        invalid_utf8_bytes=st.lines.invalid_bytes,
    )
    if done.retries:
        obs.extra["retries"] = done.retries
    return obs


def _past_deadline(outcome: Outcome, st: StreamState, deadline: Deadline) -> bool:
    """A wait that timed out at the whole request's deadline: when ``read_s`` is not shorter
    than ``total_s``, the read timeout and the deadline's timer fire together, and either may
    win; the request ran out of its total time either way (10 ms: timer resolution)."""
    return outcome is Outcome.TIMEOUT and st.since_send() >= deadline.total_s - 0.01


def overlong(st: StreamState) -> str:
    return f"an SSE line exceeded {st.lines.max_line_bytes} bytes; stopped reading"


def http_error(status: int, body: bytes) -> tuple[Outcome, str]:
    # Redacted before it is cut, so no part of an echoed API key survives the cut.
    text = redact(body.decode("utf-8", "replace")).strip().replace("\n", " ")
    return Outcome.HTTP_ERROR, f"HTTP {status}: {text[:300]}"


def read_head(chunks: Iterable[bytes], limit: int) -> bytes:
    """At most ``limit`` bytes of a body given as chunks, however much the server sends: reading
    stops at the chunk that reaches the limit."""
    data = bytearray()
    for chunk in chunks:
        data += chunk
        if len(data) >= limit:
            break
    return bytes(data[:limit])
