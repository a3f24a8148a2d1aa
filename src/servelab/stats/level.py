"""One arm's level (pooled rate, mean, median or high percentile) with a confidence interval
over blocks.

Owns the interval a gate on an absolute threshold uses ("decode_tps >= 70 holds" means the
interval's lower end is at least 70). Blocks are resampled with replacement, the statistic is
taken over the pooled requests of each resample, and the percentile interval on the log scale
is widened by t_{n-1}/z x sqrt(n/(n-1)) around the point estimate, as for ratios
(docs/statistics.md). Pure and seeded.

Statistics: ``pooled`` = Σ w / Σ (w / v) over the requests, where v is a request's rate and w the
tokens it counts (so w / v is its time): the rate of the whole workload, Σ tokens / Σ time.
With all weights 1 it is the harmonic mean (requests of equal length). ``mean``, ``median``,
``p90``, ``p99`` ignore the weights. Assumptions: blocks are independent; values positive;
weights positive (a missing, zero or non-finite weight counts as 1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from servelab.lazy import lazy_module

sps = lazy_module("scipy.stats")  # imported on first use: scipy.stats takes ~1 s

_QUANTILE = {"median": 0.5, "p90": 0.9, "p99": 0.99}
STATS = ("pooled", "mean", "median", "p90", "p99")


@dataclass(frozen=True, slots=True)
class Level:
    value: float | None
    ci_low: float | None
    ci_high: float | None
    n_blocks: int


def level_of(values: np.ndarray, weights: np.ndarray, stat: str) -> float:
    """One arm's statistic over its requests (``weights`` matter to ``pooled`` only)."""
    if stat == "pooled":
        return float(np.sum(weights) / np.sum(weights / values))
    if stat == "mean":
        return float(np.mean(values))
    return float(np.quantile(values, _QUANTILE[stat]))


def _kept(values: Sequence[float | None], weights: Sequence[float] | None
          ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """A block's positive finite values and their weights (invalid weights count as 1)."""
    w_all = list(weights) if weights is not None else [1.0] * len(values)
    if len(w_all) != len(values):
        raise ValueError(f"{len(values)} values but {len(w_all)} weights in a block")
    pairs = [(float(v), w) for v, w in zip(values, w_all, strict=True)
             if v is not None and 0 < v < math.inf]  # fmt: skip
    v = np.asarray([p[0] for p in pairs], dtype=float)
    w = np.asarray([p[1] if 0 < p[1] < math.inf else 1.0 for p in pairs], dtype=float)
    return v, w


def level_interval(
    blocks: Sequence[Sequence[float | None]], stat: str, *, confidence: float = 0.95,
    rng: np.random.Generator, n_resamples: int = 2000,
    weights: Sequence[Sequence[float]] | None = None,
) -> Level:  # fmt: skip
    """The arm's ``stat`` over all its requests, with an interval from resampling its blocks.
    ``weights``: per block, one weight per value (tokens the rate counts; default 1.0 each)."""
    if stat not in STATS:
        raise ValueError(f"unknown statistic {stat!r}; known: {', '.join(STATS)}")
    if weights is not None and len(weights) != len(blocks):
        raise ValueError(f"{len(blocks)} blocks but {len(weights)} weight lists")
    kept = [_kept(b, weights[i] if weights is not None else None) for i, b in enumerate(blocks)]
    kept = [(v, w) for v, w in kept if v.size]
    if not kept:
        return Level(None, None, None, 0)
    value = level_of(np.concatenate([v for v, _ in kept]), np.concatenate([w for _, w in kept]),
                     stat)  # fmt: skip
    n = len(kept)
    if n < 2:
        return Level(value, None, None, n)
    reps = np.empty(n_resamples)
    for i in range(n_resamples):
        pick = rng.integers(0, n, n)
        v = np.concatenate([kept[j][0] for j in pick])
        w = np.concatenate([kept[j][1] for j in pick])
        reps[i] = math.log(level_of(v, w, stat))
    alpha = 1 - confidence
    lo_q, hi_q = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
    centre = math.log(value)
    widen = float(sps.t.ppf(1 - alpha / 2, n - 1)) / float(sps.norm.ppf(1 - alpha / 2))
    widen *= math.sqrt(n / (n - 1))
    low = math.exp(centre - widen * (centre - lo_q))
    high = math.exp(centre + widen * (hi_q - centre))
    return Level(value, low, high, n)
