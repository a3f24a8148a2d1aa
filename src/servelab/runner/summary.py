"""Bench summaries computed from stored rows (never from memory), so they can be rebuilt.

Owns the bench ``summary.json``: per metric the median, mean, p90, p99 and std over successful
trial requests; failures counted by outcome, apart; and run-level figures from the engine's
/metrics counter deltas. Pure: rows in, dict out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from servelab.metrics import SUMMARY_METRICS
from servelab.stats.summary import summarize
from servelab.store import SCHEMA_VERSION

EXTRA_METRICS = ("prefill_tps", "server_decode_tps", "acceptance_rate", "wait_s")


def _counter(deltas: dict[str, float], name: str) -> float | None:
    return deltas.get(f"llamacpp:{name}")


def engine_counter_figures(deltas: dict[str, float] | None) -> dict[str, float | None]:
    """Run-level rates from counter deltas (llama.cpp counts n tokens here, not n - 1)."""
    if not deltas:
        return {}
    tokens, seconds = (
        _counter(deltas, "tokens_predicted_total"),
        _counter(deltas, "tokens_predicted_seconds_total"),
    )
    drafted = _counter(deltas, "spec_decode_num_draft_tokens_total")
    accepted = _counter(deltas, "spec_decode_num_accepted_tokens_total")
    return {
        "tokens_predicted": tokens,
        "decode_tps_counters": tokens / seconds if tokens and seconds else None,
        "prompt_tokens": _counter(deltas, "prompt_tokens_total"),
        "draft_tokens": drafted,
        "draft_accepted": accepted,
        "acceptance_rate": accepted / drafted if drafted and accepted is not None else None,
    }


def summarize_rows(
    rows: Sequence[Mapping[str, Any]], deltas: dict[str, float] | None
) -> dict[str, Any]:
    by_arm: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        by_arm.setdefault(str(row.get("arm", "bench")), []).append(row)
    return {
        "schema_version": SCHEMA_VERSION,
        "arms": {arm: summarize_arm(arm_rows) for arm, arm_rows in by_arm.items()},
        "engine_counters": engine_counter_figures(deltas),
    }


def summarize_arm(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    trials = [r for r in rows if r.get("phase") == "trial"]
    ok = [r for r in trials if r.get("outcome") == "ok"]
    failed = Counter(str(r.get("outcome")) for r in trials if r.get("outcome") != "ok")
    metrics = {
        m: summarize(r.get(m) for r in ok).as_dict() for m in (*SUMMARY_METRICS, *EXTRA_METRICS)
    }
    itl = summarize(v for r in ok for v in r.get("itl_s") or [])
    metrics["itl_s"] = itl.as_dict()
    return {
        "n_ok": len(ok),
        "n_failed": sum(failed.values()),
        "n_warmup": sum(1 for r in rows if r.get("phase") == "warmup"),
        "failures": dict(failed),
        "finish_reasons": dict(Counter(str(r.get("finish_reason")) for r in ok)),
        "n_out_fallback": sum(1 for r in ok if r.get("n_out_source") != "usage"),
        "itl_unverified": sum(1 for r in ok if r.get("chunk_tokens_source") == "estimated"),
        "invalid_utf8_requests": sum(1 for r in ok if r.get("invalid_utf8_bytes")),
        "metrics": metrics,
    }
