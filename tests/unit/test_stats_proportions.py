"""Tests for stats.proportions: Wilson intervals and Fisher's exact test, with known answers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats as sps

from servelab.stats.proportions import compare_rates, wilson


def test_wilson_known_answers() -> None:
    r = wilson(5, 10)
    assert (r.p, r.ci_low, r.ci_high) == (0.5, pytest.approx(0.2366, abs=1e-4),
                                          pytest.approx(0.7634, abs=1e-4))  # fmt: skip
    r = wilson(0, 10)
    assert (r.p, r.ci_low) == (0.0, 0.0)
    assert r.ci_high == pytest.approx(0.2775, abs=1e-4)
    assert wilson(10, 10).ci_high == 1.0


def test_wilson_empty_and_invalid() -> None:
    assert wilson(0, 0).p is None
    with pytest.raises(ValueError):
        wilson(3, 2)


@given(st.integers(0, 500), st.integers(1, 500), st.floats(0.5, 0.999))
def test_wilson_contains_the_estimate(k: int, n: int, confidence: float) -> None:
    k = min(k, n)
    r = wilson(k, n, confidence)
    assert r.ci_low is not None and r.ci_high is not None and r.p is not None
    assert 0.0 <= r.ci_low <= r.p <= r.ci_high <= 1.0


@pytest.mark.parametrize(
    ("kb", "nb", "kc", "nc", "verdict"),
    [
        (0, 100, 20, 100, "worse"),  # more errors in the candidate
        (20, 100, 0, 100, "better"),
        (0, 100, 0, 100, "no_difference"),
        (0, 5, 1, 5, "inconclusive"),
        (0, 0, 1, 5, "inconclusive"),
    ],
)
def test_compare_rates_verdicts(kb: int, nb: int, kc: int, nc: int, verdict: str) -> None:
    assert compare_rates(kb, nb, kc, nc).verdict == verdict


def test_direction_for_a_rate_where_higher_is_better() -> None:
    assert compare_rates(50, 100, 80, 100, lower_is_better=False).verdict == "better"


def test_compare_rates_uses_fishers_exact_test() -> None:
    r = compare_rates(3, 40, 9, 40)
    assert r.p_value == pytest.approx(sps.fisher_exact([[9, 31], [3, 37]]).pvalue)
    assert r.difference == pytest.approx(6 / 40)
    assert r.diff_ci_low is not None and r.diff_ci_high is not None
    assert r.diff_ci_low < r.difference < r.diff_ci_high
    assert r.verdict == "inconclusive"  # p about 0.12
