"""One ``requests.jsonl`` line of a measured request: its context, outcome and metrics.

Owns the row layout of runs and benches (docs/metrics.md, docs/run-directory.md): ``RequestRow``
holds one line, in the order of its JSON keys, and ``build_row`` makes it from what the client
observed. ``ROW_SCHEMA_VERSION`` is written by ``RequestRow`` only. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from servelab.metrics import derive
from servelab.records import Observation, Phase, ServerValue, ToolCall, Usage

ROW_SCHEMA_VERSION = 2  # 2: rate_rps, t_sched_unix_s, lag_s, session_id, turn, slo_met

RowValue = (
    str | int | float | bool | None | list[float] | list[int] | dict[str, int]
    | dict[str, ServerValue] | list[dict[str, str | int | None]]
)  # fmt: skip
"""One value of a row's JSON."""


@dataclass(frozen=True, slots=True)
class RowContext:
    """Where a request belongs: run, arm, block, phase and its place in the run."""

    run_id: str
    arm: str
    block: int
    phase: Phase
    seq: int  # position in the run, warm-ups included; unique per run
    prompt_id: str
    concurrency: int
    t_send_unix_s: float  # wall clock of the send, from the run's anchor
    request_id: str = ""  # experiments: stable id of the planned request (resume skips done ids)
    rate_rps: float | None = None  # requested open-loop rate of the block (None: closed loop)
    t_sched_unix_s: float | None = None  # scheduled send time (open loop)
    lag_s: float | None = None  # actual send - scheduled send (open loop)
    session_id: str | None = None  # conversation of this turn (None: a single-turn prompt)
    turn: int | None = None  # 0-based turn within its session
    slo_met: bool | None = None  # met every per-request SLO (None: no SLOs given)


@dataclass(frozen=True, slots=True)
class RequestRow:
    """One measured request. Field order is the JSON key order; every ``*_s`` is seconds."""

    run_id: str
    arm: str
    block: int
    phase: Phase
    seq: int
    prompt_id: str
    concurrency: int
    t_send_unix_s: float
    request_id: str
    rate_rps: float | None
    t_sched_unix_s: float | None
    lag_s: float | None
    session_id: str | None
    turn: int | None
    slo_met: bool | None
    outcome: str
    error: str | None
    http_status: int | None
    finish_reason: str | None
    n_out: int
    n_out_source: str
    chunk_tokens_source: str
    n_in: int | None
    wait_s: float
    prefill_tps: float | None
    server_prompt_s: float | None
    server_decode_tps: float | None
    cache_n: int | None
    prefix_reuse: float | None
    draft_n: int | None
    draft_accepted: int | None
    acceptance_rate: float | None
    ttft_s: float | None
    ttft_content_s: float | None
    ttft_tool_s: float | None
    e2e_s: float | None
    tpot_s: float | None
    decode_tps: float | None
    e2e_tps: float | None
    itl_s: tuple[float, ...]
    first_byte_s: float | None
    chunk_t_s: tuple[float, ...]
    chunk_tokens: tuple[int, ...]
    usage: Usage | None
    server_timings: dict[str, ServerValue] | None
    text: str
    text_chars: int
    text_truncated: bool
    reasoning: str
    tool_calls: tuple[ToolCall, ...]
    invalid_utf8_bytes: int
    saw_done: bool | None
    schema_version: int = ROW_SCHEMA_VERSION

    def to_json(self) -> dict[str, RowValue]:
        """The line's JSON object, keys in the documented order (``schema_version`` first)."""
        out: dict[str, RowValue] = {"schema_version": self.schema_version}
        for name in _FIELDS:
            value = getattr(self, name)
            if isinstance(value, tuple):
                value = [asdict(v) for v in value] if name == "tool_calls" else list(value)
            elif isinstance(value, Usage):
                value = asdict(value)
            elif isinstance(value, Phase):
                value = str(value)
            out[name] = value
        return out


_FIELDS = tuple(f for f in RequestRow.__dataclass_fields__ if f != "schema_version")


def build_row(obs: Observation, ctx: RowContext) -> RequestRow:
    """The row of one observed request: its context, outcome and derived metrics."""
    m = derive(obs)
    saw_done = obs.extra.get("saw_done")
    return RequestRow(
        run_id=ctx.run_id, arm=ctx.arm, block=ctx.block, phase=ctx.phase, seq=ctx.seq,
        prompt_id=ctx.prompt_id, concurrency=ctx.concurrency, t_send_unix_s=ctx.t_send_unix_s,
        request_id=ctx.request_id, rate_rps=ctx.rate_rps, t_sched_unix_s=ctx.t_sched_unix_s,
        lag_s=ctx.lag_s, session_id=ctx.session_id, turn=ctx.turn, slo_met=ctx.slo_met,
        outcome=str(obs.outcome), error=obs.error,
        http_status=obs.http_status, finish_reason=obs.finish_reason,
        n_out=m["n_out"], n_out_source=m["n_out_source"],
        chunk_tokens_source=m["chunk_tokens_source"], n_in=m["n_in"], wait_s=m["wait_s"],
        prefill_tps=m["prefill_tps"], server_prompt_s=m["server_prompt_s"],
        server_decode_tps=m["server_decode_tps"], cache_n=m["cache_n"],
        prefix_reuse=m["prefix_reuse"], draft_n=m["draft_n"],
        draft_accepted=m["draft_accepted"], acceptance_rate=m["acceptance_rate"],
        ttft_s=m["ttft_s"], ttft_content_s=m["ttft_content_s"], ttft_tool_s=m["ttft_tool_s"],
        e2e_s=m["e2e_s"], tpot_s=m["tpot_s"], decode_tps=m["decode_tps"], e2e_tps=m["e2e_tps"],
        itl_s=tuple(m["itl_s"]), first_byte_s=obs.first_byte_s, chunk_t_s=obs.chunk_t_s,
        chunk_tokens=obs.chunk_tokens, usage=obs.usage, server_timings=obs.server_timings,
        text=obs.text, text_chars=obs.text_chars, text_truncated=obs.text_truncated,
        reasoning=obs.reasoning, tool_calls=obs.tool_calls,
        invalid_utf8_bytes=obs.invalid_utf8_bytes,
        saw_done=saw_done if isinstance(saw_done, bool) else None,
    )  # fmt: skip
