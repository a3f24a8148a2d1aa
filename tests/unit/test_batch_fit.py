"""The batch cost fit of a concurrency sweep: known answers for the dense and the union model,
the analysis step from sweep rows and architectures, and the report's tables."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from servelab.analysis.batch_scaling import (
    BY_DECODE,
    BY_ITL,
    UNKNOWN_ARCH,
    arm_batch_fit,
    batch_fits,
    level_step_s,
)
from servelab.report.batch_fit_view import batch_fit_blocks
from servelab.report.blocks import Para, Table
from servelab.stats.batch_fit import BatchFit, fit_batch_cost
from servelab.store.summary import SweepRow, to_jsonable
from servelab.theory.arch import Architecture
from servelab.theory.arch_yaml import architecture_from_yaml
from servelab.theory.roofline import distinct_experts

E, K = 128, 8


def dense_levels(a: float, b: float, batches: tuple[int, ...]) -> list[tuple[int, float]]:
    """(B, step seconds) for a step of a + b B seconds."""
    return [(n, a + b * n) for n in batches]


def union_levels(a: float, b: float, batches: tuple[int, ...]) -> list[tuple[int, float]]:
    return [(n, a + b * distinct_experts(E, K, n)) for n in batches]


def test_dense_fit_recovers_a_and_b_exactly() -> None:
    fit = fit_batch_cost(dense_levels(0.010, 0.002, (1, 2, 4, 8)))
    assert fit is not None and fit.model == "linear" and fit.n_expert == 0
    assert fit.fixed_s == pytest.approx(0.010) and fit.per_unit_s == pytest.approx(0.002)
    assert fit.r2 == pytest.approx(1.0) and fit.verdict == "linear"
    assert fit.saturation_tps == pytest.approx(500.0)  # B / (a + b B) -> 1 / b
    for p in fit.points:
        assert p.cost_units == p.concurrency
        assert p.step_s == pytest.approx(0.010 + 0.002 * p.concurrency)
        assert p.fitted_aggregate_tps == pytest.approx(p.aggregate_tps)
    assert [p.concurrency for p in fit.points] == [1, 2, 4, 8]
    assert fit.points[-1].aggregate_tps == pytest.approx(8 / 0.026)


def test_dense_fit_known_least_squares_answer() -> None:
    # steps 12, 15, 18 ms at B = 1, 2, 4: b = Sxy / Sxx = 0.009 / (14/3), a = 0.015 - b 7/3,
    # R^2 = 1 - 6.4286e-7 / 1.8e-5 = 27/28
    levels = [(1, 0.012), (2, 0.015), (4, 0.018)]
    fit = fit_batch_cost(levels)
    assert fit is not None
    assert fit.per_unit_s == pytest.approx(0.027 / 14)
    assert fit.fixed_s == pytest.approx(0.0105)
    assert fit.r2 == pytest.approx(27 / 28)
    first = fit.points[0]
    assert first.fitted_aggregate_tps == pytest.approx(1 / (0.0105 + 0.027 / 14))


def test_union_fit_recovers_a_and_b_and_prefers_union() -> None:
    fit = fit_batch_cost(union_levels(0.010, 0.0005, (1, 2, 4, 8, 16, 32)), n_expert=E, n_used=K)
    assert fit is not None and fit.model == "union"
    assert (fit.n_expert, fit.n_expert_used) == (E, K)
    assert fit.fixed_s == pytest.approx(0.010) and fit.per_unit_s == pytest.approx(0.0005)
    assert fit.r2 == pytest.approx(1.0) and fit.linear_r2 < 0.99
    assert fit.verdict == "union" and fit.saturation_tps is None
    assert fit.points[0].cost_units == pytest.approx(8.0)  # N(1) = k
    assert fit.points[1].cost_units == pytest.approx(15.5)


def test_published_tpot_gives_the_fit_docs_theory_quotes() -> None:
    # docs/theory.md: qwen3.6-vllm-2x3090, TPOT 7.63 / 12.13 / 15.17 ms at C = 1 / 4 / 8,
    # E = 256, k = 8: union 6.81 ms + 0.151 ms x N(B) (R^2 0.974), linear R^2 0.963.
    levels = [(1, 7.63e-3), (4, 12.13e-3), (8, 15.17e-3)]
    fit = fit_batch_cost(levels, n_expert=256, n_used=8)
    assert fit is not None and fit.model == "union"
    assert fit.fixed_s * 1e3 == pytest.approx(6.81, abs=0.01)
    assert fit.per_unit_s * 1e3 == pytest.approx(0.151, abs=0.001)
    assert fit.r2 == pytest.approx(0.974, abs=0.001)
    assert fit.linear_r2 == pytest.approx(0.963, abs=0.001)
    assert fit.verdict == "indistinguishable"
    assert fit.points[2].aggregate_tps == pytest.approx(8e3 / 15.17)


def test_union_points_that_grow_linearly_favour_the_linear_model() -> None:
    fit = fit_batch_cost(dense_levels(0.010, 0.002, (1, 2, 4, 8, 16, 32)), n_expert=E, n_used=K)
    assert fit is not None and fit.model == "union" and fit.verdict == "linear"
    assert fit.linear_r2 == pytest.approx(1.0) and fit.r2 < fit.linear_r2


def test_small_batches_cannot_tell_union_from_linear() -> None:
    # N(B) is nearly linear while B << E / k: the verdict says to measure larger batches.
    fit = fit_batch_cost(union_levels(0.010, 0.0005, (1, 2, 3)), n_expert=E, n_used=K)
    assert fit is not None and fit.verdict == "indistinguishable"
    assert "larger batches" in fit.explanation


def test_fewer_than_three_usable_levels_give_no_fit() -> None:
    assert fit_batch_cost([(1, 0.02), (2, 0.04)]) is None
    assert fit_batch_cost([(1, 0.02), (2, 0.04), (4, 0.0)]) is None  # a zero step is unusable
    assert fit_batch_cost([(1, 0.02), (2, 0.04), (4, float("nan"))]) is None
    assert fit_batch_cost([(1, 0.02), (1, 0.021), (2, 0.04)]) is None  # two distinct levels


@given(
    a=st.floats(1e-3, 0.1), b=st.floats(1e-5, 1e-2),
    batches=st.sets(st.integers(1, 64), min_size=3, max_size=6),
)  # fmt: skip
def test_exact_dense_points_are_fitted_exactly(a: float, b: float, batches: set[int]) -> None:
    fit = fit_batch_cost(dense_levels(a, b, tuple(sorted(batches))))
    assert fit is not None
    assert fit.fixed_s == pytest.approx(a, rel=1e-6, abs=1e-9)
    assert fit.per_unit_s == pytest.approx(b, rel=1e-6, abs=1e-9)
    for p in fit.points:
        assert p.fitted_aggregate_tps == pytest.approx(p.aggregate_tps, rel=1e-6)


# --- from the summary's sweep rows --------------------------------------------------------------


def moe_arch() -> Architecture:
    doc = {
        "layers": 2, "embedding": 64, "pattern": ["none"],
        "attention": {"heads": 1, "kv_heads": 1, "head_dim": 64},
        "moe": {"experts": E, "active": K, "expert_ffn": 64},
        "weights": {"non_expert_bytes": 10**9, "expert_bytes": 10**7, "output_head_bytes": 10**8},
    }  # fmt: skip
    return architecture_from_yaml(doc, name="moe")


def dense_arch() -> Architecture:
    doc = {"layers": 2, "embedding": 64, "attention": {"heads": 1, "kv_heads": 1, "head_dim": 64}}
    return architecture_from_yaml(doc, name="dense")


def sweep_rows(levels: list[tuple[int, float]]) -> tuple[SweepRow, ...]:
    """Sweep rows whose per-stream decode rate is 1 / the level's step."""
    return tuple(
        SweepRow(concurrency=c, aggregate_tps=None, per_stream_tps=1.0 / t, ttft_s=0.1,
                 efficiency=None, efficiency_reference=1, n_blocks=2)
        for c, t in levels
    )  # fmt: skip


