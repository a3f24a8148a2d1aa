"""The interval of a ratio from its bootstrap resamples, and the verdict it gives.

Owns the parts of a two-arm comparison that do not depend on what is compared
(docs/statistics.md): how often each unit is drawn in a resample (``counts_matrix``), an exact
quantile of a resample's pooled values without building the pool (``weighted_quantiles``),
the expanded percentile interval on the log ratio (``interval_from_reps``, ``expand_scale``,
``welch_scale``), the verdict (better / worse / no_difference / inconclusive) and the estimate
of how many blocks would decide an inconclusive one. ``stats/paired.py`` builds the
comparisons on them. Pure numpy/scipy, no I/O; every random step draws from the
``numpy.random.Generator`` passed in.

The interval: the bootstrap's spread on each side of the log ratio (from its 10th and 90th
percentiles, which are stable with few resamples and few distinct blocks) is scaled from a
normal to a Student t quantile with the units' degrees of freedom and by sqrt(n / (n - 1)),
undoing the bootstrap's known under-statement of the variance with n units (Hesterberg 2015).
Plain percentile intervals over 3-10 blocks under-cover; the simulation in
tests/unit/test_stats_simulation.py shows this one does not.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from servelab.lazy import lazy_module

sps = lazy_module("scipy.stats")  # imported on first use: scipy.stats takes ~1 s

Verdict = Literal["better", "worse", "no_difference", "inconclusive"]
VERDICTS: tuple[Verdict, ...] = ("better", "worse", "no_difference", "inconclusive")

_SIDE_Q = 0.9  # the bootstrap quantile each side's spread is read at


@functools.cache
def _z_side() -> float:
    """The normal quantile at ``_SIDE_Q`` (computed on first use: scipy loads lazily)."""
    return float(sps.norm.ppf(_SIDE_Q))


BATCH_CELLS = 4_000_000  # bound on resamples x requests held in memory at once
MAX_BLOCKS_NEEDED = 100_000


@dataclass(frozen=True, slots=True)
class RatioInterval:
    """Candidate / baseline of one statistic; ``ci_*`` is None with fewer than 2 blocks."""

    statistic: str  # one of stats.paired.STATISTICS
    ratio: float
    ci_low: float | None
    ci_high: float | None
    log_half_low: float | None  # log(ratio) - log(ci_low)
    log_half_high: float | None  # log(ci_high) - log(ratio)


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    blocks_needed: int | None  # only for inconclusive


def counts_matrix(rng: np.random.Generator, n: int, n_resamples: int) -> NDArray[np.int64]:
    """How often each of n blocks is drawn in each resample (rows: resamples)."""
    idx = rng.integers(0, n, size=(n_resamples, n))
    flat = (idx + np.arange(n_resamples)[:, None] * n).ravel()
    return np.bincount(flat, minlength=n_resamples * n).reshape(n_resamples, n)


def weighted_quantiles(
    values: NDArray[np.float64], unit_of: NDArray[np.intp], counts: NDArray[Any], q: float
) -> NDArray[np.float64]:
    """``np.quantile(pool, q)`` (linear interpolation) of each resample's pool, where the pool
    holds sorted ``values[j]`` ``counts[row, unit_of[j]]`` times, without building the pools."""
    out = np.empty(counts.shape[0])
    step = max(1, BATCH_CELLS // max(values.size, 1))
    for start in range(0, counts.shape[0], step):
        cum = counts[start : start + step][:, unit_of].cumsum(axis=1)
        h = (cum[:, -1] - 1) * q
        k = np.floor(h)
        lo = (cum <= k[:, None]).sum(axis=1)
        hi = (cum <= (k + 1)[:, None]).sum(axis=1).clip(max=values.size - 1)
        frac = h - k
        out[start : start + step] = values[lo] + frac * (values[hi] - values[lo])
    return out


def sides(reps: NDArray[np.float64]) -> tuple[float, float]:
    """Spread of the bootstrap distribution below and above its median, in normal SD units."""
    q_lo, mid, q_hi = np.quantile(reps, [1 - _SIDE_Q, 0.5, _SIDE_Q])
    return float(mid - q_lo) / _z_side(), float(q_hi - mid) / _z_side()


def spread(reps: NDArray[np.float64]) -> float:
    """One arm's bootstrap spread in sd units: the mean of its two sides."""
    return sum(sides(reps)) / 2


