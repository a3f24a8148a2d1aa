"""Tests for stats.compare and compare_blocks: known answers, the resampling's exactness,
verdicts, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from servelab.stats import compare as c
from servelab.stats.compare import RatioInterval, blocks_needed, decide
from servelab.stats.paired import compare_blocks

BASE = [[1.0, 2.0, 3.0], [4.0, 5.0]]
CAND = [[2.0, 4.0, 6.0], [8.0, 10.0]]


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_known_ratios_of_pooled_medians_and_means() -> None:
    r = compare_blocks(BASE, CAND, paired=True, rng=rng())
    assert r.ratio == pytest.approx(2.0)  # medians 3 and 6
    assert r.ratio_mean == pytest.approx(2.0)  # means 3 and 6
    assert (r.n_rounds, r.paired, r.df) == (2, True, 1.0)


def test_exact_scaling_paired_gives_a_point_interval_and_a_verdict() -> None:
    """Every paired resample sees the same 1.2 ratio, so the interval collapses onto it."""
    base = [np.array([100.0, 110, 90]) * k for k in (1.0, 0.5, 1.3, 0.9)]
    cand = [b * 1.2 for b in base]
    r = compare_blocks(base, cand, paired=True, rng=rng())
    assert r.ci_low == pytest.approx(1.2) and r.ci_high == pytest.approx(1.2)
    assert (
        decide(r.interval, lower_is_better=False, min_effect=0.03, n_blocks=4).verdict == "better"
    )
    assert decide(r.interval, lower_is_better=True, min_effect=0.03, n_blocks=4).verdict == "worse"


def test_unpaired_sees_the_drift_that_pairing_removes() -> None:
    base = [np.array([100.0, 110, 90]) * k for k in (1.0, 0.5, 1.3, 0.9)]
    cand = [b * 1.2 for b in base]
    r = compare_blocks(base, cand, paired=False, rng=rng())
    assert r.ci_low is not None and r.ci_high is not None
    assert r.ci_low < 1.0 < r.ci_high


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.lists(st.floats(0.01, 1e3, allow_nan=False), min_size=1, max_size=6),
        min_size=1,
        max_size=6,
    ),
    st.integers(0, 2**32 - 1),
)
def test_weighted_median_equals_the_median_of_the_pooled_resample(
    blocks: list[list[float]], seed: int
) -> None:
    values = np.concatenate([np.asarray(b) for b in blocks])
    unit_of = np.repeat(np.arange(len(blocks)), [len(b) for b in blocks])
    order = np.argsort(values, kind="stable")
    counts = c.counts_matrix(rng(seed), len(blocks), 20)
    got = c.weighted_quantiles(values[order], unit_of[order], counts, 0.5)
    for row, med in zip(counts, got, strict=True):
        pooled = np.concatenate([np.repeat(blocks[i], k) for i, k in enumerate(row) if k])
        assert med == pytest.approx(np.median(pooled))


def test_counts_draw_n_blocks_per_resample() -> None:
    counts = c.counts_matrix(rng(), 7, 100)
    assert counts.shape == (100, 7)
    assert (counts.sum(axis=1) == 7).all()


def test_same_seed_same_result_and_different_seed_differs() -> None:
    gen = np.random.default_rng(5)
    base = [gen.lognormal(0, 0.2, 8) for _ in range(6)]
    cand = [gen.lognormal(0.05, 0.2, 8) for _ in range(6)]
    a = compare_blocks(base, cand, paired=True, rng=rng(1))
    assert a == compare_blocks(base, cand, paired=True, rng=rng(1))
    assert a.ci_low != compare_blocks(base, cand, paired=True, rng=rng(2)).ci_low


def test_higher_confidence_widens_and_fewer_blocks_widen() -> None:
    gen = np.random.default_rng(3)
    base = [gen.lognormal(0, 0.2, 8) for _ in range(8)]
    cand = [gen.lognormal(0, 0.2, 8) for _ in range(8)]

    def width(confidence: float, n: int) -> float:
        r = compare_blocks(base[:n], cand[:n], paired=True, rng=rng(), confidence=confidence)
        assert r.ci_low is not None and r.ci_high is not None
        return math.log(r.ci_high / r.ci_low)

    assert width(0.99, 8) > width(0.95, 8) > width(0.80, 8)
    assert width(0.95, 3) > width(0.95, 8)


def test_one_block_gives_ratios_without_an_interval() -> None:
    r = compare_blocks([[1.0, 2.0]], [[2.0, 4.0]], paired=True, rng=rng())
    assert r.ratio == pytest.approx(2.0) and r.ci_low is None and r.df is None
    d = decide(r.interval, lower_is_better=False, min_effect=0.03, n_blocks=1)
    assert (d.verdict, d.blocks_needed) == ("inconclusive", None)


@pytest.mark.parametrize(
    ("base", "cand", "paired"),
    [
        ([[1.0], [2.0]], [[1.0]], True),  # paired needs equal rounds
        ([[1.0], []], [[1.0], [1.0]], False),  # empty block
        ([[1.0], [0.0]], [[1.0], [1.0]], False),  # non-positive value
        ([[1.0], [float("nan")]], [[1.0], [1.0]], False),
    ],
)
def test_bad_input_is_refused(
    base: list[list[float]], cand: list[list[float]], paired: bool
) -> None:
    with pytest.raises(ValueError):
        compare_blocks(base, cand, paired=paired, rng=rng())


def interval(ratio: float, low: float, high: float) -> RatioInterval:
    return RatioInterval("median", ratio, low, high, math.log(ratio / low), math.log(high / ratio))


@pytest.mark.parametrize(
    ("iv", "lower", "verdict"),
    [
        (interval(1.10, 1.05, 1.15), False, "better"),
        (interval(1.10, 1.05, 1.15), True, "worse"),
        (interval(0.90, 0.85, 0.95), True, "better"),
        (interval(0.90, 0.85, 0.95), False, "worse"),
        (interval(1.00, 0.98, 1.02), False, "no_difference"),
        (interval(1.02, 1.01, 1.029), False, "no_difference"),  # inside the band beats "better"
        (interval(1.00, 1 / 1.03, 1.03), True, "no_difference"),  # the band's edges count
        (interval(1.00, 0.95, 1.05), False, "inconclusive"),
        (interval(1.04, 1.00, 1.08), False, "inconclusive"),  # touching 1 is not excluding it
    ],
)
def test_verdicts(iv: RatioInterval, lower: bool, verdict: str) -> None:
    assert decide(iv, lower_is_better=lower, min_effect=0.03, n_blocks=5).verdict == verdict


def test_blocks_needed_scales_with_the_square_of_the_width() -> None:
    # ratio 1, half-width log(1.06): must shrink to log(1.03), about half: 4x the blocks
    iv = interval(1.0, 1 / 1.06, 1.06)
    assert blocks_needed(iv, 0.03, 5) == math.ceil(5 * (math.log(1.06) / math.log(1.03)) ** 2)
    # a clear effect whose interval just straddles 1 needs only a few more
    iv = interval(1.10, 0.99, 1.22)
    need = blocks_needed(iv, 0.03, 6)
    assert need is not None and 6 < need < 10
    assert decide(iv, lower_is_better=False, min_effect=0.03, n_blocks=6).blocks_needed == need