def request(arm: str, concurrency: int, gaps: list[float]) -> dict[str, object]:
    return {"arm": arm, "phase": "trial", "outcome": "ok", "concurrency": concurrency,
            "block": 0, "itl_s": gaps}  # fmt: skip


def test_each_arm_gets_the_model_its_architecture_says() -> None:
    sweep = {
        "moe": sweep_rows(union_levels(0.02, 0.001, (1, 2, 4, 8, 16, 32))),
        "dense": sweep_rows(dense_levels(0.01, 0.003, (1, 2, 4))),
        "short": sweep_rows(dense_levels(0.01, 0.003, (1, 2))),
    }
    fits = batch_fits(sweep, {"moe": moe_arch(), "dense": dense_arch(), "short": dense_arch()})
    assert list(fits) == ["moe", "dense"]  # two levels: no fit
    assert fits["moe"].model == "union" and fits["moe"].per_unit_s == pytest.approx(0.001)
    assert fits["dense"].model == "linear" and fits["dense"].fixed_s == pytest.approx(0.01)


def test_an_unknown_architecture_is_fitted_as_dense_and_says_so() -> None:
    fit = arm_batch_fit(sweep_rows(dense_levels(0.01, 0.003, (1, 2, 4))), None)
    assert fit is not None and fit.model == "linear"
    assert fit.explanation.startswith(UNKNOWN_ARCH)


