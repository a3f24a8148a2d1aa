"""Capacity: the highest request rate that holds every SLO, from a rate sweep, with an interval.

Owns the capacity estimate of one arm (``capacity``) and the capacity comparison of two arms
(``compare_capacity``), both from SLO *margins* over the requests of each rate. Pure
numpy/scipy, no I/O; every random step draws from the ``numpy.random.Generator`` passed in.
docs/capacity.md explains it for users.

Assumptions, stated once:

- Input. For each requested rate and each round (block), each SLO's values over the block's
  requests (``spec.slo.slo_values``: failed requests at the worst end), and per SLO its
  statistic (a quantile or the mean), bound and direction (``SloTerm``).
- A rate's margin: for each SLO, ``log(statistic / bound)`` (``log(bound / statistic)`` for a
  higher-is-better metric) where the statistic is over the *pooled* requests of the rate's
  blocks, the same number as the goodput table's; the margin is the largest over the SLOs, and
  <= 0 means every SLO held (``slo_margin``, clipped to +-``CLIP`` so a rate where everything
  failed stays finite). Pooling, rather than averaging per-block quantiles, keeps the estimate
  free of the block size (a p90 of 6 requests is biased low). Blocks are independent given the
  rate; the margin rises with the rate (not enforced).
- Point estimate. Going up the sweep, the first rate whose margin is > 0 and the rate below it
  bracket the capacity; it is where the margin crosses 0 on a straight line in
  (log rate, margin). Censored at the sweep's ends: if every rate holds, the capacity is "at
  least the highest rate tried" (``censored="above"``, value = that rate); if the lowest rate
  already fails, it is "below the lowest rate tried" (``censored="below"``, value = that rate).
- Interval. Rounds are resampled (a drawn round brings its block at every rate, keeping drift
  shared across rates; a drawn round's requests enter each pool as often as it is drawn) and
  the capacity is re-estimated; the interval on log capacity is the expanded percentile
  interval of ``stats/compare.py`` (t quantile with rounds - 1 degrees of freedom,
  sqrt(n / (n - 1)) inflation), because plain percentile intervals over 3-10 rounds
  under-cover. An interval end beyond the sweep is not known: it is None (rendered "< lowest"
  or "> highest"). One round: no interval.
- "Holds at confidence" (``held_rps``): the highest rate tried such that at it and at every
  lower rate the margin's one-sided upper ``confidence`` bound is <= 0; the bound is the
  margin plus the bootstrap's upper spread scaled the same way (one-sided t quantile). It
  needs two or more rounds.
- Comparison. Candidate / reference capacity, paired by round (the same resampled rounds for
  both arms), with the same expanded interval and ``stats/compare.decide``'s verdict
  (higher is better). Censoring bounds the true ratio on one side only, so a verdict that
  censoring could overturn becomes ``inconclusive``, with the reason.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from servelab.lazy import lazy_module
from servelab.stats.compare import (
    Decision,
    RatioInterval,
    counts_matrix,
    decide,
    expand_scale,
    interval_from_reps,
    sides,
    weighted_quantiles,
)

sps = lazy_module("scipy.stats")  # imported on first use: scipy.stats takes ~1 s

CAPACITY_STATISTIC = "capacity"
"""The ``statistic`` of a capacity comparison: one figure per arm from its whole rate sweep."""

CLIP = 5.0  # |margin| cap in log units (e^5 ~ 150x the bound): all-failed rates stay finite
Censored = Literal["none", "above", "below"]
Values = Sequence[Sequence[float]]  # one block: each SLO's values over its requests
Blocks = Mapping[float, Mapping[int, Values]]  # {rate_rps: {round: values per SLO}}
Array = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class SloTerm:
    """What ``stats`` needs of one SLO: its statistic (a quantile 0-1, None: the mean), bound
    and direction."""

    quantile: float | None
    bound: float
    lower_is_better: bool

    def finite(self, values: Sequence[float]) -> Array:
        """``values`` sorted with +-inf (failed requests) replaced by a value far enough past
        the bound that the margin reaches CLIP, so resampled quantiles never meet inf - inf."""
        arr = np.sort(np.asarray(values, dtype=float))
        far = max(abs(self.bound), 1e-12) * math.exp(2 * CLIP)
        out: Array = np.nan_to_num(arr, nan=far, posinf=far, neginf=-far)
        return out


@dataclass(frozen=True, slots=True)
class RatePoint:
    """One rate of the sweep: its mean margin and the margin's upper confidence bound."""

    rate_rps: float
    margin: float  # mean over blocks; <= 0: the SLOs held
    margin_high: float | None  # one-sided upper confidence bound; None with < 2 blocks
    n_blocks: int

    @property
    def holds(self) -> bool:
        return self.margin <= 0

    @property
    def holds_at_confidence(self) -> bool:
        return self.margin_high is not None and self.margin_high <= 0


