"""One ``requests.jsonl`` line: an observation, its derived metrics and its context.

Owns the row layout (documented in docs/metrics.md and docs/run-directory.md). Pure. Every row
carries ``schema_version`` and enough context (run, arm, block, phase, prompt) to stand alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from servelab.metrics import derive
from servelab.records import Observation, Phase

ROW_SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True)
class RowContext:
    run_id: str
    arm: str
    block: int
    phase: Phase
    seq: int  # position in the run, warm-ups included; unique per run
    prompt_id: str
    concurrency: int
    t_send_unix_s: float  # wall clock of the send, from the run's anchor
    request_id: str = ""  # experiments: stable id of the planned request (resume skips done ids)


def build_row(obs: Observation, ctx: RowContext) -> dict[str, Any]:
    metrics = derive(obs)
    return {
        "schema_version": ROW_SCHEMA_VERSION,
        **asdict(ctx),
        "phase": str(ctx.phase),
        "outcome": str(obs.outcome),
        "error": obs.error,
        "http_status": obs.http_status,
        "finish_reason": obs.finish_reason,
        **metrics,
        "first_byte_s": obs.first_byte_s,
        "chunk_t_s": list(obs.chunk_t_s),
        "chunk_tokens": list(obs.chunk_tokens),
        "usage": asdict(obs.usage) if obs.usage else None,
        "server_timings": obs.server_timings,
        "text": obs.text,
        "text_chars": obs.text_chars,
        "text_truncated": obs.text_truncated,
        "reasoning": obs.reasoning,
        "tool_calls": [asdict(c) for c in obs.tool_calls],
        "invalid_utf8_bytes": obs.invalid_utf8_bytes,
        "saw_done": obs.extra.get("saw_done"),
    }
