"""Per-arm figures computed from stored rows (never from memory), so they can be rebuilt.

Owns ``ArmSummary`` records: per metric the median, mean, p90, p99 and std over successful
trial requests; failures counted by outcome, apart; the experiment extras (blocks, error and
truncation rates with Wilson intervals, per-level summaries); and the bench summary
(``bench_summary``: arms plus run-level figures from the engine's /metrics counter deltas,
read through the engine's ``CounterNames``, and the spec-decode and prefix-cache records of
``analysis.spec_decode``). Pure: rows in, records out.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from servelab.analysis.arrivals import open_loop_figures
from servelab.analysis.capacity import goodput_of
from servelab.analysis.comparisons import rate_ci, rate_counts
from servelab.analysis.row_selection import Row, block_of, load_level, ok_trials, trials
from servelab.analysis.spec_decode import CounterInputs, prefix_cache_section, spec_decode_section
from servelab.engines.base import CounterNames
from servelab.metrics import SUMMARY_METRICS
from servelab.spec.slo import parse_slos
from servelab.stats.summary import summarize
from servelab.store import SCHEMA_VERSION
from servelab.store.metrics_files import BlockCache, BlockDeltas
from servelab.store.summary import ArmSummary, BenchSummary, EngineCounterFigures, MetricSummary

EXTRA_METRICS = ("prefill_tps", "server_decode_tps", "acceptance_rate", "wait_s")


def _summary_of(rows: Sequence[Row], metric: str) -> MetricSummary:
    return summarize(r.get(metric) for r in rows)


def summarize_arm(rows: Sequence[Row]) -> ArmSummary:
    """Counts and metric summaries of one arm's rows (the bench fields of ``ArmSummary``)."""
    tried = [r for r in rows if r.get("phase") == "trial"]
    ok = [r for r in tried if r.get("outcome") == "ok"]
    failed = Counter(str(r.get("outcome")) for r in tried if r.get("outcome") != "ok")
    metrics = {m: _summary_of(ok, m) for m in (*SUMMARY_METRICS, *EXTRA_METRICS)}
    metrics["itl_s"] = summarize(v for r in ok for v in r.get("itl_s") or [])
    return ArmSummary(
        n_ok=len(ok),
        n_failed=sum(failed.values()),
        n_warmup=sum(1 for r in rows if r.get("phase") == "warmup"),
        failures=dict(failed),
        finish_reasons=dict(Counter(str(r.get("finish_reason")) for r in ok)),
        n_out_fallback=sum(1 for r in ok if r.get("n_out_source") != "usage"),
        itl_unverified=sum(1 for r in ok if r.get("chunk_tokens_source") == "estimated"),
        invalid_utf8_requests=sum(1 for r in ok if r.get("invalid_utf8_bytes")),
        metrics=metrics,
    )


def experiment_arm(rows: Sequence[Row], metrics: Sequence[str], confidence: float) -> ArmSummary:
    """``summarize_arm`` plus decision metrics, blocks, rates and per-level summaries."""
    base = summarize_arm(rows)
    ok = ok_trials(rows)
    all_metrics = dict(base.metrics)
    for metric in metrics:
        all_metrics.setdefault(metric, _summary_of(ok, metric))
    rates = {name: rate_ci(k, n, confidence) for name, (k, n) in rate_counts(rows).items()}
    levels = sorted({load_level(r) for r in ok})
    by_level = None
    if len(levels) > 1:
        by_level = {
            c.key: {m: _summary_of([r for r in ok if load_level(r) == c], m) for m in metrics}
            for c in levels
        }
    return ArmSummary(
        n_ok=base.n_ok, n_failed=base.n_failed, n_warmup=base.n_warmup, failures=base.failures,
        finish_reasons=base.finish_reasons, n_out_fallback=base.n_out_fallback,
        itl_unverified=base.itl_unverified, invalid_utf8_requests=base.invalid_utf8_requests,
        metrics=all_metrics,
        n_blocks=len({(block_of(r), load_level(r)) for r in trials(rows)}),
        error_rate=rates["error_rate"], truncated_rate=rates["truncated_rate"],
        by_concurrency=by_level,
    )  # fmt: skip


def engine_counter_figures(
    deltas: Mapping[str, float] | None, names: CounterNames
) -> EngineCounterFigures | None:
    """Run-level rates from counter deltas (llama.cpp counts n tokens here, not n - 1)."""
    if not deltas:
        return None
    d = dict(deltas)
    tokens = names.read(d, names.tokens_predicted)
    seconds = names.read(d, names.tokens_predicted_seconds)
    drafted = names.read(d, names.draft_tokens)
    accepted = names.read(d, names.draft_accepted_tokens)
    return EngineCounterFigures(
        tokens_predicted=tokens,
        decode_tps_counters=tokens / seconds if tokens and seconds else None,
        prompt_tokens=names.read(d, names.prompt_tokens),
        draft_tokens=drafted,
        draft_accepted=accepted,
        acceptance_rate=accepted / drafted if drafted and accepted is not None else None,
    )


def bench_summary(
    rows: Sequence[Row],
    deltas: Mapping[str, float] | None,
    names: CounterNames,
    slos: Sequence[str] = (),
    *,
    caching: bool | None = None,
    caches: Sequence[BlockCache] = (),
) -> BenchSummary:
    """The bench ``summary.json``: one ``ArmSummary`` per arm, the counter figures, an open
    loop's rates and lag, with ``slos`` the goodput (``analysis.capacity.goodput_of``), and
    the spec-decode and prefix-cache records (``caching``: the bench's ``--prefix-cache``;
    ``caches``: how its block's cache was emptied), each left out when there is none."""
    parsed = parse_slos(slos)
    by_arm: dict[str, list[Row]] = {}
    for row in rows:
        by_arm.setdefault(str(row.get("arm", "bench")), []).append(row)
    counters = {
        arm: CounterInputs(
            names, (BlockDeltas(arm, 0, "", dict(deltas)),) if deltas else (),
            tuple(c for c in caches if c.arm == arm), caching,
        )
        for arm in by_arm
    }  # fmt: skip
    return BenchSummary(
        schema_version=SCHEMA_VERSION,
        arms={arm: summarize_arm(arm_rows) for arm, arm_rows in by_arm.items()},
        engine_counters=engine_counter_figures(deltas, names) or {},
        open_loop=open_loop_figures(rows),
        goodput=goodput_of(rows, parsed) if parsed else None,
        spec_decode=spec_decode_section(rows, counters),
        prefix_cache=prefix_cache_section(rows, counters),
    )
