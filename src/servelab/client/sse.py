"""Pure server-sent-events decoding for OpenAI-compatible streams.

Owns the path from raw bytes to typed events: ``LineSplitter`` cuts the byte stream into
lines (a newline byte never occurs inside a UTF-8 sequence, so a character split across network
chunks is reassembled before it is decoded), counts invalid UTF-8 bytes and refuses a line
longer than ``MAX_LINE_BYTES`` (so a hostile server cannot grow its buffer without bound);
``SSEParser`` is fed one line at a time and returns typed events. No I/O, no clocks, no
asyncio: the caller timestamps what it feeds.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from servelab.records import ServerValue, Usage

REPLACEMENT = "\ufffd"
_EOL = re.compile(rb"\r\n|\r|\n")
MAX_LINE_BYTES = 2**20  # a streamed chunk is a few hundred bytes; 1 MiB is far beyond any real one


@dataclass(frozen=True, slots=True)
class ContentDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    index: int
    id: str | None
    name: str | None
    arguments: str


@dataclass(frozen=True, slots=True)
class UsageReport:
    usage: Usage


@dataclass(frozen=True, slots=True)
class Timings:
    """llama.cpp's ``timings`` object as received (its flat values; nested ones are dropped)."""

    timings: dict[str, ServerValue]


@dataclass(frozen=True, slots=True)
class Finish:
    reason: str


@dataclass(frozen=True, slots=True)
class StreamError:
    message: str


@dataclass(frozen=True, slots=True)
class Malformed:
    """A line or message that is not valid SSE/JSON; the stream is then invalid."""

    reason: str


@dataclass(frozen=True, slots=True)
class Done:
    """The ``data: [DONE]`` sentinel."""


Event = (
    ContentDelta
    | ReasoningDelta
    | ToolCallDelta
    | UsageReport
    | Timings
    | Finish
    | StreamError
    | Malformed
    | Done
)

TOKEN_EVENTS = (ContentDelta, ReasoningDelta, ToolCallDelta)


def decode_utf8(data: bytes) -> tuple[str, int]:
    """Decode ``data`` as UTF-8; return the text and the number of invalid bytes.

    Invalid bytes become U+FFFD exactly as Python's ``"replace"`` handler would make them, and
    every invalid byte is counted, so a reader can tell a replacement the server sent from one
    made here.
    """
    parts: list[str] = []
    invalid = 0
    pos = 0
    while pos < len(data):
        try:
            parts.append(data[pos:].decode("utf-8"))
            break
        except UnicodeDecodeError as exc:
            parts.append(data[pos : pos + exc.start].decode("utf-8"))
            invalid += exc.end - exc.start
            parts.append(REPLACEMENT)
            pos += exc.end
    return "".join(parts), invalid


class LineSplitter:
    """Cut a byte stream into decoded lines, whatever the chunk boundaries.

    Lines end at LF, CRLF or CR (the SSE rule). A CR ends its line at once, even at the very end
    of a chunk, and an LF right after it (possibly in the next chunk) is skipped. A line longer
    than ``max_line_bytes`` sets ``overlong``; the stream is then invalid and nothing more is
    buffered or returned.
    """

    def __init__(self, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self._buf = bytearray()
        self._skip_lf = False
        self.invalid_bytes = 0
        self.max_line_bytes = max_line_bytes
        self.overlong = False

    def feed(self, chunk: bytes) -> list[str]:
        if self.overlong:
            return []
        if self._skip_lf and chunk:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]  # the LF of a CRLF split across chunks
        if b"\r" not in chunk:  # the common case: LF only, split at C speed
            self._buf += chunk
            if b"\n" not in chunk:
                return self._bounded([])
            *complete, rest = bytes(self._buf).split(b"\n")
            self._buf = bytearray(rest)
            return self._bounded(complete)
        return self._feed_cr(chunk)

    def _bounded(self, raw_lines: list[bytes]) -> list[str]:
        """Decode complete lines up to the first overlong one; check what is still buffered."""
        lines: list[str] = []
        for raw in raw_lines:
            if len(raw) > self.max_line_bytes:
                return self._overflow(lines)
            lines.append(self._decode(raw))
        if len(self._buf) > self.max_line_bytes:
            return self._overflow(lines)
        return lines

    def _overflow(self, lines: list[str]) -> list[str]:
        self.overlong = True
        self._buf = bytearray()
        return lines

    def _feed_cr(self, chunk: bytes) -> list[str]:
        self._buf += chunk
        lines: list[bytes] = []
        start = 0
        for match in _EOL.finditer(self._buf):
            lines.append(bytes(self._buf[start : match.start()]))
            start = match.end()
            if match.group() == b"\r" and start == len(self._buf):
                self._skip_lf = True  # a CR ends the line now; an LF may still follow
        del self._buf[:start]
        return self._bounded(lines)

    def flush(self) -> list[str]:
        """Return the last line when the stream ended without a final newline."""
        rest = bytes(self._buf)
        self._buf.clear()
        return [self._decode(rest)] if rest else []

    @property
    def pending(self) -> bool:
        return bool(self._buf)

    def _decode(self, raw: bytes) -> str:
        try:
            return raw.decode("utf-8")  # fast path: valid UTF-8
        except UnicodeDecodeError:
            pass
        text, invalid = decode_utf8(raw)
        self.invalid_bytes += invalid
        return text


