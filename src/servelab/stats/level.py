"""One arm's level (a median, mean or high percentile) with a confidence interval over blocks.

Owns the interval a gate on an absolute threshold uses ("decode_tps >= 70 holds" means the
interval's lower end is at least 70). Blocks are resampled with replacement, the statistic is
taken over the pooled requests of each resample, and the percentile interval on the log scale
is widened by t_{n-1}/z x sqrt(n/(n-1)) around the point estimate, as for ratios
(docs/statistics.md). Pure and seeded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps  # type: ignore[import-untyped,unused-ignore]

_QUANTILE = {"median": 0.5, "p90": 0.9, "p99": 0.99}


@dataclass(frozen=True, slots=True)
class Level:
    value: float | None
    ci_low: float | None
    ci_high: float | None
    n_blocks: int


def _stat(values: np.ndarray, stat: str) -> float:
    if stat == "mean":
        return float(np.mean(values))
    return float(np.quantile(values, _QUANTILE[stat]))


def level_interval(
    blocks: Sequence[Sequence[float]], stat: str, *, confidence: float = 0.95,
    rng: np.random.Generator, n_resamples: int = 2000,
) -> Level:  # fmt: skip
    kept = [np.asarray([v for v in b if v is not None and v > 0], dtype=float) for b in blocks]
    kept = [b for b in kept if b.size]
    if not kept:
        return Level(None, None, None, 0)
    pooled = np.concatenate(kept)
    value = _stat(pooled, stat)
    n = len(kept)
    if n < 2:
        return Level(value, None, None, n)
    reps = np.empty(n_resamples)
    for i in range(n_resamples):
        pick = rng.integers(0, n, n)
        reps[i] = math.log(_stat(np.concatenate([kept[j] for j in pick]), stat))
    alpha = 1 - confidence
    lo_q, hi_q = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
    centre = math.log(value)
    widen = float(sps.t.ppf(1 - alpha / 2, n - 1)) / float(sps.norm.ppf(1 - alpha / 2))
    widen *= math.sqrt(n / (n - 1))
    low = math.exp(centre - widen * (centre - lo_q))
    high = math.exp(centre + widen * (hi_q - centre))
    return Level(value, low, high, n)
