"""Candidate / baseline ratios of what the user pays, paired by round and prompt.

Owns the two-arm comparison of one metric under one statistic (docs/statistics.md): the
statistic itself (``pooled`` Σ tokens / Σ time for rates, ``mean``, ``median``, ``p90``,
``p99``), its ratio and confidence interval, the per-prompt paired effects and their split,
and the verdict with the rule that an effect confidently outside the no-difference band on
any prompt forbids ``no_difference``. Pure numpy/scipy, no I/O; every random step draws from
the ``numpy.random.Generator`` passed in.

Assumptions, stated once:

- A *pair* is one (round, prompt): the requests of the baseline and of the candidate that
  asked the same prompt in the same round. Every round asks every arm the same prompts, so
  pairing removes the prompts' own speed from the comparison.
- ``prompts="fixed"`` (default): the verdict is about the workload as written. The interval
  comes from resampling **rounds** (each round carries all of its pairs), which keeps drift,
  each engine start's own speed and request noise, and holds the prompt mix fixed.
  ``prompts="sampled"``: the prompts are a sample of a larger traffic; a hierarchical bootstrap
  resamples rounds, then pairs within each drawn round, which adds the spread of the effect
  across prompts.
- One round only (a single pass through the prompts, as many published tables are): no
  round can be resampled. The noise of a pair's log ratio is then estimated from the pairs
  themselves, robustly, as 1.4826 x the median absolute deviation around their median, which
  assumes that at least half of the prompts share one effect; the interval is parametric, with
  t degrees of freedom 0.37 (P - 1), the MAD's efficiency. It covers request noise, not the
  difference between two engine starts (the caller warns).
- Unpaired (two separate runs): each arm's blocks are resampled on their own, as
  ``stats/compare.py`` documents.
- The interval is the expanded percentile interval of ``stats/compare.py`` on the log ratio,
  except for the tail quantiles (``p90``, ``p99``) over two or more rounds (blocks): they are
  compared round by round, with a t interval (``_per_unit``).
- Per-prompt intervals are simultaneous over the prompts (Bonferroni).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from servelab.metrics import STATISTICS, Statistic
from servelab.stats.compare import (
    BATCH_CELLS,
    Decision,
    RatioInterval,
    bounded_exp,
    counts_matrix,
    decide,
    expand_scale,
    interval_from_reps,
    spread,
    weighted_quantiles,
    welch_scale,
)
from servelab.stats.prompt_effects import (
    PromptEffect,
    effects,
    mad_df,
    mad_sd,
    split_words,
    t_quantile,
)

QUANTILE_OF: dict[str, float] = {"median": 0.5, "p90": 0.9, "p99": 0.99}
PromptMode = Literal["fixed", "sampled"]
PROMPT_MODES: tuple[PromptMode, ...] = ("fixed", "sampled")
Method = Literal["rounds", "rounds_prompts", "prompt_noise", "blocks_unpaired"]


@dataclass(frozen=True, slots=True)
class Cell:
    """One arm's requests of one pair (or of one block): values and their pooling weights."""

    values: tuple[float, ...]  # positive
    weights: tuple[float, ...]  # tokens a rate counts (time = weight / value); else 1.0

    @classmethod
    def of(cls, values: Sequence[float], weights: Sequence[float] | None = None) -> Cell:
        w = tuple(float(x) for x in weights) if weights is not None else (1.0,) * len(values)
        return cls(tuple(float(v) for v in values), w)


@dataclass(frozen=True, slots=True)
class Pair:
    round: int
    prompt: str
    baseline: Cell
    candidate: Cell


@dataclass(frozen=True, slots=True)
class PairedComparison:
    statistic: Statistic
    ratio: float
    ci_low: float | None
    ci_high: float | None
    log_half_low: float | None
    log_half_high: float | None
    ratio_median: float
    ratio_mean: float
    ci_low_mean: float | None
    ci_high_mean: float | None
    method: Method
    paired: bool
    n_rounds: int  # rounds (paired) or the smaller arm's block count (unpaired)
    n_pairs: int
    n_blocks_baseline: int
    n_blocks_candidate: int
    df: float | None
    confidence: float
    prompts: tuple[PromptEffect, ...] = ()

    @property
    def interval(self) -> RatioInterval:
        return RatioInterval(
            self.statistic, self.ratio, self.ci_low, self.ci_high, self.log_half_low,
            self.log_half_high,
        )  # fmt: skip