class SSEParser:
    """Turn SSE lines into typed events; one call per line.

    Events of one SSE message are returned when its terminating blank line arrives, so they
    share one arrival time. Comment lines (``:``) and unknown fields are ignored, per the SSE
    specification.
    """

    def __init__(self) -> None:
        self._data: list[str] = []
        self._event_type = ""
        self.saw_done = False

    def feed_line(self, line: str) -> list[Event]:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return []
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event_type = value
        return []

    def finish(self) -> list[Event]:
        """Dispatch a message left open by a stream that ended without a blank line."""
        return self._dispatch()

    @property
    def in_message(self) -> bool:
        return bool(self._data)

    def _dispatch(self) -> list[Event]:
        if not self._data:
            self._event_type = ""
            return []
        data = "\n".join(self._data)
        event_type = self._event_type
        self._data = []
        self._event_type = ""
        if data.strip() == "[DONE]":
            self.saw_done = True
            return [Done()]
        try:
            obj = json.loads(data)
        except json.JSONDecodeError as exc:
            return [Malformed(f"data is not JSON ({exc.msg} at char {exc.pos}): {data[:80]!r}")]
        if not isinstance(obj, dict):
            return [Malformed(f"data is JSON but not an object: {data[:80]!r}")]
        if event_type == "error" or "error" in obj:
            return [StreamError(_error_message(obj))]
        return chunk_events(obj)


def _error_message(obj: Mapping[str, object]) -> str:
    err = obj.get("error", obj)
    if isinstance(err, Mapping):
        return str(err.get("message") or json.dumps(dict(err)))
    return str(err)


def _int(value: object) -> int:
    """A JSON number as an int; anything else is the caller's ``Malformed`` (via ValueError)."""
    if isinstance(value, (int, float, str)):
        return int(value)
    raise ValueError(f"{value!r} is not a number")


def _flat(obj: Mapping[str, object]) -> dict[str, ServerValue]:
    return {k: v for k, v in obj.items() if v is None or isinstance(v, (int, float, str, bool))}


def chunk_events(obj: Mapping[str, object]) -> list[Event]:
    """Events carried by one chat.completion.chunk or text_completion chunk object.

    A field of the wrong type makes the whole message ``Malformed``; this never raises.
    """
    try:
        return _chunk_events(obj)
    except (TypeError, ValueError, AttributeError) as exc:
        return [Malformed(f"a field has the wrong type ({exc})")]


def _chunk_events(obj: Mapping[str, object]) -> list[Event]:
    events: list[Event] = []
    choices = obj.get("choices", [])
    if choices is None:
        choices = []
    if not isinstance(choices, list):
        return [Malformed("'choices' is not a list")]
    for choice in choices[:1]:  # servelab always asks for n=1
        if not isinstance(choice, Mapping):
            return [Malformed("a choice is not an object")]
        events.extend(_choice_events(choice))
    usage = obj.get("usage")
    if isinstance(usage, Mapping) and "completion_tokens" in usage:
        events.append(
            UsageReport(
                Usage(
                    prompt_tokens=_int(usage.get("prompt_tokens") or 0),
                    completion_tokens=_int(usage["completion_tokens"]),
                )
            )
        )
    timings = obj.get("timings")
    if isinstance(timings, Mapping):
        events.append(Timings(_flat(timings)))
    return events


def _choice_events(choice: Mapping[str, object]) -> list[Event]:
    events: list[Event] = []
    delta = choice.get("delta")
    if isinstance(delta, Mapping):
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            events.append(ReasoningDelta(reasoning))
        content = delta.get("content")
        if isinstance(content, str) and content:
            events.append(ContentDelta(content))
        calls = delta.get("tool_calls") or []
        if not isinstance(calls, list):
            return [Malformed("'tool_calls' is not a list")]
        events.extend(_tool_delta(call) for call in calls)
    text = choice.get("text")  # /v1/completions
    if isinstance(text, str) and text:
        events.append(ContentDelta(text))
    reason = choice.get("finish_reason")
    if isinstance(reason, str) and reason:
        events.append(Finish(reason))
    return events


def _tool_delta(call: object) -> Event:
    if not isinstance(call, Mapping):
        return Malformed("a tool_calls entry is not an object")
    fn = call.get("function") or {}
    if not isinstance(fn, Mapping):
        return Malformed("a tool call's 'function' is not an object")
    name = fn.get("name")
    args = fn.get("arguments")
    call_id = call.get("id")
    return ToolCallDelta(
        index=_int(call.get("index", 0)),
        id=call_id if isinstance(call_id, str) else None,
        name=name if isinstance(name, str) and name else None,
        arguments=args if isinstance(args, str) else "",
    )