def welch_scale(arm_sd: Sequence[float], arm_n: Sequence[int]) -> tuple[float, float]:
    """Unpaired: each arm's bootstrap variance is inflated by n_i/(n_i-1); the degrees of
    freedom are Welch-Satterthwaite's. Returns (sd factor, df)."""
    boot = [s * s for s in arm_sd]
    corr = [v * n / (n - 1) for v, n in zip(boot, arm_n, strict=True)]
    if sum(boot) <= 0:
        return math.sqrt(max(arm_n) / (max(arm_n) - 1)), float(min(arm_n) - 1)
    denom = sum(v * v / (n - 1) for v, n in zip(corr, arm_n, strict=True))
    df = sum(corr) ** 2 / denom if denom > 0 else float(min(arm_n) - 1)
    return math.sqrt(sum(corr) / sum(boot)), df


def expand_scale(confidence: float, df: float, inflate: float) -> float:
    """The factor k = t_{df, 1 - alpha/2} x inflate applied to the bootstrap's sides."""
    return float(sps.t.ppf(1 - (1 - confidence) / 2, df)) * inflate


def interval_from_reps(
    statistic: str,
    theta: float,
    reps: NDArray[np.float64] | None,
    factor: float,
) -> RatioInterval:
    ratio = math.exp(theta)
    if reps is None:
        return RatioInterval(statistic, ratio, None, None, None, None)
    down, up = sides(reps)
    lo, hi = factor * down, factor * up
    return RatioInterval(statistic, ratio, bounded_exp(theta - lo), bounded_exp(theta + hi), lo, hi)


def bounded_exp(x: float) -> float:
    """exp(x) kept finite (a huge t quantile at a very early look can ask for exp(1000)):
    e^±700 is as good as 0 or infinity for an interval, and stays valid JSON."""
    return math.exp(min(max(x, -700.0), 700.0))


def decide(
    interval: RatioInterval, *, lower_is_better: bool, min_effect: float, n_blocks: int
) -> Decision:
    """The verdict of one ratio interval.

    ``no_difference`` when the whole interval lies within [1/(1+min_effect), 1+min_effect]
    (checked first: an effect too small to matter is not called better or worse even when it
    is detectable); ``better``/``worse`` when the interval excludes 1, by direction; otherwise
    ``inconclusive`` with an estimate of the blocks needed.
    """
    if interval.ci_low is None or interval.ci_high is None:
        return Decision("inconclusive", None)
    band = 1 + min_effect
    if interval.ci_low >= 1 / band and interval.ci_high <= band:
        return Decision("no_difference", None)
    if interval.ci_low > 1 or interval.ci_high < 1:
        up = interval.ci_low > 1
        return Decision("worse" if up == lower_is_better else "better", None)
    return Decision("inconclusive", blocks_needed(interval, min_effect, n_blocks))


def blocks_needed(interval: RatioInterval, min_effect: float, n_blocks: int) -> int | None:
    """Blocks (rounds) per arm that would likely decide, if the interval shrinks as 1/sqrt(n).

    Either the interval stops straddling 1 (its half-width falls below |log ratio|) or it fits
    inside the min_effect band (half-width below log(1+min_effect) - |log ratio|); the nearer
    of the two. The t quantile also shrinks with more blocks, so this errs on the high side.
    """
    if interval.log_half_low is None or interval.log_half_high is None:
        return None
    half = max(interval.log_half_low, interval.log_half_high)
    if half <= 0:
        return n_blocks
    theta = abs(math.log(interval.ratio))
    targets = [h for h in (theta, math.log(1 + min_effect) - theta) if h > 0]
    need = min(n_blocks * (half / h) ** 2 for h in targets)
    return int(min(max(math.ceil(need), n_blocks + 1), MAX_BLOCKS_NEEDED))
