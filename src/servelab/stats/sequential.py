"""Sequential stopping: per-look confidence levels from an alpha-spending plan, and the rule.

Owns the group-sequential part of a decision (docs/statistics.md): which confidence level a
comparison uses after n rounds so that the chance of ever calling an A/A difference better or
worse, over all the looks a run may take, stays at most ``alpha``; and whether a run may stop.
Pure numpy/scipy, no I/O, deterministic (numerical integration, no random steps).

Assumptions: the looks are planned in advance, one after every round from ``min_blocks`` to
``max_blocks``; the information at a look is proportional to the rounds done (t = n / max).
Alpha is spent with the Lan-DeMets O'Brien-Fleming-like function 2 - 2 Phi(z / sqrt(t)) (little
spent early, nearly the full level left for the last look) or the Pocock-like
alpha ln(1 + (e - 1) t). The per-look two-sided boundaries c_k solve
P(|Z_j| < c_j for j < k, |Z_k| >= c_k) = alpha(t_k) - alpha(t_{k-1}) for the canonical joint
normal distribution of the look statistics (Jennison & Turnbull 2000, ch. 19), computed by the
Armitage-McPherson-Rowe recursion on a grid. Each look's interval then uses the nominal level
1 - 2 (1 - Phi(c_k)); compare.py turns that into a Student t quantile for its few blocks.
Stopping because an interval is decided, fits within the min-effect band, or is narrow enough
never raises the false-positive rate: a run that stops can no longer cross a later boundary.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from servelab.lazy import lazy_module

sps = lazy_module("scipy.stats")  # imported on first use: scipy.stats takes ~1 s
optimize = lazy_module("scipy.optimize")

Spending = Literal["obrien_fleming", "pocock"]
SPENDINGS: tuple[Spending, ...] = ("obrien_fleming", "pocock")
DECIDED = frozenset({"better", "worse", "no_difference"})

_GRID = 801  # points of the continuation-region grid per look
_MAX_Z = 12.0  # boundary used when (almost) no alpha is spent at a look


@dataclass(frozen=True, slots=True)
class LookPlan:
    """Planned looks (rounds completed) and the confidence level to use at each one."""

    alpha: float
    spending: Spending
    looks: tuple[int, ...]  # rounds completed at each look, increasing
    boundaries_z: tuple[float, ...]  # two-sided normal boundary per look
    confidences: tuple[float, ...]  # 1 - nominal two-sided alpha per look

    def confidence_at(self, n_rounds: int) -> float:
        """The level after ``n_rounds``: that of the last planned look at or before it.

        Before the first look the first look's level; beyond the last the last one's (a run
        never takes more looks than planned, so the spent alpha is never exceeded).
        """
        idx = int(np.searchsorted(self.looks, n_rounds, side="right")) - 1
        return self.confidences[max(idx, 0)]


@dataclass(frozen=True, slots=True)
class StopRule:
    """What happened at one look: stop or go on, and why in words."""

    stop: bool
    decided: bool  # every comparison is better, worse or no_difference
    reason: str


def spent(t: float, alpha: float, spending: Spending) -> float:
    """Cumulative two-sided alpha spent by information fraction ``t`` (0 < t <= 1)."""
    t = min(max(t, 0.0), 1.0)
    if t == 0:
        return 0.0
    if spending == "obrien_fleming":
        z = float(sps.norm.ppf(1 - alpha / 2))
        return float(2 - 2 * sps.norm.cdf(z / math.sqrt(t)))
    if spending == "pocock":
        return alpha * math.log(1 + (math.e - 1) * t)
    raise ValueError(f"unknown spending {spending!r}; known: {', '.join(SPENDINGS)}")


def plan_looks(
    min_blocks: int, max_blocks: int | None, *, alpha: float = 0.05,
    spending: Spending = "obrien_fleming",
) -> LookPlan:  # fmt: skip
    """Looks after every round from ``min_blocks`` to ``max_blocks`` (one look if equal/None)."""
    if not 0 < alpha < 1:
        raise ValueError("alpha must be in (0, 1)")
    last = max(max_blocks or min_blocks, min_blocks)
    looks = tuple(range(max(min_blocks, 1), last + 1))
    z = _boundaries(tuple(n / last for n in looks), alpha, spending)
    conf = tuple(round(float(1 - 2 * sps.norm.sf(c)), 12) for c in z)
    return LookPlan(alpha, spending, looks, z, conf)


@lru_cache(maxsize=64)
def _boundaries(
    fractions: tuple[float, ...], alpha: float, spending: Spending
) -> tuple[float, ...]:
    cum = [spent(t, alpha, spending) for t in fractions]
    cum[-1] = alpha  # the plan spends exactly alpha by its last look
    increments = np.diff([0.0, *cum])
    first = float(sps.norm.isf(increments[0] / 2)) if increments[0] > 0 else _MAX_Z
    bounds = [min(first, _MAX_Z)]
    grid, dens = _start(fractions[0], bounds[0])
    for k in range(1, len(fractions)):
        b, grid, dens = _next_look(grid, dens, fractions[k - 1], fractions[k], increments[k])
        bounds.append(b)
    return tuple(bounds)


def _start(t: float, c: float) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Grid over the continuation region of the score S = Z sqrt(t), and its sub-density."""
    edge = c * math.sqrt(t)
    grid = np.linspace(-edge, edge, _GRID)
    return grid, sps.norm.pdf(grid, scale=math.sqrt(t))