@dataclass(frozen=True, slots=True)
class Capacity:
    """The highest SLO-holding rate of one arm (requests per second), with its interval."""

    rps: float
    ci_low: float | None  # None: below the lowest rate tried (or no interval: ci_ok False)
    ci_high: float | None  # None: above the highest rate tried (or no interval)
    censored: Censored  # above: held at every rate tried; below: failed at the lowest
    held_rps: float | None  # highest rate held at confidence (with every lower rate)
    confidence: float
    n_rounds: int
    points: tuple[RatePoint, ...]

    @property
    def has_interval(self) -> bool:
        return self.n_rounds >= 2


@dataclass(frozen=True, slots=True)
class CapacityComparison:
    """Candidate / reference capacity, paired by round, and its verdict."""

    interval: RatioInterval  # statistic "capacity"; ratio = candidate / reference
    decision: Decision
    n_rounds: int
    note: str | None  # why a verdict was withheld (censoring), else None


def slo_margin(stat: float | None, bound: float, lower_is_better: bool) -> float:
    """One SLO's margin in log units (<= 0: held), clipped to +-CLIP; a missing statistic
    (no request measured it) is treated as failing."""
    if stat is None or math.isnan(stat):
        return CLIP
    num, den = (stat, bound) if lower_is_better else (bound, stat)
    if den <= 0:
        return CLIP if num > 0 else -CLIP
    if num <= 0:
        return -CLIP
    return float(np.clip(math.log(num / den), -CLIP, CLIP))


# ------------------------------------------------------------------------------ the sweep


@dataclass(frozen=True, slots=True)
class _Pool:
    """One SLO's values at one rate: sorted, with the round column each came from."""

    values: Array
    unit_of: NDArray[np.intp]

    def stats(self, term: SloTerm, counts: NDArray[np.int64]) -> Array:
        """The statistic of each resample's pool (NaN where the pool is empty)."""
        if self.values.size == 0:
            return np.full(counts.shape[0], np.nan)
        w = counts[:, self.unit_of]
        total = w.sum(axis=1)
        if term.quantile is None:
            mean: Array = (w * self.values).sum(axis=1) / np.maximum(total, 1)
            return np.where(total > 0, mean, np.nan)
        safe = np.where(total[:, None] > 0, counts, 1)
        q = weighted_quantiles(self.values, self.unit_of, safe, term.quantile)
        return np.where(total > 0, q, np.nan)


@dataclass(frozen=True, slots=True)
class _Sweep:
    rates: Array  # ascending
    rounds: tuple[int, ...]
    terms: tuple[SloTerm, ...]
    pools: tuple[tuple[_Pool, ...], ...]  # [rate][slo]
    n_blocks: tuple[int, ...]  # per rate

    @classmethod
    def of(
        cls, blocks: Blocks, terms: Sequence[SloTerm], rounds: tuple[int, ...] | None = None
    ) -> _Sweep:
        rates = sorted(r for r, bs in blocks.items() if bs)
        if not rates:
            raise ValueError("capacity: no blocks; run at least one rate")
        ids = rounds or tuple(sorted({b for r in rates for b in blocks[r]}))
        col = {b: j for j, b in enumerate(ids)}
        pools = tuple(
            tuple(_pool(blocks[r], col, k, t) for k, t in enumerate(terms)) for r in rates
        )
        n_blocks = tuple(len(blocks[r]) for r in rates)
        return cls(np.asarray(rates, dtype=float), ids, tuple(terms), pools, n_blocks)

    def margins(self, counts: NDArray[np.int64]) -> Array:
        """Each resample's margin per rate (rows: resamples); a rate none of whose blocks was
        drawn keeps its full-sample margin."""
        full = self._margins(np.ones((1, len(self.rounds)), dtype=np.int64))
        m = self._margins(counts)
        return np.where(np.isnan(m), full, m)

    def _margins(self, counts: NDArray[np.int64]) -> Array:
        out = np.empty((counts.shape[0], self.rates.size))
        for i, pools in enumerate(self.pools):
            stats = [p.stats(t, counts) for p, t in zip(pools, self.terms, strict=True)]
            per = [_margin_of(x, t) for x, t in zip(stats, self.terms, strict=True)]
            none_drawn = np.isnan(np.stack(stats)).all(axis=0)
            out[:, i] = np.where(none_drawn, np.nan, np.max(per, axis=0))
        return out


