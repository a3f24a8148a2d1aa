"""The metric dictionary: every per-request metric servelab reports, defined once.

Owns the names, units, provenance and formulas of request metrics (see docs/metrics.md, which a
test keeps in step with ``METRICS``). Pure: takes an ``Observation``, returns numbers. Failed
requests get no latency metrics at all, so they can never leak into latency statistics.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, TypedDict, get_args

from servelab.records import Observation, Outcome


class Provenance(StrEnum):
    MEASURED = "measured"  # timed by servelab's own monotonic clock
    SERVER = "server-reported"  # a number the engine sent
    DERIVED = "derived"  # computed from the two above


@dataclass(frozen=True, slots=True)
class MetricDef:
    name: str
    unit: str
    provenance: Provenance
    lower_is_better: bool | None  # None: not a performance direction (a count)
    summary: str


M, S, D = Provenance.MEASURED, Provenance.SERVER, Provenance.DERIVED

METRICS: tuple[MetricDef, ...] = (
    MetricDef("ttft_s", "s", M, True, "wait + send -> first token-bearing chunk (content, reasoning or tool-call name)"),
    MetricDef("ttft_content_s", "s", M, True, "wait + send -> first content token"),
    MetricDef("ttft_tool_s", "s", M, True, "wait + send -> first tool-call name"),
    MetricDef("e2e_s", "s", M, True, "wait + send -> end of the stream"),
    MetricDef("wait_s", "s", M, True, "concurrency slot free -> send (client-side queueing)"),
    MetricDef("itl_s", "s", M, True, "per gap between token-bearing chunks: gap / tokens in the later chunk (only when tokens per chunk are exact or verified)"),
    MetricDef("tpot_s", "s", D, True, "(e2e_s - ttft_s) / (n_out - 1)"),
    MetricDef("decode_tps", "tok/s", D, False, "(n_out - 1) / (e2e_s - ttft_s)"),
    MetricDef("e2e_tps", "tok/s", D, False, "n_out / e2e_s (includes prefill and waiting)"),
    MetricDef("n_out", "tokens", S, None, "usage.completion_tokens; chunk-count fallback is recorded in n_out_source"),
    MetricDef("n_in", "tokens", S, None, "usage.prompt_tokens"),
    MetricDef("prefill_tps", "tok/s", S, False, "timings.prompt_per_second (llama.cpp)"),
    MetricDef("server_prompt_s", "s", S, True, "timings.prompt_ms / 1000 (llama.cpp)"),
    MetricDef("server_decode_tps", "tok/s", S, False, "timings.predicted_per_second (llama.cpp: (n-1) / predicted_ms)"),
    MetricDef("cache_n", "tokens", S, None, "timings.cache_n: prompt tokens reused from the prompt cache"),
    MetricDef("prefix_reuse", "ratio", D, False, "cache_n / n_in: share of the prompt served from the prefix cache (a conversation's later turns)"),
    MetricDef("draft_n", "tokens", S, None, "timings.draft_n: tokens drafted by speculative decoding"),
    MetricDef("draft_accepted", "tokens", S, None, "timings.draft_n_accepted"),
    MetricDef("acceptance_rate", "ratio", D, False, "draft_accepted / draft_n"),
)  # fmt: skip

METRIC_BY_NAME = {m.name: m for m in METRICS}

# The tokens each rate counts, as (row field, offset): a request's time is tokens / rate, and
# the pooled rate of many requests (Σ tokens / Σ time) is what a workload costs.
POOLED_TOKENS: dict[str, tuple[str, int]] = {
    "decode_tps": ("n_out", -1),  # (n_out - 1) / (e2e_s - ttft_s)
    "server_decode_tps": ("n_out", -1),
    "e2e_tps": ("n_out", 0),
    "prefill_tps": ("n_in", 0),
}


def is_rate(metric: str) -> bool:
    """A speed in tokens per second: compared as pooled rates."""
    known = METRIC_BY_NAME.get(metric)
    return known is not None and known.unit == "tok/s"


def default_statistics(metric: str) -> tuple[str, ...]:
    """The statistics a metric is decided on unless the spec says otherwise
    (docs/statistics.md): rates pooled (Σ tokens / Σ time: what a workload costs); everything
    else the mean (the total time a user waits, per request) and the p90 (the tail an SLO is
    written on)."""
    return ("pooled",) if is_rate(metric) else ("mean", "p90")


# The statistics a comparison can be decided on (stats/paired.py computes them).
Statistic = Literal["pooled", "mean", "median", "p90", "p99"]
STATISTICS: tuple[Statistic, ...] = get_args(Statistic)

MetricChoice = Sequence[str] | Mapping[str, str | Sequence[str]]


def decision_statistics(metrics: MetricChoice) -> tuple[tuple[str, str], ...]:
    """(metric, statistic) pairs from a spec's ``metrics``: a list of metric names (each with
    its ``default_statistics``) or a mapping from metric to one statistic or a list of them.
    Raises ValueError naming an unknown metric or statistic, or ``pooled`` on a non-rate."""
    items = metrics.items() if isinstance(metrics, Mapping) else ((m, None) for m in metrics)
    out: list[tuple[str, str]] = []
    for metric, chosen in items:
        known = METRIC_BY_NAME.get(metric)
        if known is None:
            raise ValueError(
                f"unknown metric {metric!r}; known: {', '.join(sorted(METRIC_BY_NAME))}"
            )
        if known.lower_is_better is None:
            raise ValueError(f"metric {metric!r} has no better direction; decide on another")
        stats = (
            (chosen,) if isinstance(chosen, str) else tuple(chosen or default_statistics(metric))
        )
        for stat in stats:
            if stat not in STATISTICS:
                raise ValueError(
                    f"{metric}: unknown statistic {stat!r}; known: {', '.join(STATISTICS)}"
                )
            if stat == "pooled" and not is_rate(metric):
                raise ValueError(
                    f"{metric}: pooled is for rates (tok/s); use mean, median, p90 or p99"
                )
            if (metric, stat) not in out:
                out.append((metric, stat))
    if not out:
        raise ValueError("metrics: name at least one metric to decide on")
    return tuple(out)


def pooled_weight(metric: str, row: Mapping[str, object]) -> float:
    """The tokens ``metric``'s rate counts in one request row (its time is tokens / rate).

    1.0 when the row does not say (or the metric is not a known rate): pooling then weighs
    every request alike, which is the harmonic mean of the rates.
    """
    field, offset = POOLED_TOKENS.get(metric, ("", 0))
    value = row.get(field) if field else None
    if isinstance(value, int | float) and not isinstance(value, bool):
        tokens = float(value) + offset
        if 0 < tokens < float("inf"):
            return tokens
    return 1.0


# Scalar metrics a summary table shows, in order.
SUMMARY_METRICS = ("ttft_s", "e2e_s", "tpot_s", "decode_tps", "e2e_tps", "n_out", "n_in")


class ServerMetrics(TypedDict):
    """What the engine reported about one request (None where it did not)."""

    prefill_tps: float | None
    server_prompt_s: float | None
    server_decode_tps: float | None
    cache_n: int | None
    prefix_reuse: float | None
    draft_n: int | None
    draft_accepted: int | None
    acceptance_rate: float | None


class LatencyMetrics(TypedDict):
    """The latency metrics of one request: all None (and no ITL) unless it succeeded."""

    ttft_s: float | None
    ttft_content_s: float | None
    ttft_tool_s: float | None
    e2e_s: float | None
    tpot_s: float | None
    decode_tps: float | None
    e2e_tps: float | None
    itl_s: list[float]


class RequestMetrics(ServerMetrics, LatencyMetrics):
    """Every metric ``derive`` gives for one request (the keys of ``METRICS`` plus where the
    token counts came from), in the order a request row stores them."""

    n_out: int
    n_out_source: str
    chunk_tokens_source: str
    n_in: int | None
    wait_s: float


def _ttft(obs: Observation) -> float | None:
    firsts = [
        t
        for t in (obs.first_content_s, obs.first_tool_s, obs.extra.get("first_reasoning_s"))
        if t is not None
    ]
    return min(firsts) if firsts else None


def _plus_wait(obs: Observation, t: float | None) -> float | None:
    return None if t is None else obs.wait_s + t


def itl_s(chunk_t_s: tuple[float, ...], chunk_tokens: tuple[int, ...]) -> list[float]:
    """Gap between consecutive token-bearing chunks divided by the tokens the later one carries.

    Chunks that carried no counted token (their tokens were reported with a later chunk) are
    merged into the next one.
    """
    out: list[float] = []
    prev: float | None = None
    for t, n in zip(chunk_t_s, chunk_tokens, strict=True):
        if n <= 0:
            continue
        if prev is not None:
            out.append((t - prev) / n)
        prev = t
    return out


def chunk_tokens_source(obs: Observation) -> str:
    """``server`` (exact per chunk), ``verified`` or ``estimated``.

    Without per-chunk counts each token-bearing chunk is taken as one token. That guess is
    ``verified`` when the server's own total agrees: n_out equals the chunks, plus the one
    end-of-sequence token that carries no text when generation stopped by itself. Otherwise
    some chunks carried several tokens (llama.cpp holds back text, for example half of a CJK
    character split across tokens) and the per-chunk counts stay ``estimated``.
    """
    if obs.chunk_tokens_source == "server" or obs.usage is None:
        return obs.chunk_tokens_source
    eos = 0 if obs.finish_reason == "length" else 1
    expected = len(obs.chunk_t_s) + eos
    return "verified" if obs.usage.completion_tokens == expected else "estimated"


def n_out(obs: Observation) -> tuple[int, str]:
    """Output tokens and where the count came from: ``usage`` or the ``chunks`` fallback."""
    if obs.usage is not None:
        return obs.usage.completion_tokens, "usage"
    return sum(obs.chunk_tokens), "chunks"


def _server(obs: Observation) -> ServerMetrics:
    t = obs.server_timings or {}
    num = (int, float)

    def get(key: str, scale: float = 1.0) -> float | None:
        v = t.get(key)
        return float(v) * scale if isinstance(v, num) and not isinstance(v, bool) else None

    def count(key: str) -> int | None:
        v = get(key)
        return None if v is None else round(v)

    draft_n, accepted = count("draft_n"), count("draft_n_accepted")
    cache_n = count("cache_n")
    return {
        "prefill_tps": get("prompt_per_second"),
        "server_prompt_s": get("prompt_ms", 1e-3),
        "server_decode_tps": get("predicted_per_second"),
        "cache_n": cache_n,
        "prefix_reuse": prefix_reuse(cache_n, obs.usage.prompt_tokens if obs.usage else None),
        "draft_n": draft_n,
        "draft_accepted": accepted,
        "acceptance_rate": accepted / draft_n if draft_n and accepted is not None else None,
    }


def prefix_reuse(cache_n: float | None, n_in: float | None) -> float | None:
    """The share of a request's prompt the engine served from its prefix cache: ``cache_n /
    n_in`` (llama-server's ``timings.cache_n`` over ``usage.prompt_tokens``). None when either
    is unknown or the prompt is empty. It reads 0 with the cache off, and on a conversation's
    first turn unless an earlier request shared its prefix."""
    if cache_n is None or n_in is None or n_in <= 0:
        return None
    return cache_n / n_in


def derive(obs: Observation) -> RequestMetrics:
    """All request metrics for ``obs``; latency metrics are ``None`` unless the request is ok."""
    out_n, out_src = n_out(obs)
    source = chunk_tokens_source(obs)
    return {
        "n_out": out_n,
        "n_out_source": out_src,
        "chunk_tokens_source": source,
        "n_in": obs.usage.prompt_tokens if obs.usage else None,
        "wait_s": obs.wait_s,
        **_server(obs),
        **_latency(obs, out_n, source),
    }


def _latency(obs: Observation, out_n: int, source: str) -> LatencyMetrics:
    if obs.outcome is not Outcome.OK:
        return {
            "ttft_s": None, "ttft_content_s": None, "ttft_tool_s": None, "e2e_s": None,
            "tpot_s": None, "decode_tps": None, "e2e_tps": None, "itl_s": [],
        }  # fmt: skip
    ttft = _plus_wait(obs, _ttft(obs))
    e2e = obs.wait_s + obs.end_s
    decode_s = e2e - ttft if ttft is not None else None
    has_decode = decode_s is not None and decode_s > 0 and out_n >= 2
    return {
        "ttft_s": ttft,
        "ttft_content_s": _plus_wait(obs, obs.first_content_s),
        "ttft_tool_s": _plus_wait(obs, obs.first_tool_s),
        "e2e_s": e2e,
        "tpot_s": decode_s / (out_n - 1) if has_decode and decode_s else None,
        "decode_tps": (out_n - 1) / decode_s if has_decode and decode_s else None,
        "e2e_tps": out_n / e2e if e2e > 0 else None,
        # Unverified per-chunk counts would make ITL wrong by their factor: leave it out.
        "itl_s": itl_s(obs.chunk_t_s, obs.chunk_tokens) if source != "estimated" else [],
    }