def _trapezoid_weights(grid: NDArray[np.float64]) -> NDArray[np.float64]:
    w = np.full(grid.size, grid[1] - grid[0])
    w[[0, -1]] /= 2
    return w


def _next_look(
    grid: NDArray[np.float64], dens: NDArray[np.float64], t_prev: float, t: float, inc: float
) -> tuple[float, NDArray[np.float64], NDArray[np.float64]]:
    """Boundary at the next look spending ``inc``, and the new continuation sub-density."""
    sd = math.sqrt(t - t_prev)
    mass = dens * _trapezoid_weights(grid)

    def crossing(c: float) -> float:
        edge = c * math.sqrt(t)
        p = sps.norm.sf((edge - grid) / sd) + sps.norm.cdf((-edge - grid) / sd)
        return float(mass @ p) - inc

    if inc <= 0 or crossing(_MAX_Z) >= 0:
        c = _MAX_Z
    else:
        c = float(optimize.brentq(crossing, 1e-6, _MAX_Z, xtol=1e-10))
    edge = c * math.sqrt(t)
    new_grid = np.linspace(-edge, edge, _GRID)
    new_dens = sps.norm.pdf((new_grid[:, None] - grid[None, :]) / sd) @ mass / sd
    return c, new_grid, new_dens


def stop_rule(
    verdicts: Sequence[str],
    ci_widths: Sequence[float | None],
    *,
    n_rounds: int,
    plan: LookPlan,
    target_ci_width: float | None = None,
) -> StopRule:
    """May a run stop after ``n_rounds``? Only at a planned look (n >= the first look).

    Stops when every comparison is decided (better, worse or no_difference), when a
    ``target_ci_width`` is given and every interval is at most that wide, or at the last
    planned look. No comparisons at all never counts as decided.
    """
    decided = bool(verdicts) and all(v in DECIDED for v in verdicts)
    if n_rounds < plan.looks[0]:
        return StopRule(False, decided, f"{n_rounds} of at least {plan.looks[0]} blocks done")
    if decided:
        return StopRule(True, True, f"every comparison decided after {n_rounds} blocks")
    target = target_ci_width
    if target is not None and ci_widths and all(w is not None and w <= target for w in ci_widths):
        return StopRule(
            True, False, f"every CI narrower than {target_ci_width:g} after {n_rounds} blocks"
        )
    open_n = sum(v not in DECIDED for v in verdicts)
    if n_rounds >= plan.looks[-1]:
        return StopRule(
            True, False, f"max_blocks ({plan.looks[-1]}) reached; {open_n} still inconclusive"
        )
    return StopRule(False, False, f"{open_n} comparison(s) inconclusive after {n_rounds} blocks")