# ------------------------------------------------------------------------------ one arm


@dataclass(frozen=True, slots=True)
class _Arm:
    """One arm's requests over units (pairs or blocks), sorted once."""

    values: NDArray[np.float64]  # sorted ascending
    unit_of: NDArray[np.intp]  # unit of each sorted value
    tokens: NDArray[np.float64]  # per unit: Σ weights
    time: NDArray[np.float64]  # per unit: Σ weight / value
    sums: NDArray[np.float64]  # per unit: Σ values
    sizes: NDArray[np.float64]  # per unit: number of values

    @property
    def n(self) -> int:
        return int(self.sizes.size)


def _arm(cells: Sequence[Cell]) -> _Arm:
    if not cells:
        raise ValueError("no pairs (blocks) to compare")
    sizes = np.fromiter((len(c.values) for c in cells), dtype=np.intp, count=len(cells))
    if np.any(sizes == 0):
        raise ValueError("every pair (block) needs at least one value in each arm")
    if any(len(c.values) != len(c.weights) for c in cells):
        raise ValueError("every value needs its weight")
    n = int(sizes.sum())
    values = np.fromiter((v for c in cells for v in c.values), dtype=float, count=n)
    weights = np.fromiter((w for c in cells for w in c.weights), dtype=float, count=n)
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError("values must be finite and positive (speeds or times)")
    if not np.all(np.isfinite(weights)) or np.any(weights <= 0):
        raise ValueError("weights must be finite and positive (tokens)")
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    order = np.argsort(values, kind="stable")
    return _Arm(
        values=values[order],
        unit_of=np.repeat(np.arange(len(cells)), sizes)[order],
        tokens=np.add.reduceat(weights, starts),
        time=np.add.reduceat(weights / values, starts),
        sums=np.add.reduceat(values, starts),
        sizes=sizes.astype(float),
    )


def _log_stat(arm: _Arm, counts: NDArray[Any], stat: str) -> NDArray[np.float64]:
    """log of the statistic of the pooled requests of each resample (rows of ``counts``)."""
    if stat == "pooled":
        out = np.log((counts @ arm.tokens) / (counts @ arm.time))
    elif stat == "mean":
        out = np.log((counts @ arm.sums) / (counts @ arm.sizes))
    else:
        out = np.log(weighted_quantiles(arm.values, arm.unit_of, counts, QUANTILE_OF[stat]))
    return np.asarray(out, dtype=np.float64)


def _point(arm: _Arm, stat: str) -> float:
    return float(_log_stat(arm, np.ones((1, arm.n)), stat)[0])


def arm_statistic(values: Sequence[float], weights: Sequence[float] | None, stat: str) -> float:
    """One arm's level: the statistic of its requests (``pooled`` needs token weights)."""
    return math.exp(_point(_arm([Cell.of(values, weights)]), stat))


def _check(statistic: str, confidence: float) -> None:
    if statistic not in STATISTICS:
        raise ValueError(f"unknown statistic {statistic!r}; known: {', '.join(STATISTICS)}")
    if not 0 < confidence < 1:
        raise ValueError("confidence must be in (0, 1)")


# ------------------------------------------------------------------------------ per pair


def _pair_logs(b: _Arm, c: _Arm, statistic: str) -> NDArray[np.float64]:
    """Each pair's log ratio (the arms' units are the pairs): of pooled rates for ``pooled``,
    of means otherwise."""
    if statistic == "pooled":
        return np.log((c.tokens / c.time) / (b.tokens / b.time))
    return np.log((c.sums / c.sizes) / (b.sums / b.sizes))


def prompt_effects(
    pairs: Sequence[Pair], statistic: str, *, confidence: float, min_effect: float
) -> tuple[PromptEffect, ...]:
    """Each prompt's paired effect (``stats.prompt_effects.effects``) from its pairs' log
    ratios: of pooled rates for ``pooled``, of means otherwise."""
    if not pairs:
        return ()
    base, cand = _arm([p.baseline for p in pairs]), _arm([p.candidate for p in pairs])
    return _effects(pairs, base, cand, statistic, confidence, min_effect)


