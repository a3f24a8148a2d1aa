"""Gate outcomes: does each arm meet the spec's thresholds, judged on confidence intervals?

Owns the summary's ``gates``: for every arm and rule (spec/gates.py) a ``GateResult`` saying
whether it ``passed``, the ``value`` (point estimate), the ``threshold`` it was held to and the
``interval`` that decided it. A ``>=`` rule holds when the interval's lower end meets the
threshold, a ``<=`` rule when its upper end does, so a noisy arm cannot pass on a lucky point
estimate:

- request metrics are judged on the rule's statistic, or without one on the metric's default
  decision statistic (``statistic_of``: ``pooled`` for rates, ``mean`` for latencies), the
  statistic the comparisons decide on. Absolute rules use the arm's level over blocks
  (stats/level.py, ``pooled`` weighted by the tokens each rate counts). Relative rules
  (``baseline * F``, and ``baseline`` alone, read as ``baseline * 1``) use the candidate /
  reference ratio interval of the decision itself (stats/paired.py): paired by (round, prompt)
  when the run is interleaved, blocks resampled per arm otherwise. Other relative rules
  (``baseline + N``) hold the arm's interval to the reference's point estimate;
- rates (quality rates, ``error_rate``): Wilson intervals; relative rules the interval of the
  difference from the baseline;
- ``ppl``: PPL +/- 1.96 x its standard error; ``kld`` and ``kv_bytes``: exact values.

"baseline" in a request-metric rule is the arm's reference (an import may give each arm its
own, ``GateContext.references``), as in the comparisons. The reference passes every rule
relative to itself. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

from servelab.analysis.comparisons import cells_of, compare_arms
from servelab.analysis.row_selection import Row, ok_trials
from servelab.analysis.settings import DEFAULT_MIN_EFFECT, DEFAULT_RESAMPLES, Settings
from servelab.metrics import METRIC_BY_NAME, Statistic, default_statistics
from servelab.spec.gates import Rule, parse_rule
from servelab.stats.level import Level, level_interval
from servelab.stats.paired import Cell, PairedComparison, PromptMode
from servelab.store.perplexity import PerplexityArm
from servelab.store.summary import (
    ArmPrediction,
    GateResult,
    RateCI,
    RateComparison,
    Summary,
)

Z95 = 1.959963984540054
GATE_CONFIDENCE = 0.95  # gates keep their own level: a threshold is not a sequential look
Interval = tuple[float | None, float | None]
HOW = {
    "rounds": "paired, rounds resampled",
    "rounds_prompts": "paired, rounds and prompts resampled",
    "prompt_noise": "paired by prompt, one round",
    "blocks_unpaired": "unpaired blocks",
}


@dataclass(frozen=True, slots=True)
class GateContext:
    """What the gates read beyond the rows: the summary's rates, perplexity and KV figures, and
    how the comparisons were made (each arm's reference, the prompt mode)."""

    baseline: str
    arms: tuple[str, ...]
    error_rates: Mapping[str, RateCI] = field(default_factory=dict)
    quality_rates: Mapping[str, Mapping[str, RateCI]] = field(default_factory=dict)
    quality_diffs: Mapping[str, Mapping[str, RateComparison]] = field(default_factory=dict)
    ppl: Mapping[str, PerplexityArm] = field(default_factory=dict)  # quality/ppl.json's arms
    kv_bytes: Mapping[str, float | None] = field(default_factory=dict)
    references: Mapping[str, str] = field(default_factory=dict)  # arm -> its reference arm
    prompts: PromptMode = "fixed"  # the spec's prompt mode, as the comparisons use it
    min_effect: float = DEFAULT_MIN_EFFECT

    @classmethod
    def of(cls, summary: Summary, cfg: Settings | None = None) -> GateContext:
        """The context of a summary; ``cfg`` (the run's settings) gives the references, prompt
        mode and smallest effect the comparisons used, else the summary's comparisons do."""
        q, t = summary.quality, summary.theory
        return cls(
            baseline=summary.baseline,
            arms=tuple(summary.arms),
            **_decision_setup(summary, cfg),
            error_rates={a: s.error_rate for a, s in summary.arms.items() if s.error_rate},
            quality_rates={a: x.rates for a, x in (q.arms or {}).items()} if q else {},
            quality_diffs=dict(q.comparisons or {}) if q else {},
            ppl=q.ppl.arms if q is not None and q.ppl is not None else {},
            kv_bytes={a: _kv(p) for a, p in t.arms.items()} if t else {},
        )

    def reference_of(self, arm: str) -> str:
        """The arm a relative rule's "baseline" means for ``arm``: its reference."""
        return self.references.get(arm) or self.baseline


def _decision_setup(summary: Summary, cfg: Settings | None) -> dict[str, Any]:
    """References, prompt mode and smallest effect: the settings', else as the comparisons
    recorded them (each comparison names its reference; ``rounds_prompts`` is sampled mode)."""
    if cfg is not None:
        return {"references": dict(cfg.references), "prompts": cfg.prompts,
                "min_effect": cfg.min_effect}  # fmt: skip
    comps = summary.comparisons
    return {
        "references": {c.candidate: c.baseline for c in comps if c.baseline != summary.baseline},
        "prompts": "sampled" if any(c.method == "rounds_prompts" for c in comps) else "fixed",
        "min_effect": comps[0].min_effect if comps else DEFAULT_MIN_EFFECT,
    }


def _kv(p: object) -> float | None:
    if not isinstance(p, ArmPrediction):
        return None
    if p.kv_mib_reported is not None:
        return float(p.kv_mib_reported) * 2**20
    return float(p.kv_bytes_predicted)


def statistic_of(rule: Rule) -> Statistic:
    """The statistic a request-metric rule is judged on: its STAT, or the metric's default
    decision statistic (the first of ``default_statistics``: pooled for rates, mean for
    latencies), so that a gate and a verdict on one metric speak about the same number."""
    return cast(Statistic, rule.stat or default_statistics(rule.metric)[0])


def _cells(rows: Sequence[Row], arm: str, metric: str) -> list[Cell]:
    return [c for c in cells_of(ok_trials(rows, arm), metric) if c.values]


def _level(cells: Sequence[Cell], stat: str, rng: np.random.Generator,
           n_resamples: int = 2000) -> Level:  # fmt: skip
    return level_interval([c.values for c in cells], stat, weights=[c.weights for c in cells],
                          rng=rng, n_resamples=n_resamples)  # fmt: skip


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


def _ratio(base_rows: Sequence[Row], arm_rows: Sequence[Row], metric: str, stat: Statistic,
           interleaved: bool, ctx: GateContext, rng: np.random.Generator
           ) -> PairedComparison | None:  # fmt: skip
    """The decision's own comparison of the arm with its reference on ``stat``
    (``analysis.comparisons.compare_arms``: paired by (round, prompt) when interleaved)."""
    return compare_arms(
        base_rows, arm_rows, metric, stat, interleaved=interleaved, prompts=ctx.prompts,
        min_effect=ctx.min_effect, rng=rng, confidence=GATE_CONFIDENCE,
        n_resamples=DEFAULT_RESAMPLES,
    )  # fmt: skip


def _factor(rule: Rule) -> float | None:
    """The ratio a relative rule asks for (``baseline`` alone: 1), or None for an offset."""
    if rule.combine == "times":
        return rule.value
    return 1.0 if rule.value == 0.0 else None


def _request_metric(rule: Rule, arm: str, ctx: GateContext, rows: Sequence[Row],
                    interleaved: bool, seed: int) -> GateResult:  # fmt: skip
    rng = np.random.default_rng([seed, len(arm), len(rule.text)])
    stat = statistic_of(rule)
    own = _cells(rows, arm, rule.metric)
    level = _level(own, stat, rng)
    if not rule.relative:
        return _result(rule, level.value, (level.ci_low, level.ci_high), rule.value)
    reference = ctx.reference_of(arm)
    base_cells = _cells(rows, reference, rule.metric)
    base = _level(base_cells, stat, rng, n_resamples=200)
    if arm == reference:
        return _itself(base.value, (base.ci_low, base.ci_high))
    threshold = _threshold(rule, base.value)
    factor = _factor(rule)
    c = None
    if factor is not None and own and base_cells:
        c = _ratio(ok_trials(rows, reference), ok_trials(rows, arm), rule.metric, stat,
                   interleaved, ctx, rng)  # fmt: skip
    if c is not None and factor is not None:
        return _result(rule, c.ratio, (c.ci_low, c.ci_high), factor,
                       f"{stat} ratio to {reference} ({HOW.get(c.method, c.method)})",
                       threshold)  # fmt: skip
    return _result(rule, level.value, (level.ci_low, level.ci_high), threshold,
                   f"arm's interval against {reference}'s point estimate")  # fmt: skip


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
    interleaved: bool = True, seed: int = 0, cfg: Settings | None = None,
) -> dict[str, dict[str, GateResult]]:  # fmt: skip
    """``{ARM: {RULE: GateResult}}`` for every arm of the summary (``cfg``: the run's
    settings, for the references and prompt mode the comparisons used)."""
    ctx = summary if isinstance(summary, GateContext) else GateContext.of(summary, cfg)
    out: dict[str, dict[str, GateResult]] = {arm: {} for arm in ctx.arms}
    for text in rules:
        rule = parse_rule(text)
        for arm in ctx.arms:
            if rule.metric in METRIC_BY_NAME and rule.metric != "error_rate":
                res = _request_metric(rule, arm, ctx, rows, interleaved, seed)
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
