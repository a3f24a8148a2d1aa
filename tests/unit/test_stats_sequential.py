"""Tests for stats.sequential: published boundaries, the spent alpha, and the stopping rule."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from servelab.stats.sequential import plan_looks, spent, stop_rule


def test_one_look_is_the_plain_level() -> None:
    plan = plan_looks(5, None)
    assert plan.looks == (5,)
    assert plan.boundaries_z[0] == pytest.approx(1.959964, abs=1e-5)
    assert plan.confidence_at(5) == pytest.approx(0.95)


def test_pocock_spending_matches_published_boundaries() -> None:
    # Lan-DeMets Pocock-type spending, 5 equally spaced looks, two-sided alpha 0.05
    # (as tabulated by gsDesign's sfLDPocock)
    plan = plan_looks(1, 5, spending="pocock")
    assert plan.boundaries_z == pytest.approx((2.438, 2.427, 2.410, 2.397, 2.386), abs=3e-3)


def test_obrien_fleming_first_boundary_is_the_spent_alpha() -> None:
    plan = plan_looks(3, 10)
    first = sps.norm.isf(spent(0.3, 0.05, "obrien_fleming") / 2)
    assert plan.boundaries_z[0] == pytest.approx(first)
    assert list(plan.boundaries_z) == sorted(plan.boundaries_z, reverse=True)
    assert 0.95 < plan.confidences[-1] < 0.97  # nearly the full level is left for the end


@pytest.mark.parametrize("spending", ["obrien_fleming", "pocock"])
def test_boundaries_spend_exactly_alpha_over_all_looks(spending: str) -> None:
    """Brownian motion observed after every round crosses some boundary 5 % of the time."""
    plan = plan_looks(3, 10, spending=spending)  # type: ignore[arg-type]
    steps = np.random.default_rng(7).normal(size=(200_000, 10)).cumsum(axis=1)
    looks = np.array(plan.looks)
    z = steps[:, looks - 1] / np.sqrt(looks)
    crossed = (np.abs(z) >= np.array(plan.boundaries_z)).any(axis=1).mean()
    assert crossed == pytest.approx(0.05, abs=0.003)
    # while looking every round at the plain 95 % level would spend far more
    assert (np.abs(z) >= 1.96).any(axis=1).mean() > 0.12


@pytest.mark.parametrize("spending", ["obrien_fleming", "pocock"])
def test_spending_functions(spending: str) -> None:
    values = [spent(t, 0.05, spending) for t in (0.0, 0.25, 0.5, 0.75, 1.0)]  # type: ignore[arg-type]
    assert values[0] == 0.0 and values[-1] == pytest.approx(0.05)
    assert values == sorted(values)


def test_unknown_spending_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown spending"):
        spent(0.5, 0.05, "haybittle")  # type: ignore[arg-type]


def test_confidence_before_and_after_the_plan() -> None:
    plan = plan_looks(3, 6)
    assert plan.confidence_at(1) == plan.confidences[0]
    assert plan.confidence_at(4) == plan.confidences[1]
    assert plan.confidence_at(9) == plan.confidences[-1]


PLAN = plan_looks(3, 6)


@pytest.mark.parametrize(
    ("verdicts", "widths", "n", "target", "stop", "decided", "reason"),
    [
        (["better", "no_difference"], [0.1, 0.02], 2, None, False, True, "at least 3"),
        (["better", "no_difference"], [0.1, 0.02], 3, None, True, True, "decided"),
        (["better", "inconclusive"], [0.1, 0.2], 4, None, False, False, "1 comparison"),
        (["better", "inconclusive"], [0.04, 0.05], 4, 0.05, True, False, "narrower"),
        (["better", "inconclusive"], [0.04, None], 4, 0.05, False, False, "inconclusive"),
        (["inconclusive"], [0.2], 6, None, True, False, "max_blocks (6)"),
        ([], [], 4, 0.05, False, False, "0 comparison"),
    ],
)
def test_stop_rule(
    verdicts: list[str], widths: list[float | None], n: int, target: float | None,
    stop: bool, decided: bool, reason: str,
) -> None:  # fmt: skip
    rule = stop_rule(verdicts, widths, n_rounds=n, plan=PLAN, target_ci_width=target)
    assert (rule.stop, rule.decided) == (stop, decided)
    assert reason in rule.reason
