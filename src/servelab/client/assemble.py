"""Pure assembly of one streamed response into an ``Observation``.

Owns the bookkeeping between typed SSE events and the record: arrival times of token-bearing
messages, tokens per message (exact from llama.cpp's per-chunk ``timings.predicted_n`` when the
server sends them, else one per message and marked estimated), tool-call reassembly and the
outcome rules. No I/O and no clock: the caller passes every arrival time. The reply text,
reasoning and each tool call's arguments are stored up to ``STORED_TEXT_LIMIT`` characters each;
the observation says when one was cut and how long the reply text really was.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from servelab.client.sse import (
    TOKEN_EVENTS,
    ContentDelta,
    Done,
    Event,
    Finish,
    Malformed,
    ReasoningDelta,
    StreamError,
    Timings,
    ToolCallDelta,
    UsageReport,
)
from servelab.records import Observation, Outcome, ServerValue, ToolCall, Usage

STORED_TEXT_LIMIT = 262_144  # characters kept per text field of one reply (docs/metrics.md)


def _append_capped(parts: list[str], piece: str, chars: int) -> int:
    """Append what still fits of ``piece`` under the limit; return the new uncapped length."""
    room = STORED_TEXT_LIMIT - chars
    if room > 0:
        parts.append(piece[:room])
    return chars + len(piece)


@dataclass
class _ToolParts:
    id: str | None = None
    name: str = ""
    args: list[str] = field(default_factory=list)
    args_chars: int = 0


@dataclass
class ResponseAssembler:
    """Accumulates one response; feed it each SSE message's events with their arrival time."""

    text: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    text_chars: int = 0
    reasoning_chars: int = 0
    chunk_t_s: list[float] = field(default_factory=list)
    chunk_tokens: list[int] = field(default_factory=list)
    first_content_s: float | None = None
    first_reasoning_s: float | None = None
    first_tool_s: float | None = None
    finish_reason: str | None = None
    usage: Usage | None = None
    timings: dict[str, ServerValue] | None = None
    error: str | None = None
    malformed: str | None = None
    saw_done: bool = False
    cut_mid_message: bool = False
    token_timings_seen: int = 0
    _tools: dict[int, _ToolParts] = field(default_factory=dict)
    _counted_n: int = 0
    _pending_n: int = 0

    def add(self, events: list[Event], t_s: float) -> None:
        """Record the events of one SSE message that arrived at ``t_s`` after the send."""
        token_bearing = any(isinstance(e, TOKEN_EVENTS) for e in events)
        for event in events:
            self._apply(event, t_s)
        predicted = self._predicted_n(events)
        if predicted is not None and predicted > self._counted_n:
            self._pending_n += predicted - self._counted_n
            self._counted_n = predicted
        if token_bearing:
            if predicted is not None:
                self.token_timings_seen += 1
            self.chunk_t_s.append(t_s)
            self.chunk_tokens.append(self._pending_n)
            self._pending_n = 0

    @staticmethod
    def _predicted_n(events: list[Event]) -> int | None:
        for e in events:
            n = e.timings.get("predicted_n") if isinstance(e, Timings) else None
            if isinstance(n, int) and not isinstance(n, bool):
                return n
        return None

    def _apply(self, event: Event, t_s: float) -> None:
        if isinstance(event, ContentDelta):
            self.text_chars = _append_capped(self.text, event.text, self.text_chars)
            self.first_content_s = _first(self.first_content_s, t_s)
        elif isinstance(event, ReasoningDelta):
            self.reasoning_chars = _append_capped(self.reasoning, event.text, self.reasoning_chars)
            self.first_reasoning_s = _first(self.first_reasoning_s, t_s)
        elif isinstance(event, ToolCallDelta):
            self._tool(event, t_s)
        elif isinstance(event, UsageReport):
            self.usage = event.usage
        elif isinstance(event, Timings):
            self.timings = event.timings
        elif isinstance(event, Finish):
            self.finish_reason = event.reason
        elif isinstance(event, StreamError):
            self.error = event.message
        elif isinstance(event, Malformed):
            self.malformed = self.malformed or event.reason
        elif isinstance(event, Done):
            self.saw_done = True

    def _tool(self, event: ToolCallDelta, t_s: float) -> None:
        parts = self._tools.setdefault(event.index, _ToolParts())
        if event.id:
            parts.id = event.id
        if event.name:
            parts.name = (parts.name + event.name)[:STORED_TEXT_LIMIT]
            self.first_tool_s = _first(self.first_tool_s, t_s)
        parts.args_chars = _append_capped(parts.args, event.arguments, parts.args_chars)

    @property
    def text_truncated(self) -> bool:
        """Whether the text, the reasoning or a tool call's arguments were cut when stored."""
        longest = max([self.text_chars, self.reasoning_chars]
                      + [p.args_chars for p in self._tools.values()])  # fmt: skip
        return longest > STORED_TEXT_LIMIT

    @property
    def failed(self) -> bool:
        return self.error is not None or self.malformed is not None

    def tool_calls(self) -> tuple[ToolCall, ...]:
        return tuple(
            ToolCall(index=i, name=p.name, arguments="".join(p.args), id=p.id)
            for i, p in sorted(self._tools.items())
        )

    def _token_counts(self) -> tuple[tuple[int, ...], str]:
        if self.token_timings_seen == 0:
            return tuple(1 for _ in self.chunk_t_s), "estimated"
        return tuple(self.chunk_tokens), "server"

    def outcome(self, stream_closed_cleanly: bool) -> tuple[Outcome, str | None]:
        """Decide the outcome from what arrived; the stream must have ended (or been cut)."""
        if self.error is not None:
            return Outcome.HTTP_ERROR, f"server error in stream: {self.error}"
        if self.malformed is not None:
            return Outcome.INVALID_STREAM, self.malformed
        if self.cut_mid_message:
            return Outcome.TRUNCATED_STREAM, "stream ended in the middle of a message"
        if self.finish_reason is None:
            how = "closed" if stream_closed_cleanly else "cut"
            return Outcome.TRUNCATED_STREAM, f"stream {how} before a finish_reason arrived"
        return Outcome.OK, None

    def observation(
        self,
        *,
        outcome: Outcome,
        wait_s: float,
        end_s: float,
        first_byte_s: float | None,
        http_status: int | None,
        error: str | None,
        invalid_utf8_bytes: int,
    ) -> Observation:
        counts, source = self._token_counts()
        extra: dict[str, float | int | bool | None] = {"saw_done": self.saw_done}
        if self.first_reasoning_s is not None:
            extra["first_reasoning_s"] = self.first_reasoning_s
        return Observation(
            outcome=outcome,
            wait_s=wait_s,
            end_s=end_s,
            first_byte_s=first_byte_s,
            first_content_s=self.first_content_s,
            first_tool_s=self.first_tool_s,
            chunk_t_s=tuple(self.chunk_t_s),
            chunk_tokens=counts,
            chunk_tokens_source=source,
            text="".join(self.text),
            reasoning="".join(self.reasoning),
            tool_calls=self.tool_calls(),
            finish_reason=self.finish_reason,
            usage=self.usage,
            server_timings=self.timings,
            http_status=http_status,
            error=error,
            invalid_utf8_bytes=invalid_utf8_bytes,
            text_chars=self.text_chars,
            text_truncated=self.text_truncated,
            extra=extra,
        )


def _first(current: float | None, t_s: float) -> float:
    return t_s if current is None else current
