"""Immutable records shared by every layer: what the client observed for one request.

Owns the frozen dataclasses that cross layer boundaries (client -> metrics -> store). Pure:
no I/O, no clocks, no HTTP. Times are seconds relative to the moment the request was sent,
taken from a monotonic clock by the client.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

ServerValue = float | int | str | bool | None
"""One value of an engine's ``timings`` object (llama-server: numbers)."""


class Outcome(StrEnum):
    """How a request ended. Only ``OK`` requests enter latency statistics."""

    OK = "ok"
    HTTP_ERROR = "http_error"
    TIMEOUT = "timeout"
    TRUNCATED_STREAM = "truncated_stream"  # the connection closed before the stream's end
    INVALID_STREAM = "invalid_stream"  # the bytes were not a valid SSE/JSON stream
    CONNECTION_ERROR = "connection_error"  # could not connect or the connection reset


class Phase(StrEnum):
    """Warm-up requests are stored but never enter statistics."""

    WARMUP = "warmup"
    TRIAL = "trial"


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One tool call as assembled from streamed deltas; ``arguments`` is the raw JSON text."""

    index: int
    name: str
    arguments: str
    id: str | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts as the server reported them."""

    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True, slots=True)
class Observation:
    """Everything the client saw for one request.

    ``wait_s`` is the time between the request's concurrency slot becoming free and the send;
    every ``*_s`` time below is measured from the send. ``chunk_t_s[i]`` is the arrival of the
    i-th token-bearing chunk (content, reasoning or tool-call delta) and ``chunk_tokens[i]``
    the tokens it carried (exact when ``chunk_tokens_source == "server"``).
    """

    outcome: Outcome
    wait_s: float
    end_s: float
    first_byte_s: float | None = None
    first_content_s: float | None = None
    first_tool_s: float | None = None
    chunk_t_s: tuple[float, ...] = ()
    chunk_tokens: tuple[int, ...] = ()
    chunk_tokens_source: str = "estimated"  # "server" (timings_per_token) or "estimated"
    text: str = ""
    reasoning: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str | None = None
    usage: Usage | None = None
    server_timings: dict[str, ServerValue] | None = None  # the engine's flat ``timings`` object
    http_status: int | None = None
    error: str | None = None
    invalid_utf8_bytes: int = 0
    text_chars: int = 0  # length of the reply text as received; ``text`` may hold less
    text_truncated: bool = False  # text, reasoning or tool arguments cut to the stored limit
    # Client-side facts without a field of their own: ``saw_done`` (bool), ``retries`` (int),
    # ``first_reasoning_s`` (float). Mutable: the stream reader adds ``retries`` afterwards.
    extra: dict[str, float | int | bool | None] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ClientLoad:
    """What driving one block cost the client itself (issue 13): CPU time of the client
    process(es) over the block's wall time, how late its event loop ran (a sampler's overshoot,
    ``None`` when too few samples were taken) and the most requests it held in flight."""

    wall_s: float
    cpu_user_s: float
    cpu_sys_s: float
    loop_lag_p99_s: float | None
    loop_lag_max_s: float | None
    streams_max: int
    processes: int = 1

    @property
    def cpu_s(self) -> float:
        return self.cpu_user_s + self.cpu_sys_s

    def to_json(self) -> dict[str, float | int | None]:
        return {
            "wall_s": self.wall_s,
            "cpu_user_s": self.cpu_user_s,
            "cpu_sys_s": self.cpu_sys_s,
            "loop_lag_p99_s": self.loop_lag_p99_s,
            "loop_lag_max_s": self.loop_lag_max_s,
            "streams_max": self.streams_max,
            "processes": self.processes,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, object]) -> ClientLoad:
        def num(key: str) -> float:
            value = obj.get(key)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ValueError(f"client load: {key!r} must be a number, got {value!r}")
            return float(value)

        def opt(key: str) -> float | None:
            return None if obj.get(key) is None else num(key)

        return cls(
            wall_s=num("wall_s"),
            cpu_user_s=num("cpu_user_s"),
            cpu_sys_s=num("cpu_sys_s"),
            loop_lag_p99_s=opt("loop_lag_p99_s"),
            loop_lag_max_s=opt("loop_lag_max_s"),
            streams_max=int(num("streams_max")),
            processes=int(num("processes")) if "processes" in obj else 1,
        )
