"""Gate outcomes: does each arm meet the spec's thresholds, judged on confidence intervals?

Owns the summary's ``gates``: for every arm and rule (spec/gates.py) a ``GateResult`` saying
whether it ``passed``, the ``value`` (point estimate), the ``threshold`` it was held to and the
``interval`` that decided it. A ``>=`` rule holds when the interval's lower end meets the
threshold, a ``<=`` rule when its upper end does, so a noisy arm cannot pass on a lucky point
estimate:

- request metrics: the arm's level over blocks (stats/level.py); relative rules on a median or
  mean use the candidate / baseline ratio interval (stats/compare.py);
- rates (quality rates, ``error_rate``): Wilson intervals; relative rules the interval of the
  difference from the baseline;
- ``ppl``: PPL +/- 1.96 x its standard error; ``kld`` and ``kv_bytes``: exact values.

The baseline passes every rule relative to itself. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from servelab.analysis.row_selection import Row, block_of, ok_trials, positive
from servelab.metrics import METRIC_BY_NAME
from servelab.spec.gates import Rule, parse_rule
from servelab.stats.compare import compare_blocks
from servelab.stats.level import level_interval
from servelab.store.perplexity import PerplexityArm
from servelab.store.summary import (
    ArmPrediction,
    GateResult,
    RateCI,
    RateComparison,
    Summary,
)

Z95 = 1.959963984540054
Interval = tuple[float | None, float | None]


@dataclass(frozen=True, slots=True)
class GateContext:
    """What the gates read beyond the rows: the summary's rates, perplexity and KV figures."""

    baseline: str
    arms: tuple[str, ...]
    error_rates: Mapping[str, RateCI] = field(default_factory=dict)
    quality_rates: Mapping[str, Mapping[str, RateCI]] = field(default_factory=dict)
    quality_diffs: Mapping[str, Mapping[str, RateComparison]] = field(default_factory=dict)
    ppl: Mapping[str, PerplexityArm] = field(default_factory=dict)  # quality/ppl.json's arms
    kv_bytes: Mapping[str, float | None] = field(default_factory=dict)

    @classmethod
    def of(cls, summary: Summary) -> GateContext:
        q, t = summary.quality, summary.theory
        return cls(
            baseline=summary.baseline,
            arms=tuple(summary.arms),
            error_rates={a: s.error_rate for a, s in summary.arms.items() if s.error_rate},
            quality_rates={a: x.rates for a, x in (q.arms or {}).items()} if q else {},
            quality_diffs=dict(q.comparisons or {}) if q else {},
            ppl=q.ppl.arms if q is not None and q.ppl is not None else {},
            kv_bytes={a: _kv(p) for a, p in t.arms.items()} if t else {},
        )


def _kv(p: object) -> float | None:
    if not isinstance(p, ArmPrediction):
        return None
    if p.kv_mib_reported is not None:
        return float(p.kv_mib_reported) * 2**20
    return float(p.kv_bytes_predicted)


def _blocks(rows: Sequence[Row], arm: str, metric: str) -> dict[int, list[float]]:
    out: dict[int, list[float]] = {}
    for r in ok_trials(rows, arm):
        out.setdefault(block_of(r), []).extend(positive((r,), metric))
    return {b: v for b, v in out.items() if v}


def _result(rule: Rule, value: float | None, interval: Interval, threshold: float | None,
            note: str = "", threshold_value: float | None = None) -> GateResult:  # fmt: skip
    lo, hi = interval
    if value is None or threshold is None:
        return GateResult(False, value, threshold, (lo, hi), note or "no data to judge",
                          threshold_value)  # fmt: skip
    edge = lo if rule.op == ">=" else hi
    if edge is None:
        note = note or "no interval (fewer than two blocks)"
        return GateResult(False, value, threshold, (lo, hi), note, threshold_value)
    passed = edge >= threshold if rule.op == ">=" else edge <= threshold
    return GateResult(bool(passed), value, threshold, (lo, hi), note, threshold_value)


def _itself(value: float | None, interval: Interval) -> GateResult:
    return GateResult(True, value, value, interval, "the baseline itself")


def _threshold(rule: Rule, base: float | None) -> float | None:
    if not rule.relative:
        return rule.value
    if base is None:
        return None
    return base * rule.value if rule.combine == "times" else base + rule.value


def _request_metric(rule: Rule, arm: str, baseline: str, rows: Sequence[Row], interleaved: bool,
                    seed: int) -> GateResult:  # fmt: skip
    rng = np.random.default_rng([seed, len(arm), len(rule.text)])
    blocks = _blocks(rows, arm, rule.metric)
    level = level_interval(list(blocks.values()), rule.stat, rng=rng)
    if not rule.relative:
        return _result(rule, level.value, (level.ci_low, level.ci_high), rule.value)
    base_blocks = _blocks(rows, baseline, rule.metric)
    base = level_interval(list(base_blocks.values()), rule.stat, rng=rng, n_resamples=200)
    if arm == baseline:
        return _itself(base.value, (base.ci_low, base.ci_high))
    threshold = _threshold(rule, base.value)
    if rule.stat in ("median", "mean") and rule.combine == "times" and blocks and base_blocks:
        common = sorted(set(blocks) & set(base_blocks)) if interleaved else []
        paired = interleaved and len(common) >= 2
        cmp = compare_blocks(
            [base_blocks[b] for b in common] if paired else list(base_blocks.values()),
            [blocks[b] for b in common] if paired else list(blocks.values()),
            paired=paired, rng=rng,
        )  # fmt: skip
        ri = cmp.median if rule.stat == "median" else cmp.mean
        return _result(rule, ri.ratio, (ri.ci_low, ri.ci_high), rule.value,
                       "ratio to the baseline", threshold)  # fmt: skip
    return _result(rule, level.value, (level.ci_low, level.ci_high), threshold,
                   "arm's interval against the baseline's point estimate")  # fmt: skip


