"""Simulation evidence for the latency statistics' intervals (docs/statistics.md "Tail
quantiles"): A/A runs of 6 rounds x 6 requests on the model of test_stats_simulation.py (drift
shared by a round, sd 0.15; each block's own drift, sd 0.03; one block in ten 2x slow; request
noise sd 0.15) plus each engine start's own speed (sd 0.12, a start per block). 1000 seeds per
statistic, 300 bootstrap resamples (the interval reads the bootstrap's 10th and 90th
percentiles, which 300 resamples estimate well). False = better or worse on A/A data.

A tail quantile is compared round by round (stats/paired.py ``_per_unit``): the quantile of the
pooled requests, bootstrapped over rounds, gave 6.3 % (p90) and 8.4 % (p99) false verdicts
here, so the bound this test keeps is one that method fails.
"""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from servelab.stats.paired import compare_blocks, decide_paired

SEEDS = 1000
ROUNDS, PER_BLOCK = 6, 6


def experiment(
    rng: np.random.Generator, effect: float = 1.0
) -> tuple[list[NDArray[np.float64]], list[NDArray[np.float64]]]:
    """e2e seconds per block of a baseline and a candidate ``effect`` times as long."""
    shared = rng.normal(0.0, 0.15, ROUNDS)
    arms = []
    for factor in (1.0, effect):
        own = rng.normal(0.0, 0.03, ROUNDS) + np.log(2) * (rng.random(ROUNDS) < 0.1)
        start = rng.normal(0.0, 0.12, ROUNDS)
        noise = rng.normal(0.0, 0.15, (ROUNDS, PER_BLOCK))
        arms.append(list(2.0 * factor * np.exp((shared + own + start)[:, None] + noise)))
    return arms[0], arms[1]


def verdict(seed: int, statistic: str, paired: bool, effect: float = 1.0) -> str:
    rng = np.random.default_rng(seed)
    base, cand = experiment(rng, effect)
    r = compare_blocks(base, cand, paired=paired, rng=rng, n_resamples=300,
                       statistic=statistic)  # type: ignore[arg-type]  # fmt: skip
    return decide_paired(r, lower_is_better=True, min_effect=0.03).verdict


@pytest.mark.parametrize(
    ("statistic", "paired"),
    [("p90", True), ("mean", True), ("p90", False), ("p99", True)],
    ids=["p90-paired", "mean-paired", "p90-unpaired", "p99-paired"],
)
def test_a_a_false_verdicts_at_most_5_percent(statistic: str, paired: bool) -> None:
    verdicts = [verdict(seed, statistic, paired) for seed in range(SEEDS)]
    false = sum(v in ("better", "worse") for v in verdicts) / SEEDS
    assert false <= 0.05, (statistic, paired, false)


def test_a_slower_tail_is_found_in_the_right_direction() -> None:
    """On this noisy model 6 rounds find a 1.5x slower p90 in 60 % of runs (a 1.3x in 35 %):
    the price of per-start speed levels and slow blocks, never a wrong direction."""
    verdicts = [verdict(50_000 + seed, "p90", True, effect=1.5) for seed in range(200)]
    assert verdicts.count("better") == 0
    assert verdicts.count("worse") / 200 >= 0.5
