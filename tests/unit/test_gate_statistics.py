"""Gates and promotion judge on the statistics the verdicts decide on: pooled rates, the
metric's default decision statistic, and the decision's own paired ratio."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from servelab.analysis import analyze
from servelab.analysis.gate_outcomes import GateContext, evaluate_gates, statistic_of
from servelab.analysis.settings import settings
from servelab.metrics import default_statistics
from servelab.runner.promote import regressions_of
from servelab.spec.gates import GatesSpec, parse_rule
from servelab.stats.level import level_interval, level_of
from servelab.stats.paired import arm_statistic


def _rng() -> np.random.Generator:
    return np.random.default_rng(7)


# ------------------------------------------------------------------------------ levels


def test_pooled_level_is_tokens_over_time() -> None:
    # 100 tokens in 1 s and 100 tokens in 3 s: 200 tokens in 4 s
    blocks, weights = [[100.0], [100.0 / 3]], [[100.0], [100.0]]
    pooled = level_interval(blocks, "pooled", weights=weights, rng=_rng())
    assert pooled.value == pytest.approx(50.0)
    assert level_interval(blocks, "mean", weights=weights, rng=_rng()).value == pytest.approx(
        200.0 / 3
    )
    assert pooled.n_blocks == 2 and pooled.ci_low is not None and pooled.ci_high is not None
    assert pooled.ci_low <= 50.0 <= pooled.ci_high


def test_pooled_weighs_requests_by_the_tokens_they_count() -> None:
    # 300 tokens in 1 s and 100 tokens in 3 s: 400 tokens in 4 s
    values = [[300.0, 100.0 / 3]]
    assert level_interval(values, "pooled", weights=[[300.0, 100.0]], rng=_rng()).value == (
        pytest.approx(100.0)
    )
    # without weights every request counts alike: the harmonic mean, 2 / (1/300 + 3/100)
    assert level_interval(values, "pooled", rng=_rng()).value == pytest.approx(60.0)
    # a missing or invalid weight counts as 1
    assert level_interval(values, "pooled", weights=[[0.0, float("nan")]], rng=_rng()).value == (
        pytest.approx(60.0)
    )
    assert level_interval(values, "mean", rng=_rng()).value == pytest.approx(500.0 / 3)


@pytest.mark.parametrize("stat", ["pooled", "mean", "median", "p90", "p99"])
def test_a_level_is_the_statistic_the_decision_takes(stat: str) -> None:
    gen = np.random.default_rng(3)
    values, weights = gen.lognormal(3.0, 0.5, 37), gen.integers(1, 400, 37).astype(float)
    assert level_of(values, weights, stat) == pytest.approx(
        arm_statistic(list(values), list(weights), stat), rel=1e-12
    )


def test_level_refuses_an_unknown_statistic_and_mismatched_weights() -> None:
    with pytest.raises(ValueError, match="unknown statistic"):
        level_interval([[1.0]], "p50", rng=_rng())
    with pytest.raises(ValueError, match="weights"):
        level_interval([[1.0, 2.0]], "pooled", weights=[[1.0]], rng=_rng())


# ------------------------------------------------------------------------------ grammar


@pytest.mark.parametrize("metric", ["decode_tps", "e2e_tps", "ttft_s", "e2e_s", "tpot_s"])
def test_a_rule_without_stat_uses_the_default_decision_statistic(metric: str) -> None:
    rule = parse_rule(f"{metric} >= 1")
    assert rule.stat is None
    assert statistic_of(rule) == default_statistics(metric)[0]
    assert statistic_of(rule) == ("pooled" if metric.endswith("_tps") else "mean")
    assert statistic_of(parse_rule(f"{metric}.median >= 1")) == "median"


@pytest.mark.parametrize("text", ["ttft_s.pooled <= 300ms", "e2e_s.pooled <= 2s"])
def test_pooled_on_a_latency_is_refused_in_one_line(text: str) -> None:
    with pytest.raises(ValueError, match="is a latency") as caught:
        parse_rule(text)
    message = str(caught.value)
    assert "\n" not in message and "use .mean, .median, .p90 or .p99" in message
    with pytest.raises(ValidationError, match="pooled"):
        GatesSpec(rules=(text,))
    assert GatesSpec(rules=("decode_tps.pooled >= 70", "e2e_tps.pooled >= baseline * 0.9"))


# ------------------------------------------------------------------------------ outcomes


def _row(arm: str, block: int, prompt: str, tps: float, n_out: int, seq: int) -> dict[str, Any]:
    return {"arm": arm, "block": block, "prompt_id": prompt, "phase": "trial", "outcome": "ok",
            "seq": seq, "concurrency": 1, "decode_tps": tps, "n_out": n_out,
            "ttft_s": 0.2, "e2e_s": 0.2 + (n_out - 1) / tps}  # fmt: skip


def _split_rows(slow: float = 0.45, rounds: int = 6, seed: int = 0) -> list[dict[str, Any]]:
    """Ten prompts per round; in arm ``b`` the two long ones (400 decoded tokens, the others
    100) run at ``slow`` times the speed, the rest unchanged. Per round: baseline 1600 tokens
    in 32 s (50 tok/s), b 1600 tokens in 16 + 800 / (50 x 0.45) s: pooled ratio 0.621."""
    gen = np.random.default_rng(seed)
    out, seq = [], 0
    for block in range(rounds):
        drift = gen.normal(1.0, 0.02)
        for arm in ("a", "b"):
            for i in range(10):
                long = i >= 8
                factor = slow if arm == "b" and long else 1.0
                tps = 50.0 * drift * factor * gen.normal(1.0, 0.005)
                out.append(_row(arm, block, f"p{i}", tps, 401 if long else 101, seq))
                seq += 1
    return out


def _manifest(**spec: Any) -> dict[str, Any]:
    return {"schema_version": 1, "kind": "experiment", "run_id": "g", "baseline": "a",
            "arms": {"a": {}, "b": {}}, "seed": 3,
            "spec": {"blocks": 6, "seed": 3, "baseline": "a", **spec}}  # fmt: skip


def test_gates_on_request_metrics_use_the_default_statistic() -> None:
    # each round: 100 tokens at 100 tok/s (1 s) and 100 tokens at 33.3 tok/s (3 s)
    rows = [_row("a", b, f"p{i}", tps, 101, 2 * b + i)
            for b in range(4) for i, tps in enumerate((100.0, 100.0 / 3))]  # fmt: skip
    rules = ["decode_tps >= 45", "decode_tps.mean >= 45", "decode_tps.median >= 45",
             "decode_tps.pooled >= 45"]  # fmt: skip
    gates = evaluate_gates(rules, GateContext(baseline="a", arms=("a",)), rows)["a"]
    assert gates["decode_tps >= 45"].value == pytest.approx(50.0)
    assert gates["decode_tps.pooled >= 45"].value == pytest.approx(50.0)
    assert gates["decode_tps.mean >= 45"].value == pytest.approx(200.0 / 3)
    assert gates["decode_tps.median >= 45"].value == pytest.approx(200.0 / 3)
    latency = evaluate_gates(["e2e_s <= 10s"], GateContext(baseline="a", arms=("a",)), rows)
    assert latency["a"]["e2e_s <= 10s"].value == pytest.approx(0.2 + (1.0 + 3.0) / 2)


def test_a_relative_gate_is_the_decisions_own_pooled_comparison() -> None:
    rows = _split_rows()
    manifest = _manifest(metrics={"decode_tps": ["pooled", "median"]})
    summary = analyze(manifest, rows)
    decision = {c.statistic: c for c in summary.comparisons if c.metric == "decode_tps"}
    rules = ["decode_tps >= baseline * 0.95", "decode_tps.median >= baseline * 0.95"]
    gates = evaluate_gates(rules, summary, rows, interleaved=True, seed=3,
                           cfg=settings(manifest, rows))["b"]  # fmt: skip
    pooled, median = gates[rules[0]], gates[rules[1]]
    assert pooled.value == pytest.approx(decision["pooled"].ratio, rel=1e-12)
    assert pooled.value == pytest.approx(1600 / (16 + 800 / 22.5) / 50, rel=0.02)
    assert not pooled.passed and decision["pooled"].verdict == "worse"
    assert "pooled ratio to a (paired" in pooled.note
    assert pooled.interval[1] == pytest.approx(decision["pooled"].ci_high, rel=0.05)
    # the median request is unchanged: the median gate passes, as the median verdict would
    assert median.value == pytest.approx(decision["median"].ratio, rel=1e-12)
    assert median.value == pytest.approx(1.0, abs=0.02) and median.passed
    assert evaluate_gates(rules, summary, rows)["a"][rules[0]].passed  # the baseline itself


def test_baseline_alone_is_a_ratio_of_one_and_unpaired_runs_compare_blocks() -> None:
    rows = _split_rows(slow=1.0)
    ctx = GateContext(baseline="a", arms=("a", "b"))
    paired = evaluate_gates(["decode_tps >= baseline"], ctx, rows)["b"]["decode_tps >= baseline"]
    assert paired.threshold == 1.0 and paired.value == pytest.approx(1.0, abs=0.01)
    unpaired = evaluate_gates(["decode_tps >= baseline * 0.9"], ctx, rows,
                              interleaved=False)["b"]["decode_tps >= baseline * 0.9"]  # fmt: skip
    assert "unpaired blocks" in unpaired.note and unpaired.passed


def test_baseline_means_the_arms_own_reference() -> None:
    rows = _split_rows()  # b is 0.62x of a
    rows += [{**r, "arm": "r"} for r in rows if r["arm"] == "b"]  # r: b's own reference
    rule = "decode_tps >= baseline * 0.95"
    ctx = GateContext(baseline="a", arms=("a", "b", "r"), references={"b": "r"})
    gates = evaluate_gates([rule], ctx, rows)
    assert gates["b"][rule].passed and gates["b"][rule].value == pytest.approx(1.0)
    assert "ratio to r" in gates["b"][rule].note
    assert not gates["r"][rule].passed  # r has no reference of its own: the baseline


def test_the_context_reads_references_from_the_comparisons() -> None:
    rows = _split_rows()
    summary = analyze(_manifest(), rows)
    ctx = GateContext.of(summary)
    assert ctx.reference_of("b") == "a" and ctx.prompts == "fixed"
    assert ctx.min_effect == summary.comparisons[0].min_effect


def test_verify_counts_a_worse_pooled_rate_as_a_regression() -> None:
    rows = _split_rows()
    summary = analyze(_manifest(metrics={"decode_tps": ["median", "pooled"]}), rows)
    verdicts = {c.statistic: c.verdict for c in summary.comparisons if c.metric == "decode_tps"}
    assert verdicts["pooled"] == "worse" and verdicts["median"] != "worse"
    found = regressions_of(summary)
    assert len(found) == 1 and "pooled" in found[0]
