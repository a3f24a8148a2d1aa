"""Candidate / baseline ratios of medians and means, with a bootstrap interval over blocks.

Owns the two-arm comparison of one metric (docs/statistics.md): the point ratios, their
confidence intervals, the verdict (better / worse / no_difference / inconclusive) and the
estimate of how many blocks would decide an inconclusive one. Pure numpy/scipy, no I/O; every
random step draws from the ``numpy.random.Generator`` passed in.

Assumptions, stated once:

- Blocks are the unit of resampling: requests of one block share the machine's drift, so they
  are not independent and are never resampled one by one.
- Paired (interleaved runs): block *i* of the baseline and block *i* of the candidate ran back to
  back as one round and share drift, so rounds are resampled jointly. Unpaired (imports, two
  separate runs): each arm's blocks are resampled independently, and drift between the runs is
  indistinguishable from the configuration effect (that is the caller's warning to give).
- The statistic is the median (or mean) of all requests of the resampled blocks pooled, i.e.
  the same statistic as the point estimate. Positive values only (a ratio of speeds or times).
- The interval is an expanded percentile interval on the log ratio: the bootstrap's spread on
  each side (from its 10th and 90th percentiles, which are stable with few resamples and few
  distinct blocks) is scaled from a normal to a Student t quantile with the blocks' degrees of
  freedom and by sqrt(n / (n - 1)), undoing the bootstrap's known under-statement of the
  variance with n blocks (Hesterberg 2015). Plain percentile intervals over 3-10 blocks
  under-cover; the simulation in tests/unit/test_stats_simulation.py shows this one does not.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats as sps  # type: ignore[import-untyped,unused-ignore]

Verdict = Literal["better", "worse", "no_difference", "inconclusive"]
VERDICTS: tuple[Verdict, ...] = ("better", "worse", "no_difference", "inconclusive")

_SIDE_Q = 0.9  # the bootstrap quantile each side's spread is read at
_Z_SIDE = float(sps.norm.ppf(_SIDE_Q))
_BATCH_CELLS = 4_000_000  # bound on resamples x requests held in memory at once
MAX_BLOCKS_NEEDED = 100_000


@dataclass(frozen=True, slots=True)
class RatioInterval:
    """Candidate / baseline of one statistic; ``ci_*`` is None with fewer than 2 blocks."""

    statistic: Literal["median", "mean"]
    ratio: float
    ci_low: float | None
    ci_high: float | None
    log_half_low: float | None  # log(ratio) - log(ci_low)
    log_half_high: float | None  # log(ci_high) - log(ratio)


@dataclass(frozen=True, slots=True)
class RatioComparison:
    median: RatioInterval
    mean: RatioInterval
    paired: bool
    n_blocks: int  # rounds when paired, else the smaller arm's block count
    n_blocks_baseline: int
    n_blocks_candidate: int
    confidence: float
    df: float | None  # degrees of freedom of the t scaling (None: no interval)
    n_resamples: int


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    blocks_needed: int | None  # only for inconclusive


@dataclass(frozen=True, slots=True)
class _Arm:
    """One arm's values sorted once, with the block each value came from."""

    values: NDArray[np.float64]  # sorted ascending
    block_of: NDArray[np.intp]  # block index (0..n-1) of each sorted value
    sums: NDArray[np.float64]  # per block
    sizes: NDArray[np.float64]  # per block

    @property
    def n(self) -> int:
        return int(self.sizes.size)


def _arm(blocks: Sequence[ArrayLike]) -> _Arm:
    arrays = [np.asarray(b, dtype=float).ravel() for b in blocks]
    if any(a.size == 0 for a in arrays):
        raise ValueError("every block needs at least one value")
    values = np.concatenate(arrays) if arrays else np.empty(0)
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError("values must be finite and positive (ratios of speeds or times)")
    block_of = np.repeat(np.arange(len(arrays)), [a.size for a in arrays])
    order = np.argsort(values, kind="stable")
    return _Arm(
        values=values[order],
        block_of=block_of[order],
        sums=np.array([a.sum() for a in arrays]),
        sizes=np.array([float(a.size) for a in arrays]),
    )


def _counts(rng: np.random.Generator, n: int, n_resamples: int) -> NDArray[np.int64]:
    """How often each of n blocks is drawn in each resample (rows: resamples)."""
    idx = rng.integers(0, n, size=(n_resamples, n))
    flat = (idx + np.arange(n_resamples)[:, None] * n).ravel()
    return np.bincount(flat, minlength=n_resamples * n).reshape(n_resamples, n)