def _pool(cells: Mapping[int, Values], col: Mapping[int, int], k: int, term: SloTerm) -> _Pool:
    vals: list[float] = []
    units: list[int] = []
    for b, per_slo in cells.items():
        if b in col:
            vals.extend(per_slo[k])
            units.extend([col[b]] * len(per_slo[k]))
    order = np.argsort(np.asarray(vals, dtype=float), kind="stable")
    return _Pool(term.finite(vals), np.asarray(units, dtype=np.intp)[order])


def _margin_of(stats: Array, term: SloTerm) -> Array:
    """``slo_margin`` of each statistic; an empty pool (NaN) fails (CLIP)."""
    return np.array(
        [
            slo_margin(None if np.isnan(x) else float(x), term.bound, term.lower_is_better)
            for x in stats
        ]
    )


def crossing(rates: Array, m: Array) -> tuple[Array, NDArray[np.int8]]:
    """Capacity per row of margins ``m`` (rows x rates) and its censoring: 0 none, 1 above
    (every rate held: the highest rate), -1 below (the lowest rate failed: the lowest rate)."""
    fails = m > 0
    first = np.where(fails.any(axis=1), fails.argmax(axis=1), rates.size)
    out = np.empty(m.shape[0])
    cens = np.zeros(m.shape[0], dtype=np.int8)
    cens[first == rates.size] = 1
    cens[first == 0] = -1
    out[cens == 1], out[cens == -1] = rates[-1], rates[0]
    mid = np.nonzero(cens == 0)[0]
    if mid.size:
        hi = first[mid]
        x0, x1 = np.log(rates[hi - 1]), np.log(rates[hi])
        m0, m1 = m[mid, hi - 1], m[mid, hi]
        out[mid] = np.exp(x0 + (0 - m0) / (m1 - m0) * (x1 - x0))
    return out, cens


_CENSORED: dict[int, Censored] = {0: "none", 1: "above", -1: "below"}


def _points(sweep: _Sweep, reps: Array | None, confidence: float) -> tuple[RatePoint, ...]:
    point = sweep.margins(np.ones((1, len(sweep.rounds)), dtype=np.int64))[0]
    n = len(sweep.rounds)
    out = []
    for i, rate in enumerate(sweep.rates):
        high = None
        if reps is not None and n >= 2:
            k = float(sps.t.ppf(confidence, n - 1)) * math.sqrt(n / (n - 1))
            high = float(point[i] + k * sides(reps[:, i])[1])
        out.append(RatePoint(float(rate), float(point[i]), high, sweep.n_blocks[i]))
    return tuple(out)


def _held(points: tuple[RatePoint, ...]) -> float | None:
    held = None
    for p in points:
        if not p.holds_at_confidence:
            break
        held = p.rate_rps
    return held


def _factor(n: int, confidence: float) -> float:
    return expand_scale(confidence, n - 1, math.sqrt(n / (n - 1)))


def _log_caps(sweep: _Sweep, margins: Array) -> Array:
    caps, _ = crossing(sweep.rates, margins)
    return np.log(caps)


def capacity(
    blocks: Blocks,
    terms: Sequence[SloTerm],
    *,
    confidence: float,
    rng: np.random.Generator,
    n_resamples: int = 2000,
) -> Capacity:
    """The capacity of one arm from its sweep: ``{rate_rps: {round: values per SLO}}``."""
    sweep = _Sweep.of(blocks, terms)
    n = len(sweep.rounds)
    reps = sweep.margins(counts_matrix(rng, n, n_resamples)) if n >= 2 else None
    points = _points(sweep, reps, confidence)
    cap, cens = crossing(sweep.rates, np.array([[p.margin for p in points]]))
    low = high = None
    if reps is not None:
        iv = interval_from_reps(
            CAPACITY_STATISTIC, math.log(cap[0]), _log_caps(sweep, reps), _factor(n, confidence)
        )
        low, high = _inside(iv.ci_low, sweep.rates), _inside(iv.ci_high, sweep.rates)
    censored = _CENSORED[int(cens[0])]
    low = None if censored == "below" else low
    high = None if censored == "above" else high
    return Capacity(float(cap[0]), low, high, censored, _held(points), confidence, n, points)


def _inside(x: float | None, rates: Array) -> float | None:
    """An interval end, or None beyond the sweep (no rate there was tried)."""
    eps = 1e-9
    if x is None or x < rates[0] * (1 - eps) or x > rates[-1] * (1 + eps):
        return None
    return float(min(max(x, rates[0]), rates[-1]))


# ------------------------------------------------------------------------------ two arms