def test_the_step_is_the_median_inter_token_gap_when_rows_carry_gaps() -> None:
    # The sweep's decode rates count prefill stalls (steps 30 % longer); the gaps do not: a
    # stall is one long gap among many, which the median ignores.
    steps = dense_levels(0.01, 0.003, (1, 2, 4))
    stalled = sweep_rows([(c, t * 1.3) for c, t in steps])
    reqs = [request("d", c, [t] * 20 + [0.5]) for c, t in steps for _ in range(3)]
    reqs.append({**request("d", 1, [9.0] * 5), "outcome": "error"})  # failures never count
    reqs.append(request("other", 1, [9.0] * 5))  # nor other arms' requests
    fits = batch_fits({"d": stalled}, {"d": dense_arch()}, reqs)
    fit = fits["d"]
    assert fit.step_measure == BY_ITL
    assert fit.fixed_s == pytest.approx(0.01) and fit.per_unit_s == pytest.approx(0.003)
    assert level_step_s(reqs[:3], 1) == pytest.approx(0.013)
    without = batch_fits({"d": stalled}, {"d": dense_arch()})["d"]
    assert without.step_measure == BY_DECODE
    assert without.per_unit_s == pytest.approx(0.003 * 1.3)


def test_one_level_without_gaps_makes_every_level_use_the_decode_rate() -> None:
    steps = dense_levels(0.01, 0.003, (1, 2, 4))
    reqs = [request("d", c, [t] * 5) for c, t in steps[:2]]  # none at concurrency 4
    fit = arm_batch_fit(sweep_rows(steps), dense_arch(), reqs)
    assert fit is not None and fit.step_measure == BY_DECODE


def test_a_level_without_a_per_stream_rate_is_left_out() -> None:
    levels = sweep_rows(dense_levels(0.01, 0.003, (1, 2, 4)))
    missing = SweepRow(concurrency=8, aggregate_tps=None, per_stream_tps=None, ttft_s=None,
                       efficiency=None, efficiency_reference=1, n_blocks=0)  # fmt: skip
    fit = arm_batch_fit((*levels, missing), dense_arch())
    assert fit is not None and [p.concurrency for p in fit.points] == [1, 2, 4]


def test_the_fit_round_trips_through_json() -> None:
    fit = fit_batch_cost(union_levels(0.02, 0.001, (1, 2, 4, 8)), n_expert=E, n_used=K)
    assert fit is not None
    data = json.loads(json.dumps(to_jsonable(fit)))
    assert data["model"] == "union" and data["points"][0]["concurrency"] == 1
    assert set(data) >= {"fixed_s", "per_unit_s", "r2", "linear_r2", "verdict", "points"}


# --- in the report ----------------------------------------------------------------------------


def test_report_blocks_show_the_fit_beside_measurement() -> None:
    fits: dict[str, BatchFit] = batch_fits(
        {"moe": sweep_rows(union_levels(0.02, 0.001, (1, 2, 4, 8, 16, 32))),
         "dense": sweep_rows(dense_levels(0.01, 0.003, (1, 2, 4)))},
        {"moe": moe_arch(), "dense": dense_arch()},
    )  # fmt: skip
    blocks = batch_fit_blocks(fits)
    assert isinstance(blocks[0], Para) and "a + b x(B)" in blocks[0].text
    table, points = blocks[1], blocks[2]
    assert isinstance(table, Table) and isinstance(points, Table)
    assert table.rows[0][:4] == ("moe", "union (E=128, k=8)", "20.00 ms", "1.000 ms / expert")
    assert table.rows[0][4] == "1.000" and table.rows[0][6] == "union"
    assert table.rows[1][1] == "linear (dense)" and table.rows[1][7] == "333.3"
    assert len(points.rows) == 6 + 3
    assert points.rows[0][:3] == ("moe", "1", "8.0") and points.rows[0][-1] == "+0.0 %"
    assert batch_fit_blocks(None) == () and batch_fit_blocks({}) == ()
