"""One imported ``requests.jsonl`` line: a servelab row built from a reader's partial row.

Owns the shape of an imported row (the servelab row of docs/metrics.md, plus ``source`` and
``raw``, in a fixed key order) and the metrics derived for it (by the formulas of
``servelab.metrics``, and only where the source did not give the metric itself). Pure.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from servelab.importers.common import (
    METRIC_NAMES,
    Partial,
    SourceRef,
    ToolCallJson,
    number_or_none,
    numbers,
    text_or_none,
)
from servelab.records import Usage
from servelab.store import ROW_SCHEMA_VERSION

LATENCY = ("ttft_s", "ttft_content_s", "ttft_tool_s", "e2e_s", "tpot_s", "decode_tps", "e2e_tps")
COUNTS = ("n_out", "n_in", "cache_n", "draft_n", "draft_accepted")
Metrics = dict[str, int | float | None]
"""Every metric of docs/metrics.md but ``itl_s``, in the order of ``servelab.metrics``."""


@dataclass(frozen=True, slots=True)
class ImportedRow:
    """One imported request. ``metrics`` holds every metric but ``itl_s``; ``to_json`` lays
    the row out as measured rows are, then ``source`` and ``raw`` (the unmapped columns)."""

    run_id: str
    arm: str
    block: int
    phase: str
    seq: int
    prompt_id: str
    concurrency: int | None
    t_send_unix_s: float | None
    outcome: str
    error: str | None
    http_status: int | None
    finish_reason: str | None
    metrics: Metrics
    itl_s: tuple[float, ...]
    n_out_source: str | None
    chunk_tokens_source: str | None
    chunk_t_s: tuple[float, ...]
    chunk_tokens: tuple[float, ...]
    usage: Usage | None
    text: str | None
    reasoning: str | None
    tool_calls: tuple[ToolCallJson, ...]
    source: SourceRef
    raw: dict[str, object]

    def metric(self, name: str) -> int | float | None:
        return self.metrics.get(name)

    def to_json(self) -> dict[str, object]:
        return {
            "schema_version": ROW_SCHEMA_VERSION,
            "run_id": self.run_id, "arm": self.arm, "block": self.block, "phase": self.phase,
            "seq": self.seq, "prompt_id": self.prompt_id, "concurrency": self.concurrency,
            "t_send_unix_s": self.t_send_unix_s, "outcome": self.outcome, "error": self.error,
            "http_status": self.http_status, "finish_reason": self.finish_reason,
            **self.metrics,
            "itl_s": list(self.itl_s), "n_out_source": self.n_out_source,
            "chunk_tokens_source": self.chunk_tokens_source, "first_byte_s": None,
            "chunk_t_s": list(self.chunk_t_s), "chunk_tokens": list(self.chunk_tokens),
            "usage": asdict(self.usage) if self.usage else None, "server_timings": None,
            "text": self.text, "reasoning": self.reasoning,
            "tool_calls": list(self.tool_calls), "invalid_utf8_bytes": 0, "saw_done": None,
            "source": self.source, "raw": self.raw,
        }  # fmt: skip


def _ratio(num: float | None, den: float | None) -> float | None:
    return num / den if num is not None and den else None


def derive_missing(m: Metrics) -> list[str]:
    """Fill metrics the source did not give, by servelab's own formulas; return their names."""
    filled: list[str] = []

    def put(name: str, value: float | None) -> None:
        if m.get(name) is None and value is not None and math.isfinite(value):
            m[name] = value
            filled.append(name)

    ttft, e2e, n_out = m.get("ttft_s"), m.get("e2e_s"), m.get("n_out")
    if ttft is not None and e2e is not None and n_out is not None and n_out >= 2 and e2e > ttft:
        put("tpot_s", (e2e - ttft) / (n_out - 1))
        put("decode_tps", (n_out - 1) / (e2e - ttft))
    tpot, decode = m.get("tpot_s"), m.get("decode_tps")
    if tpot and decode is None:
        put("decode_tps", 1.0 / tpot)
    tpot, decode = m.get("tpot_s"), m.get("decode_tps")
    if decode and tpot is None:
        put("tpot_s", 1.0 / decode)
    if e2e and n_out is not None:
        put("e2e_tps", n_out / e2e)
    draft_n = m.get("draft_n")
    if draft_n:
        put("acceptance_rate", _ratio(m.get("draft_accepted"), draft_n))
    return filled


