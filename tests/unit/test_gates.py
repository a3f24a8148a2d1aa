"""Gate rules: parsing, and outcomes judged on intervals rather than point estimates."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from servelab.analysis.gate_outcomes import GateContext, evaluate_gates, failed_required
from servelab.spec.gates import GatesSpec, parse_rule
from servelab.store.perplexity import PerplexityArm
from servelab.store.summary import RateCI, RateComparison


@pytest.mark.parametrize(
    ("text", "metric", "stat", "op", "relative", "value", "combine"),
    [
        ("decode_tps >= 70", "decode_tps", None, ">=", False, 70.0, "abs"),
        ("decode_tps.pooled >= 70", "decode_tps", "pooled", ">=", False, 70.0, "abs"),
        ("e2e_tps.median >= baseline * 0.95", "e2e_tps", "median", ">=", True, 0.95, "times"),
        ("ttft_s.p90 <= 300ms", "ttft_s", "p90", "<=", False, 0.3, "abs"),
        ("kv_bytes <= 512MiB", "kv_bytes", None, "<=", False, 512 * 2**20, "abs"),
        ("ppl <= baseline * 1.02", "ppl", None, "<=", True, 1.02, "times"),
        ("tool_accuracy >= baseline - 2pp", "tool_accuracy", None, ">=", True, -0.02, "plus"),
        ("false_fire_rate <= baseline", "false_fire_rate", None, "<=", True, 0.0, "plus"),
        ("error_rate <= 5%", "error_rate", None, "<=", False, 0.05, "abs"),
    ],
)
def test_rules_parse(text: str, metric: str, stat: str | None, op: str, relative: bool,
                     value: float, combine: str) -> None:  # fmt: skip
    r = parse_rule(text)
    assert (r.metric, r.stat, r.op, r.relative, r.combine) == (metric, stat, op, relative, combine)
    assert r.value == pytest.approx(value)


@pytest.mark.parametrize(
    ("rules", "fragment"),
    [
        (["decode_tps > 70"], "write METRIC"),
        (["decode_tps >= fast"], "cannot read the threshold"),
        (["speed >= 70"], "unknown metric 'speed'"),
        (["ppl <= baseline * 1.02pp"], "a factor takes no unit"),
    ],
)
def test_bad_rules_are_refused_with_the_fix(rules: list[str], fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        GatesSpec(rules=tuple(rules))


def _rows(arm: str, level: float, spread: float, n_blocks: int, seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    rows = []
    for b in range(n_blocks):
        drift = rng.normal(1.0, spread)
        for _ in range(6):
            rows.append({"arm": arm, "block": b, "phase": "trial", "outcome": "ok",
                         "decode_tps": level * drift * rng.normal(1.0, 0.02)})  # fmt: skip
    return rows


def _ppl(ppl: float, err: float, kld: dict[str, float] | None = None) -> PerplexityArm:
    return PerplexityArm(
        ppl=ppl, ppl_err=err, chunks=15, ctx=256, kld=kld, mode="kld" if kld else "save",
        argv=("llama-perplexity",), log="ppl.log", seconds=1.0, cache_type_k="f16",
        cache_type_v="f16", flash_attn="auto",
    )  # fmt: skip


def _context(**extra: Any) -> GateContext:
    return GateContext(baseline="a", arms=("a", "b"), **extra)


def test_a_noisy_arm_does_not_pass_on_its_point_estimate() -> None:
    rows = _rows("a", 100.0, 0.01, 6, 1) + _rows("b", 75.0, 0.25, 3, 2)
    gates = evaluate_gates(["decode_tps >= 75"], _context(), rows)
    steady, noisy = gates["a"]["decode_tps >= 75"], gates["b"]["decode_tps >= 75"]
    assert steady.passed and (steady.interval[0] or 0) >= 75
    assert (noisy.value or 0) > 75 and not noisy.passed  # the interval reaches below 75
    assert failed_required(gates, ["a", "b"]) == [
        f"b: decode_tps >= 75 (value {noisy.value}, threshold 75.0)"
    ]


def test_relative_gate_uses_the_ratio_interval() -> None:
    rows = _rows("a", 100.0, 0.01, 6, 3) + _rows("b", 80.0, 0.01, 6, 4)
    gates = evaluate_gates(["decode_tps >= baseline * 0.9", "decode_tps >= baseline * 0.7"],
                           _context(), rows)  # fmt: skip
    assert gates["a"]["decode_tps >= baseline * 0.9"].passed  # the baseline itself
    low = gates["b"]["decode_tps >= baseline * 0.9"]
    assert not low.passed and low.value == pytest.approx(0.8, abs=0.03)
    assert gates["b"]["decode_tps >= baseline * 0.7"].passed


def test_rate_ppl_and_kv_gates() -> None:
    ctx = _context(
        quality_rates={"a": {"tool_accuracy": RateCI(45, 50, 0.9, 0.79, 0.96)},
                       "b": {"tool_accuracy": RateCI(30, 50, 0.6, 0.46, 0.72)}},
        quality_diffs={"b": {"tool_accuracy": RateComparison(-0.3, -0.47, -0.13, 0.001,
                                                             "worse")}},
        ppl={"a": _ppl(10.0, 0.05), "b": _ppl(10.1, 0.05, {"mean": 0.004})},
        kv_bytes={"a": 90.0 * 2**20, "b": 48.0 * 2**20},
    )  # fmt: skip
    rules = ["tool_accuracy >= 0.75", "tool_accuracy >= baseline - 5pp",
             "ppl <= baseline * 1.02", "kld <= 0.01", "kv_bytes <= 64MiB"]  # fmt: skip
    gates = evaluate_gates(rules, ctx, [])
    assert gates["a"]["tool_accuracy >= 0.75"].passed
    assert not gates["b"]["tool_accuracy >= 0.75"].passed
    assert not gates["b"]["tool_accuracy >= baseline - 5pp"].passed
    assert gates["b"]["ppl <= baseline * 1.02"].passed  # 10.1 + 1.96 x 0.05 <= 10.2
    assert gates["b"]["kld <= 0.01"].passed
    assert not gates["a"]["kv_bytes <= 64MiB"].passed and gates["b"]["kv_bytes <= 64MiB"].passed
