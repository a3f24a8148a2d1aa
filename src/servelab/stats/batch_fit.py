"""The batch cost model fitted to a concurrency sweep: one decode step of B sequences costs
``a + b x(B)``, with x(B) = N(B) for a MoE (the union model) and x(B) = B for a dense model.

Owns ``fit_batch_cost`` (measured (B, step seconds) levels -> ``BatchFit``) and its
frozen records. Pure numpy, no I/O, no random steps. The union model and N(B) are the theory's
(``theory.roofline.distinct_experts``, ``fit_concurrency``); this module applies them to what a
sweep measured and says how well they explain it. docs/theory.md and docs/experiments.md
("Batch scaling") are the user's pages.

Assumptions, stated once:

- A closed-loop level at concurrency B keeps B sequences in one decode batch, so one step yields
  B tokens and aggregate decode tok/s = B / step. The caller measures the step: the median
  inter-token gap of the level's requests (robust to the prefills of arriving requests, which
  stall the batch now and then), or else 1 / the median per-stream decode rate (which counts
  those stalls, so it puts them into a and b).
- The step time is linear in its cost units: N(B) = E (1 - (1 - k/E)^B) distinct experts per
  layer for a MoE of E experts with k used per token (tokens route independently and
  uniformly; real routers are skewed, so N(B) is an upper bound), B sequences for a dense
  model. a is the fixed cost of a step (weights every token needs, launch and sampling
  overheads), b the cost of one more expert (or sequence).
- Least squares over the levels' medians, unweighted; R^2 says how much of the step time's
  spread over the levels the model explains. With a MoE the linear model is fitted too, and
  the verdict says which of the two the points favour (``fit_concurrency``'s margin).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from servelab.theory.roofline import distinct_experts, fit_concurrency

BatchModel = Literal["union", "linear"]
MIN_LEVELS = 3


@dataclass(frozen=True, slots=True)
class BatchFitPoint:
    """One concurrency level: its cost units x(B), measured step and aggregate decode rate,
    and the aggregate rate the fitted model gives there."""

    concurrency: int
    cost_units: float  # N(B) distinct experts per layer (union) or B (linear)
    step_s: float  # measured: the level's step time (``BatchFit.step_measure`` says how)
    aggregate_tps: float  # measured: B / step_s
    fitted_aggregate_tps: float | None  # B / (a + b x(B)); None where the fit is not positive


@dataclass(frozen=True, slots=True)
class BatchFit:
    """One arm's batch cost fit. ``fixed_s`` is a, ``per_unit_s`` b (per distinct expert for
    ``union``, per sequence for ``linear``). For a MoE, ``linear_r2`` is the linear model's
    R^2 on the same points and ``verdict`` which model they favour (``union``, ``linear`` or
    ``indistinguishable``); for a dense model both say ``linear``. ``saturation_tps`` is the
    aggregate rate the linear model tends to as B grows (1 / b; None when b <= 0 or union).
    ``step_measure`` says how the caller measured each level's step time."""

    model: BatchModel
    n_expert: int
    n_expert_used: int
    fixed_s: float
    per_unit_s: float
    r2: float
    linear_r2: float
    verdict: str
    explanation: str
    saturation_tps: float | None
    points: tuple[BatchFitPoint, ...]
    step_measure: str = ""


def cost_units(b: int, n_expert: int, n_used: int) -> float:
    """x(B): N(B) for a MoE (``n_expert`` > 1), else B."""
    return distinct_experts(n_expert, n_used, b) if n_expert > 1 else float(b)


def fit_batch_cost(
    steps: Sequence[tuple[int, float]], *, n_expert: int = 0, n_used: int = 0,
    step_measure: str = "",
) -> BatchFit | None:  # fmt: skip
    """The fit of (concurrency B, step seconds) levels; None with fewer than ``MIN_LEVELS``
    distinct concurrencies of positive, finite step time."""
    usable = sorted((int(b), float(t)) for b, t in steps if b >= 1 and np.isfinite(t) and t > 0)
    if len({b for b, _ in usable}) < MIN_LEVELS:
        return None
    moe = n_expert > 1
    fit = fit_concurrency([(b, b / t) for b, t in usable], n_expert=n_expert, n_used=n_used)
    coef = fit.union_coef if moe and fit.union_coef is not None else fit.linear_coef
    a, b_unit = coef
    r2 = fit.union_r2 if moe and fit.union_r2 is not None else fit.linear_r2
    points = []
    for b, t in usable:
        x = cost_units(b, n_expert, n_used)
        step = a + b_unit * x
        points.append(BatchFitPoint(b, x, t, b / t, b / step if step > 0 else None))
    linear_b = fit.linear_coef[1]
    return BatchFit(
        model="union" if moe else "linear", n_expert=n_expert if moe else 0,
        n_expert_used=n_used if moe else 0, fixed_s=a, per_unit_s=b_unit, r2=r2,
        linear_r2=fit.linear_r2, verdict=fit.verdict, explanation=fit.explanation,
        saturation_tps=1.0 / linear_b if not moe and linear_b > 0 else None,
        points=tuple(points), step_measure=step_measure,
    )  # fmt: skip