def split_ttft(m: Metrics, text: str | None, tool_calls: tuple[ToolCallJson, ...]) -> None:
    """A reply that is only text or only tool calls tells which kind its first token was."""
    ttft = m.get("ttft_s")
    if ttft is None:
        return
    has_text, has_tools = bool(text), bool(tool_calls)
    if has_text and not has_tools and m.get("ttft_content_s") is None:
        m["ttft_content_s"] = ttft
    if has_tools and not has_text and m.get("ttft_tool_s") is None:
        m["ttft_tool_s"] = ttft


def _tool_calls(value: object) -> tuple[ToolCallJson, ...]:
    return tuple(c for c in value if isinstance(c, dict)) if isinstance(value, list) else ()


def _int(value: object) -> int:
    number = number_or_none(value)
    return int(number) if number else 0


def finish_row(partial: Partial, run_id: str, seq: int) -> tuple[ImportedRow, list[str]]:
    """A full servelab row from a reader's partial row; also the names of derived metrics."""
    get = partial.get
    metrics: Metrics = {m: number_or_none(get(m)) for m in METRIC_NAMES if m != "itl_s"}
    for name in COUNTS:
        value = metrics[name]
        if value is not None:
            metrics[name] = round(value)
    n_in, n_out = metrics["n_in"], metrics["n_out"]
    raw = get("raw")
    raw_values: dict[str, object] = dict(raw) if isinstance(raw, dict) else {}
    outcome = text_or_none(get("outcome")) or "ok"
    text, tool_calls = text_or_none(get("text")), _tool_calls(get("tool_calls"))
    itl_s = numbers(get("itl_s"))
    derived: list[str] = []
    if outcome == "ok":
        derived = derive_missing(metrics)
        split_ttft(metrics, text, tool_calls)
    else:  # failures never carry latency (docs/metrics.md); the source values move to raw
        kept = {m: metrics[m] for m in LATENCY if metrics[m] is not None}
        if kept:
            raw_values = {**raw_values, "failed_request_latency": kept}
        metrics.update(dict.fromkeys(LATENCY, None))
        itl_s = ()
    source = get("source")
    prompt_id = get("prompt_id")
    concurrency = get("concurrency", 1)
    row = ImportedRow(
        run_id=run_id, arm=str(get("arm")), block=_int(get("block")),
        phase=text_or_none(get("phase")) or "trial", seq=seq,
        prompt_id=str(prompt_id if prompt_id is not None else ""),
        concurrency=int(concurrency) if isinstance(concurrency, int | float) else None,
        t_send_unix_s=number_or_none(get("t_send_unix_s")), outcome=outcome,
        error=text_or_none(get("error")), http_status=_http_status(get("http_status")),
        finish_reason=text_or_none(get("finish_reason")), metrics=metrics, itl_s=itl_s,
        # "usage" where the reader knows the count is the server's own; "source" otherwise.
        n_out_source=text_or_none(get("n_out_source", "source")) if get("n_out") else None,
        chunk_tokens_source=text_or_none(get("chunk_tokens_source")),
        chunk_t_s=numbers(get("chunk_t_s")), chunk_tokens=numbers(get("chunk_tokens")),
        usage=Usage(int(n_in), int(n_out)) if n_in is not None and n_out is not None else None,
        text=text, reasoning=text_or_none(get("reasoning")), tool_calls=tool_calls,
        source=dict(source) if isinstance(source, dict) else {}, raw=raw_values,
    )  # fmt: skip
    return row, derived


def _http_status(value: object) -> int | None:
    number = number_or_none(value)
    return None if number is None else int(number)
