"""Gate outcomes: does each arm meet the spec's thresholds, judged on confidence intervals?

Owns ``summary["gates"]``: for every arm and rule (spec/gates.py) whether it ``passed``, the
``value`` (point estimate), the ``threshold`` it was held to and the ``interval`` that decided
it. A ``>=`` rule holds when the interval's lower end meets the threshold, a ``<=`` rule when
its upper end does, so a noisy arm cannot pass on a lucky point estimate:

- request metrics: the arm's level over blocks (stats/level.py); relative rules on a median or
  mean use the candidate / baseline ratio interval (stats/compare.py);
- rates (quality rates, ``error_rate``): Wilson intervals; relative rules the interval of the
  difference from the baseline;
- ``ppl``: PPL +/- 1.96 x its standard error; ``kld`` and ``kv_bytes``: exact values.

The baseline passes every rule relative to itself. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from servelab.metrics import METRIC_BY_NAME
from servelab.report.rows import Row, block_of, ok_trials, positive
from servelab.spec.gates import Rule, parse_rule
from servelab.stats.compare import compare_blocks
from servelab.stats.level import level_interval

Z95 = 1.959963984540054


def _blocks(rows: Sequence[Row], arm: str, metric: str) -> dict[int, list[float]]:
    out: dict[int, list[float]] = {}
    for r in ok_trials(rows, arm):
        out.setdefault(block_of(r), []).extend(positive((r,), metric))
    return {b: v for b, v in out.items() if v}


def _result(rule: Rule, value: float | None, interval: tuple[float | None, float | None],
            threshold: float | None, note: str = "") -> dict[str, Any]:  # fmt: skip
    lo, hi = interval
    if value is None or threshold is None:
        return {"passed": False, "value": value, "threshold": threshold,
                "interval": [lo, hi], "note": note or "no data to judge"}  # fmt: skip
    edge = lo if rule.op == ">=" else hi
    if edge is None:
        return {"passed": False, "value": value, "threshold": threshold, "interval": [lo, hi],
                "note": note or "no interval (fewer than two blocks)"}  # fmt: skip
    passed = edge >= threshold if rule.op == ">=" else edge <= threshold
    return {"passed": bool(passed), "value": value, "threshold": threshold,
            "interval": [lo, hi], "note": note}  # fmt: skip


def _threshold(rule: Rule, base: float | None) -> float | None:
    if not rule.relative:
        return rule.value
    if base is None:
        return None
    return base * rule.value if rule.combine == "times" else base + rule.value


def _request_metric(rule: Rule, arm: str, baseline: str, rows: Sequence[Row], interleaved: bool,
                    seed: int) -> dict[str, Any]:  # fmt: skip
    rng = np.random.default_rng([seed, len(arm), len(rule.text)])
    blocks = _blocks(rows, arm, rule.metric)
    level = level_interval(list(blocks.values()), rule.stat, rng=rng)
    if not rule.relative:
        return _result(rule, level.value, (level.ci_low, level.ci_high), rule.value)
    base_blocks = _blocks(rows, baseline, rule.metric)
    base = level_interval(list(base_blocks.values()), rule.stat, rng=rng, n_resamples=200)
    if arm == baseline:
        return {"passed": True, "value": base.value, "threshold": base.value,
                "interval": [base.ci_low, base.ci_high], "note": "the baseline itself"}  # fmt: skip
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
        result = _result(rule, ri.ratio, (ri.ci_low, ri.ci_high), rule.value,
                         "ratio to the baseline")  # fmt: skip
        result["threshold_value"] = threshold
        return result
    return _result(rule, level.value, (level.ci_low, level.ci_high), threshold,
                   "arm's interval against the baseline's point estimate")  # fmt: skip


def _rate(rule: Rule, arm: str, baseline: str, summary: Mapping[str, Any]) -> dict[str, Any]:
    if rule.metric == "error_rate":
        arms = summary.get("arms") or {}
        r = (arms.get(arm) or {}).get("error_rate") or {}
        base = (arms.get(baseline) or {}).get("error_rate") or {}
        value, lo, hi = r.get("p"), r.get("ci_low"), r.get("ci_high")
        if not rule.relative:
            return _result(rule, value, (lo, hi), rule.value)
        threshold = _threshold(rule, base.get("p"))
        return _result(rule, value, (lo, hi), threshold,
                       "arm's Wilson interval against the baseline's rate")  # fmt: skip
    q = summary.get("quality") or {}
    rate = ((q.get("arms") or {}).get(arm) or {}).get("rates", {}).get(rule.metric) or {}
    base_rate = ((q.get("arms") or {}).get(baseline) or {}).get("rates", {}).get(rule.metric)
    if not rate.get("n"):
        return _result(rule, None, (None, None), rule.value,
                       "no request in this rate's population")  # fmt: skip
    if not rule.relative:
        return _result(rule, rate["p"], (rate["ci_low"], rate["ci_high"]), rule.value)
    if arm == baseline:
        return {
            "passed": True,
            "value": rate["p"],
            "threshold": rate["p"],
            "interval": [rate["ci_low"], rate["ci_high"]],
            "note": "the baseline itself",
        }
    comp = ((q.get("comparisons") or {}).get(arm) or {}).get(rule.metric) or {}
    if rule.combine == "plus" and comp:  # the difference from the baseline, exact interval
        result = _result(rule, comp.get("difference"),
                         (comp.get("diff_ci_low"), comp.get("diff_ci_high")), rule.value,
                         "difference from the baseline")  # fmt: skip
        result["threshold_value"] = _threshold(rule, (base_rate or {}).get("p"))
        return result
    threshold = _threshold(rule, (base_rate or {}).get("p"))
    return _result(rule, rate["p"], (rate["ci_low"], rate["ci_high"]), threshold)


def _ppl(rule: Rule, arm: str, baseline: str, summary: Mapping[str, Any]) -> dict[str, Any]:
    ppl = ((summary.get("quality") or {}).get("ppl") or {}).get("arms") or {}
    a, b = ppl.get(arm) or {}, ppl.get(baseline) or {}
    if rule.metric == "kld":
        if arm == baseline:
            return _result(rule, 0.0, (0.0, 0.0), _threshold(rule, 0.0), "the baseline itself")
        kld = a.get("kld") or {}
        value, k_err = kld.get("mean"), float(kld.get("mean_err") or 0.0)
        if value is None:
            return _result(rule, None, (None, None), None, "run `servelab quality ppl` first")
        return _result(rule, value, (max(0.0, value - Z95 * k_err), value + Z95 * k_err),
                       _threshold(rule, 0.0))  # fmt: skip
    value, err = a.get("ppl"), a.get("ppl_err") or 0.0
    if value is None:
        return _result(rule, None, (None, None), None, "run `servelab quality ppl` first")
    if rule.relative and arm == baseline:
        return {
            "passed": True,
            "value": value,
            "threshold": value,
            "interval": [value - Z95 * err, value + Z95 * err],
            "note": "the baseline itself",
        }
    kld = a.get("kld") or {}
    if rule.relative and arm != baseline and rule.combine == "times" and "ppl_ratio" in kld:
        # llama-perplexity's paired ratio over the same tokens: far tighter than two PPLs
        ratio, r_err = float(kld["ppl_ratio"]), float(kld.get("ppl_ratio_err") or 0.0)
        result = _result(rule, ratio, (ratio - Z95 * r_err, ratio + Z95 * r_err), rule.value,
                         "PPL ratio to the baseline over the same tokens")  # fmt: skip
        result["threshold_value"] = _threshold(rule, b.get("ppl"))
        return result
    interval = (value - Z95 * err, value + Z95 * err)
    return _result(rule, value, interval, _threshold(rule, b.get("ppl")))


def _kv(rule: Rule, arm: str, baseline: str, summary: Mapping[str, Any]) -> dict[str, Any]:
    arms = (summary.get("theory") or {}).get("arms") or {}

    def kv(name: str) -> float | None:
        t = arms.get(name) or {}
        if isinstance(t.get("kv_mib_reported"), int | float):
            return float(t["kv_mib_reported"]) * 2**20
        v = t.get("kv_bytes_predicted")
        return float(v) if isinstance(v, int | float) else None

    value = kv(arm)
    return _result(rule, value, (value, value), _threshold(rule, kv(baseline)))


def evaluate_gates(
    rules: Sequence[str], summary: Mapping[str, Any], rows: Sequence[Row], *,
    interleaved: bool = True, seed: int = 0,
) -> dict[str, dict[str, dict[str, Any]]]:  # fmt: skip
    """``{ARM: {RULE: {passed, value, threshold, interval, note}}}`` for every arm."""
    baseline = str(summary.get("baseline"))
    arms = list((summary.get("arms") or {}).keys())
    out: dict[str, dict[str, dict[str, Any]]] = {arm: {} for arm in arms}
    for text in rules:
        rule = parse_rule(text)
        for arm in arms:
            if rule.metric in METRIC_BY_NAME and rule.metric not in ("error_rate",):
                res = _request_metric(rule, arm, baseline, rows, interleaved, seed)
            elif rule.metric in ("ppl", "kld"):
                res = _ppl(rule, arm, baseline, summary)
            elif rule.metric == "kv_bytes":
                res = _kv(rule, arm, baseline, summary)
            else:
                res = _rate(rule, arm, baseline, summary)
            out[arm][text] = res
    return out


def failed_required(gates: Mapping[str, Mapping[str, Mapping[str, Any]]], required: Sequence[str]
                    ) -> list[str]:  # fmt: skip
    """One line per failed rule of a required arm."""
    lines = []
    for arm in required:
        for rule, res in (gates.get(arm) or {}).items():
            if not res.get("passed"):
                lines.append(f"{arm}: {rule} (value {res.get('value')}, threshold "
                             f"{res.get('threshold')})")  # fmt: skip
    return lines