def _rate(rule: Rule, arm: str, ctx: GateContext) -> GateResult:
    baseline = ctx.baseline
    if rule.metric == "error_rate":
        r, base = ctx.error_rates.get(arm), ctx.error_rates.get(baseline)
        interval = (r.ci_low, r.ci_high) if r else (None, None)
        value = r.p if r else None
        if not rule.relative:
            return _result(rule, value, interval, rule.value)
        return _result(rule, value, interval, _threshold(rule, base.p if base else None),
                       "arm's Wilson interval against the baseline's rate")  # fmt: skip
    rate = (ctx.quality_rates.get(arm) or {}).get(rule.metric)
    base_rate = (ctx.quality_rates.get(baseline) or {}).get(rule.metric)
    if rate is None or not rate.n:
        return _result(rule, None, (None, None), rule.value,
                       "no request in this rate's population")  # fmt: skip
    if not rule.relative:
        return _result(rule, rate.p, (rate.ci_low, rate.ci_high), rule.value)
    if arm == baseline:
        return _itself(rate.p, (rate.ci_low, rate.ci_high))
    threshold = _threshold(rule, base_rate.p if base_rate else None)
    comp = (ctx.quality_diffs.get(arm) or {}).get(rule.metric)
    if rule.combine == "plus" and comp is not None:  # the difference from the baseline
        return _result(rule, comp.difference, (comp.diff_ci_low, comp.diff_ci_high), rule.value,
                       "difference from the baseline", threshold)  # fmt: skip
    return _result(rule, rate.p, (rate.ci_low, rate.ci_high), threshold)


def _ppl(rule: Rule, arm: str, ctx: GateContext) -> GateResult:
    a, b = ctx.ppl.get(arm), ctx.ppl.get(ctx.baseline)
    kld = (a.kld if a is not None else None) or {}
    if rule.metric == "kld":
        if arm == ctx.baseline:
            return _result(rule, 0.0, (0.0, 0.0), _threshold(rule, 0.0), "the baseline itself")
        value, k_err = kld.get("mean"), kld.get("mean_err") or 0.0
        if value is None:
            return _result(rule, None, (None, None), None, "run `servelab quality ppl` first")
        return _result(rule, value, (max(0.0, value - Z95 * k_err), value + Z95 * k_err),
                       _threshold(rule, 0.0))  # fmt: skip
    if a is None:
        return _result(rule, None, (None, None), None, "run `servelab quality ppl` first")
    value, err, base = a.ppl, a.ppl_err or 0.0, (b.ppl if b is not None else None)
    interval = (value - Z95 * err, value + Z95 * err)
    if rule.relative and arm == ctx.baseline:
        return _itself(value, interval)
    ratio = kld.get("ppl_ratio")
    if rule.relative and rule.combine == "times" and ratio is not None:
        # llama-perplexity's paired ratio over the same tokens: far tighter than two PPLs
        r_err = kld.get("ppl_ratio_err") or 0.0
        return _result(rule, ratio, (ratio - Z95 * r_err, ratio + Z95 * r_err), rule.value,
                       "PPL ratio to the baseline over the same tokens",
                       _threshold(rule, base))  # fmt: skip
    return _result(rule, value, interval, _threshold(rule, base))


def _kv_rule(rule: Rule, arm: str, ctx: GateContext) -> GateResult:
    value = ctx.kv_bytes.get(arm)
    return _result(rule, value, (value, value), _threshold(rule, ctx.kv_bytes.get(ctx.baseline)))


def evaluate_gates(
    rules: Sequence[str], summary: Summary | GateContext, rows: Sequence[Row], *,
    interleaved: bool = True, seed: int = 0,
) -> dict[str, dict[str, GateResult]]:  # fmt: skip
    """``{ARM: {RULE: GateResult}}`` for every arm of the summary."""
    ctx = summary if isinstance(summary, GateContext) else GateContext.of(summary)
    out: dict[str, dict[str, GateResult]] = {arm: {} for arm in ctx.arms}
    for text in rules:
        rule = parse_rule(text)
        for arm in ctx.arms:
            if rule.metric in METRIC_BY_NAME and rule.metric != "error_rate":
                res = _request_metric(rule, arm, ctx.baseline, rows, interleaved, seed)
            elif rule.metric in ("ppl", "kld"):
                res = _ppl(rule, arm, ctx)
            elif rule.metric == "kv_bytes":
                res = _kv_rule(rule, arm, ctx)
            else:
                res = _rate(rule, arm, ctx)
            out[arm][text] = res
    return out


def failed_required(
    gates: Mapping[str, Mapping[str, GateResult]], required: Sequence[str]
) -> list[str]:
    """One line per failed rule of a required arm."""
    return [
        f"{arm}: {rule} (value {res.value}, threshold {res.threshold})"
        for arm in required
        for rule, res in (gates.get(arm) or {}).items()
        if not res.passed
    ]