def _weighted_medians(arm: _Arm, counts: NDArray[np.int64]) -> NDArray[np.float64]:
    """np.median of the pooled values of each resample, without materialising the pools."""
    out = np.empty(counts.shape[0])
    step = max(1, _BATCH_CELLS // max(arm.values.size, 1))
    for start in range(0, counts.shape[0], step):
        cum = counts[start : start + step][:, arm.block_of].cumsum(axis=1)
        total = cum[:, -1]
        lo = (cum <= ((total - 1) // 2)[:, None]).sum(axis=1)
        hi = (cum <= (total // 2)[:, None]).sum(axis=1)
        out[start : start + step] = (arm.values[lo] + arm.values[hi]) / 2
    return out


def _weighted_means(arm: _Arm, counts: NDArray[np.int64]) -> NDArray[np.float64]:
    result: NDArray[np.float64] = (counts @ arm.sums) / (counts @ arm.sizes)
    return result


def _log_stats(
    arm: _Arm, counts: NDArray[np.int64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    return np.log(_weighted_medians(arm, counts)), np.log(_weighted_means(arm, counts))


def _sides(reps: NDArray[np.float64]) -> tuple[float, float]:
    """Spread of the bootstrap distribution below and above its median, in normal SD units."""
    q_lo, mid, q_hi = np.quantile(reps, [1 - _SIDE_Q, 0.5, _SIDE_Q])
    return float(mid - q_lo) / _Z_SIDE, float(q_hi - mid) / _Z_SIDE


def _scale(arm_sd: Sequence[float], arm_n: Sequence[int], paired: bool) -> tuple[float, float]:
    """Variance inflation (as an SD factor) and degrees of freedom for the t quantile.

    Paired: one sample of n rounds, factor sqrt(n/(n-1)), df n-1. Unpaired: each arm's
    bootstrap variance is inflated by n_i/(n_i-1) and the degrees of freedom are
    Welch-Satterthwaite's.
    """
    if paired:
        n = arm_n[0]
        return math.sqrt(n / (n - 1)), float(n - 1)
    boot = [s * s for s in arm_sd]
    corr = [v * n / (n - 1) for v, n in zip(boot, arm_n, strict=True)]
    if sum(boot) <= 0:
        return math.sqrt(max(arm_n) / (max(arm_n) - 1)), float(min(arm_n) - 1)
    denom = sum(v * v / (n - 1) for v, n in zip(corr, arm_n, strict=True))
    df = sum(corr) ** 2 / denom if denom > 0 else float(min(arm_n) - 1)
    return math.sqrt(sum(corr) / sum(boot)), df


def _interval(
    statistic: Literal["median", "mean"],
    theta: float,
    reps: NDArray[np.float64] | None,
    factor: float,
) -> RatioInterval:
    ratio = math.exp(theta)
    if reps is None:
        return RatioInterval(statistic, ratio, None, None, None, None)
    down, up = _sides(reps)
    lo, hi = factor * down, factor * up
    return RatioInterval(statistic, ratio, math.exp(theta - lo), math.exp(theta + hi), lo, hi)


def compare_blocks(
    baseline: Sequence[ArrayLike],
    candidate: Sequence[ArrayLike],
    *,
    paired: bool,
    rng: np.random.Generator,
    confidence: float = 0.95,
    n_resamples: int = 2000,
) -> RatioComparison:
    """Compare one metric between two arms given per-block values.

    ``baseline[i]`` and ``candidate[i]`` are the values of block *i* (every block non-empty,
    values positive). When ``paired``, both lists must have the same length and index *i* is one
    round; the rounds are resampled jointly. Otherwise each arm is resampled on its own.
    Fewer than two blocks (rounds) give the point ratios with no interval.
    """
    if not 0 < confidence < 1:
        raise ValueError("confidence must be in (0, 1)")
    if paired and len(baseline) != len(candidate):
        raise ValueError("paired comparison needs the same number of rounds in both arms")
    base, cand = _arm(baseline), _arm(candidate)
    theta_med = math.log(float(np.median(cand.values)) / float(np.median(base.values)))
    theta_mean = math.log(
        (cand.sums.sum() / cand.sizes.sum()) / (base.sums.sum() / base.sizes.sum())
    )
    n_b, n_c = base.n, cand.n
    if min(n_b, n_c) < 2:
        return RatioComparison(
            _interval("median", theta_med, None, 1.0),
            _interval("mean", theta_mean, None, 1.0),
            paired, min(n_b, n_c), n_b, n_c, confidence, None, n_resamples,
        )  # fmt: skip
    cb = _counts(rng, n_b, n_resamples)
    cc = cb if paired else _counts(rng, n_c, n_resamples)
    (bm, bu), (cm, cu) = _log_stats(base, cb), _log_stats(cand, cc)
    med_reps, mean_reps = cm - bm, cu - bu
    # One scaling for both statistics: the median's spread decides the t degrees of freedom.
    sd = [sum(_sides(r)) / 2 for r in (bm, cm)]
    sd_inflate, df = _scale(sd, [n_b, n_c], paired)
    alpha = 1 - confidence
    factor = float(sps.t.ppf(1 - alpha / 2, df)) * sd_inflate
    return RatioComparison(
        median=_interval("median", theta_med, med_reps, factor),
        mean=_interval("mean", theta_mean, mean_reps, factor),
        paired=paired,
        n_blocks=n_b if paired else min(n_b, n_c),
        n_blocks_baseline=n_b,
        n_blocks_candidate=n_c,
        confidence=confidence,
        df=df,
        n_resamples=n_resamples,
    )


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