def _effects(
    pairs: Sequence[Pair], base: _Arm, cand: _Arm, statistic: str, confidence: float,
    min_effect: float,
) -> tuple[PromptEffect, ...]:  # fmt: skip
    return effects(
        _pair_logs(base, cand, statistic), [p.prompt for p in pairs],
        single_round=len({p.round for p in pairs}) == 1, confidence=confidence,
        min_effect=min_effect,
    )  # fmt: skip


# ------------------------------------------------------------------------------ comparisons

TAIL = ("p90", "p99")  # quantiles whose bootstrap over few rounds under-covers


def _unit_matrix(round_of: NDArray[np.intp], n_rounds: int) -> NDArray[np.float64]:
    """Rows: rounds; 1 where the pair belongs to the round (each round's own statistic)."""
    units = np.zeros((n_rounds, round_of.size))
    units[round_of, np.arange(round_of.size)] = 1.0
    return units


def _per_unit(
    statistic: str, logs: Sequence[NDArray[np.float64]], confidence: float, *, paired: bool
) -> RatioInterval:
    """A tail quantile compared round by round (block by block when unpaired).

    Each round's quantile of each arm; the ratio is the geometric mean over rounds of the
    per-round ratios (unpaired: of the per-block quantiles, arm by arm), with a t interval
    (unpaired: Welch's). A quantile of the pooled requests of 3-10 rounds jumps with one slow
    block, and neither its bootstrap nor a t floor covers: 6-8 % false verdicts in the A/A
    simulation of tests/unit/test_tail_simulation.py (docs/statistics.md, "Tail quantiles").
    """
    base, cand = logs
    if paired:
        d = cand - base
        theta, se2, df = float(d.mean()), float(np.var(d, ddof=1)) / d.size, float(d.size - 1)
    else:
        v = [float(np.var(g, ddof=1)) / g.size for g in (base, cand)]
        theta, se2 = float(cand.mean() - base.mean()), sum(v)
        denom = sum(x * x / (g.size - 1) for x, g in zip(v, (base, cand), strict=True))
        df = se2 * se2 / denom if denom > 0 else float(min(base.size, cand.size) - 1)
    half = t_quantile(0.5 + confidence / 2, df) * math.sqrt(se2)
    return RatioInterval(statistic, math.exp(theta), bounded_exp(theta - half),
                         bounded_exp(theta + half), half, half)  # fmt: skip


def _round_index(pairs: Sequence[Pair]) -> tuple[NDArray[np.intp], int]:
    rounds = sorted({p.round for p in pairs})
    where = {r: i for i, r in enumerate(rounds)}
    return np.array([where[p.round] for p in pairs], dtype=np.intp), len(rounds)


def _sampled_counts(
    rng: np.random.Generator, round_of: NDArray[np.intp], n_rounds: int, n_resamples: int
) -> NDArray[np.int64]:
    """Hierarchical: rounds drawn with replacement, then each drawn round's pairs."""
    rc = counts_matrix(rng, n_rounds, n_resamples) if n_rounds > 1 else np.ones((n_resamples, 1))
    out = np.zeros((n_resamples, round_of.size), dtype=np.int64)
    for r in range(n_rounds):
        members = np.flatnonzero(round_of == r)
        m = members.size
        draws = rng.multinomial(rc[:, r].astype(np.int64) * m, np.full(m, 1.0 / m))
        out[:, members] = draws
    return out


