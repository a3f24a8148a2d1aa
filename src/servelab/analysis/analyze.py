"""From a run's manifest and request rows to its ``Summary``: the analysis of an experiment.

Owns ``analyze`` (manifest + request rows -> the ``Summary`` of docs/summary-json.md, without
the theory, quality, gate, spec-decode and prefix-cache sections, which ``with_sections``
adds) and the concurrency sweep table. Pure: no files, no clock, no network; the same
manifest, rows and seed give the same summary. Comparisons are ``analysis.comparisons``,
looks and stopping ``analysis.looks``, the manifest's settings ``analysis.settings``, the
warnings ``analysis.run_warnings``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from servelab.analysis.arm_summary import experiment_arm
from servelab.analysis.capacity import capacity_section
from servelab.analysis.comparisons import comparisons, proportions
from servelab.analysis.looks import stopping
from servelab.analysis.row_selection import Row, by_arm, cells, in_order, n_rounds
from servelab.analysis.run_warnings import warnings
from servelab.analysis.settings import (
    DEFAULT_RESAMPLES,
    ManifestLike,
    Settings,
    as_manifest,
    run_facts,
    settings,
)
from servelab.stats.sweep import Request, SweepPoint, sweep
from servelab.store import SCHEMA_VERSION
from servelab.store.engine_records import PrefixCacheRecord, SpecDecodeRecord
from servelab.store.summary import (
    GateResult,
    QualitySection,
    Summary,
    SweepRow,
    TheorySection,
    Warning,
)


def _request(row: Row) -> Request | None:
    t, e2e, n = row.get("t_send_unix_s"), row.get("e2e_s"), row.get("n_out")
    if not (
        isinstance(t, int | float) and isinstance(e2e, int | float) and isinstance(n, int | float)
    ):
        return None
    return Request(float(t), float(e2e), int(n), row.get("decode_tps"), row.get("ttft_s"))


def _sweep_row(p: SweepPoint, reference: int | None) -> SweepRow:
    return SweepRow(
        concurrency=p.concurrency, aggregate_tps=p.aggregate_tps,
        per_stream_tps=p.per_stream_tps, ttft_s=p.ttft_s, efficiency=p.efficiency,
        efficiency_reference=reference, n_blocks=p.n_blocks,
    )  # fmt: skip


def sweep_table(cfg: Settings, rows: Sequence[Row]) -> dict[str, tuple[SweepRow, ...]]:
    out: dict[str, tuple[SweepRow, ...]] = {}
    for arm, levels in cells(rows).items():
        data = {  # the concurrency sweep: closed-loop levels (open loops go by rate: capacity)
            c.concurrency: [[q for q in map(_request, block) if q] for block in blocks.values()]
            for c, blocks in levels.items()
            if c.rate_rps is None
        }
        if not data:
            continue
        result = sweep(data)
        out[arm] = tuple(_sweep_row(p, result.reference_concurrency) for p in result.points)
    return {arm: out[arm] for arm in (*cfg.arms, *out) if arm in out}


def analyze(
    manifest: ManifestLike,
    rows: Sequence[Row],
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    decision: Sequence[tuple[str, str]] | None = None,
) -> Summary:
    """The summary of docs/summary-json.md for a manifest and its request rows.

    ``decision`` replaces the run's (metric, statistic) pairs, to re-read a run on other
    statistics (a summary of servelab 0.1 decided on medians).
    """
    rows = in_order(rows)
    typed = as_manifest(manifest)
    cfg = settings(typed, rows)
    if decision is not None:
        cfg = replace(cfg, decision=tuple(decision))
    facts = run_facts(typed)
    grouped = by_arm(rows)
    rounds = n_rounds(rows)
    level = cfg.plan().confidence_at(rounds)
    comps = comparisons(cfg, rows, confidence=level, n_resamples=n_resamples)
    cap = capacity_section(
        rows, cfg.slos, arms=cfg.arms, pairs=[(cfg.reference_of(c), c) for c in cfg.candidates()],
        confidence=cfg.confidence, min_effect=cfg.min_effect, seed=cfg.seed,
        n_resamples=n_resamples,
    )  # fmt: skip
    return Summary(
        schema_version=SCHEMA_VERSION,
        kind=cfg.kind,
        run_id=cfg.run_id,
        baseline=cfg.baseline,
        decision_metrics=cfg.decision_metrics,
        interleaved=cfg.interleaved,
        confidence=cfg.confidence,
        seed=cfg.seed,
        n_resamples=n_resamples,
        arms={
            arm: experiment_arm(grouped.get(arm, ()), cfg.decision_metrics, cfg.confidence)
            for arm in cfg.arms
        },
        comparisons=(*comps, *(cap.comparisons if cap else ())),
        proportions=tuple(proportions(cfg, grouped, cfg.confidence)),
        sweep=sweep_table(cfg, rows),
        stopping=stopping(cfg, facts, comps, rounds, level),
        config_diff={k: dict(v) for k, v in facts.config_diff.items()},
        allowed_confounds=facts.confounds,
        warnings=tuple(warnings(cfg, facts, rows)),
        references=dict(cfg.references) or None,
        prompts=cfg.prompts if cfg.prompts != "fixed" else None,
        capacity=cap.section if cap else None,
    )


def with_sections(
    summary: Summary,
    *,
    theory: TheorySection | None = None,
    quality: QualitySection | None = None,
    gates: Mapping[str, Mapping[str, GateResult]] | None = None,
    gates_required: Sequence[str] = (),
    gates_failed: Sequence[str] = (),
    more_warnings: Sequence[Warning] = (),
    spec_decode: Mapping[str, SpecDecodeRecord] | None = None,
    prefix_cache: Mapping[str, PrefixCacheRecord] | None = None,
) -> Summary:
    """The summary with the sections ``servelab report`` adds after ``analyze`` (the
    spec-decode and prefix-cache records: ``analysis.spec_decode``; None or empty leaves the
    key out)."""
    return replace(
        summary,
        theory=theory,
        quality=quality,
        gates={a: dict(r) for a, r in gates.items()} if gates is not None else None,
        gates_required=tuple(gates_required) if gates is not None else None,
        gates_failed=tuple(gates_failed) if gates is not None else None,
        warnings=(*summary.warnings, *more_warnings),
        spec_decode=dict(spec_decode) if spec_decode else summary.spec_decode,
        prefix_cache=dict(prefix_cache) if prefix_cache else summary.prefix_cache,
    )