def compare_capacity(
    reference: Blocks,
    candidate: Blocks,
    terms: Sequence[SloTerm],
    *,
    confidence: float,
    min_effect: float,
    rng: np.random.Generator,
    n_resamples: int = 2000,
) -> CapacityComparison:
    """Candidate / reference capacity, resampling the rounds both arms share."""
    rounds = tuple(sorted(_rounds(reference) & _rounds(candidate)))
    if not rounds:
        raise ValueError("capacity comparison: the arms share no round; run them interleaved")
    ref, cand = _Sweep.of(reference, terms, rounds), _Sweep.of(candidate, terms, rounds)
    ones = np.ones((1, len(rounds)), dtype=np.int64)
    (c_ref,), (s_ref,) = crossing(ref.rates, ref.margins(ones))
    (c_cand,), (s_cand,) = crossing(cand.rates, cand.margins(ones))
    theta = math.log(c_cand / c_ref)
    n = len(rounds)
    reps = None
    if n >= 2:
        counts = counts_matrix(rng, n, n_resamples)
        reps = _log_caps(cand, cand.margins(counts)) - _log_caps(ref, ref.margins(counts))
    factor = _factor(n, confidence) if n >= 2 else 1.0
    iv = interval_from_reps(CAPACITY_STATISTIC, theta, reps, factor)
    decision = decide(iv, lower_is_better=False, min_effect=min_effect, n_blocks=n)
    return _censor_verdict(iv, decision, n, int(s_ref), int(s_cand))


def _rounds(blocks: Blocks) -> set[int]:
    """Rounds with a block at some rate (a round missing a rate still pairs on the others)."""
    return {b for cells in blocks.values() for b in cells}


def _censor_verdict(
    iv: RatioInterval, decision: Decision, n: int, s_ref: int, s_cand: int
) -> CapacityComparison:
    """The true ratio is >= the estimate when the candidate is censored above or the reference
    below, <= it in the mirror cases; keep only verdicts that side cannot overturn. Any
    censoring is said in the note, and more rounds are not what an inconclusive one needs."""
    if s_ref == 0 and s_cand == 0:
        return CapacityComparison(iv, decision, n, None)
    at_least = s_cand == 1 or s_ref == -1
    at_most = s_cand == -1 or s_ref == 1
    safe = {(True, False): {"better"}, (False, True): {"worse"}}.get((at_least, at_most), set())
    kept = decision if decision.verdict in safe else Decision("inconclusive", None)
    return CapacityComparison(iv, kept, n, _censor_note(s_ref, s_cand))


def _censor_note(s_ref: int, s_cand: int) -> str:
    where = {1: "held at every rate tried", -1: "missed at the lowest rate tried"}
    said = [
        f"the {name} {where[s]}" for name, s in (("reference", s_ref), ("candidate", s_cand)) if s
    ]
    whose = "their capacities are" if len(said) > 1 else "its capacity is"
    return (
        f"{' and '.join(said)}, so {whose} outside the sweep; extend load.rate "
        "so both arms cross their SLOs inside it"
    )


# ------------------------------------------------------------------------------ section records


@dataclass(frozen=True, slots=True)
class GoodputLevel:
    """One arm at one load level (an open-loop rate or a closed-loop concurrency): how many
    requests met every SLO per second, and each SLO's attainment and run-level hold."""

    level: float  # requests/s when open_loop, else the concurrency
    open_loop: bool
    n_requests: int  # trial requests, failed ones included
    n_good: int  # met every per-request SLO
    duration_s: float  # summed block spans: first send -> last end
    goodput_rps: float | None  # n_good / duration_s
    throughput_rps: float | None  # n_requests / duration_s
    attainment: dict[str, float]  # SLO text -> share of requests meeting it
    statistic: dict[str, float | None]  # SLO text -> its statistic over the level's requests
    holds: dict[str, bool]  # SLO text -> that statistic met the bound
    n_blocks: int

    @property
    def all_hold(self) -> bool:
        return all(self.holds.values())


@dataclass(frozen=True, slots=True)
class ArmCapacity:
    """An arm's goodput per level and, from its open-loop rates, its capacity."""

    levels: tuple[GoodputLevel, ...]
    capacity: Capacity | None  # None without open-loop rates


@dataclass(frozen=True, slots=True)
class CapacitySection:
    """``summary.json``'s ``capacity``: the SLOs, each arm's goodput and capacity; the
    capacity comparisons themselves are ``Comparison`` records (metric ``capacity_rps``)."""

    slos: tuple[str, ...]
    confidence: float
    arms: dict[str, ArmCapacity]
    notes: dict[str, str]  # candidate -> why its capacity verdict was withheld (censoring)