def _noise_reps(
    rng: np.random.Generator, base: _Arm, cand: _Arm, sd: float, stat: str, n_resamples: int
) -> NDArray[np.float64]:
    """log ratios with each candidate pair scaled by exp(sd z), z standard normal."""
    b = _point(base, stat)
    z = rng.standard_normal((n_resamples, cand.n)) * sd
    if stat == "pooled":
        pooled = cand.tokens.sum() / (cand.time[None, :] * np.exp(-z)).sum(axis=1)
        return np.asarray(np.log(pooled) - b, dtype=np.float64)
    if stat == "mean":
        mean = (cand.sums[None, :] * np.exp(z)).sum(axis=1) / cand.sizes.sum()
        return np.asarray(np.log(mean) - b, dtype=np.float64)
    out = np.empty(n_resamples)
    step = max(1, BATCH_CELLS // max(cand.values.size, 1))
    for start in range(0, n_resamples, step):
        scaled = cand.values[None, :] * np.exp(z[start : start + step][:, cand.unit_of])
        out[start : start + step] = np.log(np.quantile(scaled, QUANTILE_OF[stat], axis=1))
    return out - b


def compare_pairs(
    pairs: Sequence[Pair], statistic: Statistic, *, rng: np.random.Generator,
    confidence: float = 0.95, n_resamples: int = 2000, prompts: PromptMode = "fixed",
    min_effect: float = 0.03,
) -> PairedComparison:  # fmt: skip
    """Compare one metric between two arms over (round, prompt) pairs (module docstring)."""
    _check(statistic, confidence)
    if prompts not in PROMPT_MODES:
        raise ValueError(f"unknown prompts mode {prompts!r}; known: {', '.join(PROMPT_MODES)}")
    if not pairs:
        raise ValueError("no pairs to compare")
    base, cand = _arm([p.baseline for p in pairs]), _arm([p.candidate for p in pairs])
    round_of, n_rounds = _round_index(pairs)
    theta = _point(cand, statistic) - _point(base, statistic)
    theta_mean = _point(cand, "mean") - _point(base, "mean")
    theta_median = _point(cand, "median") - _point(base, "median")
    per_prompt = _effects(pairs, base, cand, statistic, confidence, min_effect)
    method: Method
    reps: tuple[NDArray[np.float64], NDArray[np.float64]] | None = None
    inflate, df = 1.0, 1.0
    if n_rounds >= 2 or (prompts == "sampled" and len(pairs) >= 3):
        method = "rounds" if prompts == "fixed" else "rounds_prompts"
        if prompts == "fixed":
            counts = counts_matrix(rng, n_rounds, n_resamples)[:, round_of]
        else:
            counts = _sampled_counts(rng, round_of, n_rounds, n_resamples)
        reps = (
            _log_stat(cand, counts, statistic) - _log_stat(base, counts, statistic),
            _log_stat(cand, counts, "mean") - _log_stat(base, counts, "mean"),
        )
        units = n_rounds if n_rounds >= 2 else len(pairs)
        inflate, df = math.sqrt(units / (units - 1)), float(units - 1)
    elif len(pairs) >= 3:
        method = "prompt_noise"
        sd, sd_mean = (mad_sd(_pair_logs(base, cand, s)) for s in (statistic, "mean"))
        reps = (
            _noise_reps(rng, base, cand, sd, statistic, n_resamples),
            _noise_reps(rng, base, cand, sd_mean, "mean", n_resamples),
        )
        inflate, df = 1.0, mad_df(len(pairs))
    else:
        method = "rounds"
    factor = expand_scale(confidence, df, inflate) if reps is not None else 1.0
    main = interval_from_reps(statistic, theta, reps[0] if reps else None, factor)
    if statistic in TAIL and method == "rounds" and n_rounds >= 2:
        per_round = _unit_matrix(round_of, n_rounds)
        logs = [_log_stat(arm, per_round, statistic) for arm in (base, cand)]
        main = _per_unit(statistic, logs, confidence, paired=True)
        df = float(n_rounds - 1)
    mean = interval_from_reps("mean", theta_mean, reps[1] if reps else None, factor)
    return PairedComparison(
        statistic=statistic, ratio=main.ratio, ci_low=main.ci_low, ci_high=main.ci_high,
        log_half_low=main.log_half_low, log_half_high=main.log_half_high,
        ratio_median=math.exp(theta_median), ratio_mean=mean.ratio, ci_low_mean=mean.ci_low,
        ci_high_mean=mean.ci_high, method=method, paired=True, n_rounds=n_rounds,
        n_pairs=len(pairs), n_blocks_baseline=n_rounds, n_blocks_candidate=n_rounds,
        df=df if reps is not None else None, confidence=confidence, prompts=per_prompt,
    )  # fmt: skip


def compare_unpaired(
    baseline: Sequence[Cell], candidate: Sequence[Cell], statistic: Statistic, *,
    rng: np.random.Generator, confidence: float = 0.95, n_resamples: int = 2000,
) -> PairedComparison:  # fmt: skip
    """Compare two arms from separate runs: one Cell per block, blocks resampled per arm.

    Welch-Satterthwaite degrees of freedom and each arm's bootstrap variance inflated by
    n / (n - 1) (stats/compare.py). Fewer than two blocks in an arm: the ratios only.
    """
    _check(statistic, confidence)
    if not baseline or not candidate:
        raise ValueError("each arm needs at least one block")
    base, cand = _arm(baseline), _arm(candidate)
    theta = _point(cand, statistic) - _point(base, statistic)
    theta_mean = _point(cand, "mean") - _point(base, "mean")
    theta_median = _point(cand, "median") - _point(base, "median")
    n_b, n_c = base.n, cand.n
    reps = None
    df: float | None = None
    factor = 1.0
    if min(n_b, n_c) >= 2:
        cb, cc = counts_matrix(rng, n_b, n_resamples), counts_matrix(rng, n_c, n_resamples)
        bs, cs = _log_stat(base, cb, statistic), _log_stat(cand, cc, statistic)
        reps = (cs - bs, _log_stat(cand, cc, "mean") - _log_stat(base, cb, "mean"))
        inflate, df = welch_scale([spread(bs), spread(cs)], [n_b, n_c])
        factor = expand_scale(confidence, df, inflate)
    main = interval_from_reps(statistic, theta, reps[0] if reps else None, factor)
    if statistic in TAIL and min(n_b, n_c) >= 2:
        per_block = [_log_stat(arm, np.eye(arm.n), statistic) for arm in (base, cand)]
        main = _per_unit(statistic, per_block, confidence, paired=False)
    mean = interval_from_reps("mean", theta_mean, reps[1] if reps else None, factor)
    return PairedComparison(
        statistic=statistic, ratio=main.ratio, ci_low=main.ci_low, ci_high=main.ci_high,
        log_half_low=main.log_half_low, log_half_high=main.log_half_high,
        ratio_median=math.exp(theta_median), ratio_mean=mean.ratio, ci_low_mean=mean.ci_low,
        ci_high_mean=mean.ci_high, method="blocks_unpaired", paired=False,
        n_rounds=min(n_b, n_c), n_pairs=0, n_blocks_baseline=n_b, n_blocks_candidate=n_c,
        df=df, confidence=confidence,
    )  # fmt: skip


def compare_blocks(
    baseline: Sequence[ArrayLike], candidate: Sequence[ArrayLike], *, paired: bool,
    rng: np.random.Generator, confidence: float = 0.95, n_resamples: int = 2000,
    statistic: Statistic = "median",
) -> PairedComparison:  # fmt: skip
    """Compare per-block values with no prompts or token weights (servelab 0.1's comparison:
    the median by default). ``paired``: block *i* of both arms is round *i* (same number of
    rounds needed), rounds resampled jointly; else ``compare_unpaired``."""
    b = [Cell.of(np.asarray(x, dtype=float).ravel().tolist()) for x in baseline]
    c = [Cell.of(np.asarray(x, dtype=float).ravel().tolist()) for x in candidate]
    if not paired:
        return compare_unpaired(b, c, statistic, rng=rng, confidence=confidence,
                                n_resamples=n_resamples)  # fmt: skip
    if len(b) != len(c):
        raise ValueError("paired comparison needs the same number of rounds in both arms")
    pairs = [Pair(i, "", cb, cc) for i, (cb, cc) in enumerate(zip(b, c, strict=True))]
    return compare_pairs(pairs, statistic, rng=rng, confidence=confidence,
                         n_resamples=n_resamples)  # fmt: skip


# ------------------------------------------------------------------------------ verdicts


def outside_band(c: PairedComparison) -> tuple[PromptEffect, ...]:
    return tuple(p for p in c.prompts if p.position in ("below", "above"))


def decide_paired(c: PairedComparison, *, lower_is_better: bool, min_effect: float) -> Decision:
    """The verdict of ``stats.compare.decide``, except that ``no_difference`` is impossible
    while any prompt's paired effect lies confidently outside the band: then the interval
    decides ``better``/``worse`` when it excludes 1, else the comparison stays inconclusive."""
    d = decide(c.interval, lower_is_better=lower_is_better, min_effect=min_effect,
               n_blocks=c.n_rounds)  # fmt: skip
    if d.verdict != "no_difference" or not outside_band(c):
        return d
    lo, hi = c.ci_low, c.ci_high
    if lo is not None and hi is not None and (lo > 1 or hi < 1):
        return Decision("worse" if (lo > 1) == lower_is_better else "better", None)
    return Decision("inconclusive", c.n_rounds + 1)


def heterogeneity_words(c: PairedComparison) -> str | None:
    """The split of the comparison's per-prompt effects in words (``split_words``)."""
    return split_words(c.prompts)
