"""Batch scaling of a concurrency sweep: each arm's sweep fitted by the batch cost model.

Owns ``batch_fits`` (the summary's sweep table, the run's rows and each arm's architecture ->
``{arm: BatchFit}``, the summary's ``batch_fit``): a + b N(B) for an arm whose model is a MoE
(the union model), a + b B for a dense one (``stats.batch_fit``). Each level's step time is
the median over its successful closed-loop trial requests of each request's median inter-token
gap (``itl_s``); a level whose rows carry no gaps (an import) uses 1 / its median per-stream
decode rate instead, and the fit says which. The median gap is the better measure: a request
that arrives stalls the batch for its prefill, which lands in the decode rate of every request
in flight but only in a few of their gaps. An arm needs three or more levels; one whose model
file could not be read is fitted as dense, and its explanation says so. Pure: the caller reads
the architectures.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import replace

from servelab.analysis.row_selection import Row, ok_trials
from servelab.stats.batch_fit import BatchFit, fit_batch_cost
from servelab.store.summary import SweepRow
from servelab.theory.arch import Architecture

UNKNOWN_ARCH = "model architecture unknown (no readable model file): fitted as dense"
BY_ITL = "median inter-token gap"
BY_DECODE = "1 / median per-stream decode tok/s"


def _request_gap_s(row: Row) -> float | None:
    gaps = row.get("itl_s")
    if not isinstance(gaps, list):
        return None
    values = [float(g) for g in gaps if isinstance(g, int | float) and g > 0]
    return statistics.median(values) if values else None


def level_step_s(rows: Sequence[Row], concurrency: int) -> float | None:
    """The median over the closed-loop requests at ``concurrency`` of their median gap."""
    gaps = [
        g
        for r in rows
        if r.get("rate_rps") is None and int(r.get("concurrency") or 1) == concurrency
        if (g := _request_gap_s(r)) is not None
    ]
    return statistics.median(gaps) if gaps else None


def _steps(points: Sequence[SweepRow], rows: Sequence[Row]) -> tuple[list[tuple[int, float]], str]:
    by_gap = [(p.concurrency, level_step_s(rows, p.concurrency)) for p in points]
    if all(s is not None for _, s in by_gap):
        return [(c, s) for c, s in by_gap if s is not None], BY_ITL
    rates = [(p.concurrency, p.per_stream_tps) for p in points if p.per_stream_tps]
    return [(c, 1.0 / t) for c, t in rates if t is not None and t > 0], BY_DECODE


def arm_batch_fit(
    points: Sequence[SweepRow], arch: Architecture | None, rows: Sequence[Row] = ()
) -> BatchFit | None:
    """One arm's fit from its sweep rows and its requests; None with fewer than three
    usable levels."""
    steps, measure = _steps(points, rows)
    moe = arch.moe if arch is not None else None
    fit = fit_batch_cost(
        steps,
        n_expert=moe.n_expert if moe is not None else 0,
        n_used=moe.n_expert_used if moe is not None else 0,
        step_measure=measure,
    )
    if fit is None or arch is not None:
        return fit
    return replace(fit, explanation=f"{UNKNOWN_ARCH}; {fit.explanation}")


def batch_fits(
    sweep: Mapping[str, Sequence[SweepRow]],
    architectures: Mapping[str, Architecture | None],
    rows: Sequence[Row] = (),
) -> dict[str, BatchFit]:
    """Per arm of the sweep with three or more levels, its batch cost fit (arm order kept).
    ``rows``: the run's request rows (the step from inter-token gaps); without them each level's
    per-stream decode rate gives the step."""
    out = {}
    for arm, points in sweep.items():
        fit = arm_batch_fit(points, architectures.get(arm), ok_trials(rows, arm))
        if fit is not None:
            out[arm] = fit
    return out
