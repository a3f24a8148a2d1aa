"""Tests for summarize(): known answers, and agreement with numpy and the statistics module."""

from __future__ import annotations

import dataclasses
import math
import statistics

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from servelab.stats.summary import Summary, summarize

EMPTY = Summary(0, None, None, None, None, None, None, None)


def test_known_answers_one_to_ten() -> None:
    s = summarize([float(v) for v in range(10, 0, -1)])  # order must not matter
    assert s.n == 10
    assert s.median == 5.5
    assert s.mean == 5.5
    # linear interpolation: position 0.9 * 9 = 8.1 -> 9 + 0.1, and 0.99 * 9 = 8.91 -> 9.91
    assert s.p90 == pytest.approx(9.1)
    assert s.p99 == pytest.approx(9.91)
    assert s.std == pytest.approx(math.sqrt(55 / 6))  # sample variance: 82.5 / 9
    assert (s.min, s.max) == (1.0, 10.0)


def test_known_answers_small() -> None:
    s = summarize([2, 4, 4, 4, 5, 5, 7, 9])
    assert s.median == 4.5
    assert s.mean == 5.0
    assert s.std == pytest.approx(math.sqrt(32 / 7))
    assert s.p90 == pytest.approx(7.6)  # position 6.3 -> 7 + 0.3 * 2


def test_one_value_has_no_std() -> None:
    s = summarize([0.25])
    assert s == Summary(1, 0.25, 0.25, 0.25, 0.25, None, 0.25, 0.25)


@pytest.mark.parametrize(
    "values", [[], [None], [float("nan")], [None, float("nan"), float("inf"), -float("inf")]]
)
def test_nothing_finite_gives_n_zero_and_nones(values: list[float | None]) -> None:
    s = summarize(values)
    assert s == EMPTY
    assert s.as_dict() == {
        "n": 0,
        "median": None,
        "mean": None,
        "p90": None,
        "p99": None,
        "std": None,
        "min": None,
        "max": None,
    }


def test_none_and_nan_are_dropped() -> None:
    assert summarize([None, 1.0, float("nan"), 3.0, None]) == summarize([1.0, 3.0])
    assert summarize([None, 1.0, float("nan"), 3.0]).n == 2


def test_accepts_a_generator_and_ints() -> None:
    s = summarize(v for v in (1, 2, 3))
    assert (s.n, s.median, s.std) == (3, 2.0, 1.0)
    assert all(type(v) in (int, float) for v in s.as_dict().values())


def test_summary_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        summarize([1.0]).n = 2  # type: ignore[misc]


finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@settings(deadline=None)
@given(
    values=st.lists(finite, min_size=1, max_size=60),
    noise=st.lists(st.sampled_from([None, float("nan")]), max_size=10),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_agrees_with_numpy_and_statistics(
    values: list[float], noise: list[float | None], seed: int
) -> None:
    mixed: list[float | None] = [*values, *noise]
    np.random.default_rng(seed).shuffle(mixed)  # type: ignore[arg-type]
    s = summarize(mixed)
    tol = {"rel": 1e-9, "abs": 1e-6}
    assert s.n == len(values)
    assert s.median == pytest.approx(statistics.median(values), **tol)
    assert s.mean == pytest.approx(statistics.fmean(values), **tol)
    assert s.p90 == pytest.approx(float(np.percentile(values, 90)), **tol)
    assert s.p99 == pytest.approx(float(np.percentile(values, 99)), **tol)
    assert (s.min, s.max) == (min(values), max(values))
    if len(values) > 1:
        assert s.std == pytest.approx(statistics.stdev(values), rel=1e-6, abs=1e-6)
    else:
        assert s.std is None
    assert s.min <= s.median <= s.p90 <= s.p99 <= s.max  # type: ignore[operator]
