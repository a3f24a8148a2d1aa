"""The batch cost fit of a concurrency sweep in the report ("Concurrency" section).

Owns ``batch_fit_blocks`` (the summary's ``batch_fit`` -> a lead sentence, a table of each
arm's fitted model, a + b x(B), R^2 and which model the points favour, and a table of measured
beside fitted aggregate decode tok/s per level). Pure. Text is plain: the renderers escape it.
"""

from __future__ import annotations

from collections.abc import Mapping

from servelab.report.blocks import Block, Para, Table
from servelab.report.comparison_view import num
from servelab.stats.batch_fit import BatchFit

LEAD = (
    "Batch cost model: one decode step of B sequences takes a + b x(B), with x(B) = N(B) = "
    "E (1 - (1 - k/E)^B) distinct experts per layer for a MoE of E experts, k per token (the "
    "union model), and x(B) = B for a dense model. The step is each level's median "
    "inter-token gap (without per-token gaps: 1 / its median per-stream decode tok/s), so "
    "aggregate decode tok/s = B / step. For a MoE the linear model is fitted too; the verdict "
    "says which one the points favour."
)


def _model(f: BatchFit) -> str:
    if f.model == "union":
        return f"union (E={f.n_expert}, k={f.n_expert_used})"
    return "linear (dense)"


def _per_unit(f: BatchFit) -> str:
    unit = "expert" if f.model == "union" else "sequence"
    return f"{num(f.per_unit_s * 1e3, '.3f')} ms / {unit}"


def fit_table(fits: Mapping[str, BatchFit]) -> Table:
    rows = tuple(
        (arm, _model(f), f"{num(f.fixed_s * 1e3, '.2f')} ms", _per_unit(f), num(f.r2, ".3f"),
         num(f.linear_r2, ".3f"), f.verdict,
         num(f.saturation_tps, ".1f") if f.saturation_tps is not None else "-")
        for arm, f in fits.items()
    )  # fmt: skip
    headers = ("arm", "model", "a (fixed)", "b", "R²", "R² linear", "points favour",
               "saturation tok/s")  # fmt: skip
    return Table(headers, rows)


def _residual(measured: float, fitted: float | None) -> str:
    if not fitted:
        return "-"
    pct = round((measured / fitted - 1) * 100, 1) + 0.0  # + 0.0: no "-0.0 %"
    return f"{pct:+.1f} %"


def points_table(fits: Mapping[str, BatchFit]) -> Table:
    rows = tuple(
        (arm, str(p.concurrency), num(p.cost_units, ".1f"), num(p.step_s * 1e3, ".1f"),
         num(p.aggregate_tps, ".1f"), num(p.fitted_aggregate_tps, ".1f"),
         _residual(p.aggregate_tps, p.fitted_aggregate_tps))
        for arm, f in fits.items()
        for p in f.points
    )  # fmt: skip
    headers = ("arm", "concurrency B", "x(B)", "step ms", "aggregate decode tok/s",
               "fitted tok/s", "measured vs fit")  # fmt: skip
    return Table(headers, rows)


def batch_fit_blocks(fits: Mapping[str, BatchFit] | None) -> tuple[Block, ...]:
    """The fit's blocks; nothing when no arm had three or more concurrency levels."""
    if not fits:
        return ()
    notes = [
        Para(f"{arm}: {f.explanation}" + (f"; step = {f.step_measure}." if f.step_measure else "."))
        for arm, f in fits.items()
    ]
    return (Para(LEAD), fit_table(fits), points_table(fits), *notes)
