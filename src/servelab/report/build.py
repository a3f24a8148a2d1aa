"""``servelab report``: rebuild ``summary.json``, ``report.md`` and ``report.html`` from a run
directory alone (its manifest and its requests), so a report can be regenerated at any time.

Owns the report's effects, in order: read the run, read what theory, quality and the
spec-decode and prefix-cache records need from disk (model architectures, counter files, the
blocks' cache records, engine logs, the workload; scores written to quality/scores.jsonl), call
the pure analysis (``servelab.analysis``), render, and write the
three files atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from servelab.analysis import analyze, run_facts, with_sections
from servelab.analysis.batch_scaling import batch_fits
from servelab.analysis.gate_outcomes import evaluate_gates, failed_required
from servelab.analysis.hardware_matrix import hardware_matrix
from servelab.analysis.predictions import theory_section
from servelab.analysis.quality_rates import quality_section
from servelab.analysis.row_selection import Row
from servelab.analysis.run_warnings import cache_warnings, client_load_warnings
from servelab.analysis.settings import settings
from servelab.analysis.spec_decode import prefix_cache_section, spec_decode_section
from servelab.report.counter_inputs import read_counter_inputs
from servelab.report.html import render_html
from servelab.report.markdown import render_markdown
from servelab.report.quality_scores import score_run
from servelab.report.theory_inputs import read_theory_inputs
from servelab.store import Manifest, read_run
from servelab.store.jsonl import write_json_atomic, write_text_atomic
from servelab.store.metrics_files import read_client_loads
from servelab.store.rundir import RunDir
from servelab.store.summary import Summary, Warning
from servelab.workloads import Workload


@dataclass(frozen=True, slots=True)
class Report:
    """What ``build_report`` wrote, and the run it read."""

    run_dir: RunDir
    summary: Summary
    markdown: Path
    html: Path
    bad_lines: list[int]
    manifest: Manifest
    rows: Sequence[Row]


def _unreadable(bad: Sequence[int]) -> tuple[Warning, ...]:
    if not bad:
        return ()
    return (Warning(
        kind="unreadable_rows",
        detail=f"{len(bad)} line(s) of requests.jsonl could not be read "
        f"(lines {', '.join(map(str, bad[:5]))}); a hard kill can tear the last line",
        advice="those requests are not counted; `servelab resume` re-runs them",
    ),)  # fmt: skip


def client_warnings(run: RunDir, manifest: Manifest, rows: Sequence[Row]) -> list[Warning]:
    """The client's own load per block, against the selftest ceiling the run recorded at its
    start (so a report rebuilt later, or elsewhere, says the same)."""
    ceiling = manifest.host.client_ceiling if manifest.host is not None else None
    rate = ceiling.tokens_per_s if ceiling is not None else None
    return client_load_warnings(read_client_loads(run), rows, rate)


def summarize_run(
    run: RunDir, manifest: Manifest, rows: Sequence[Row], bad: Sequence[int] = (),
    workload: Workload | None = None,
) -> Summary:  # fmt: skip
    """The full summary of a run: the analysis plus theory, quality and gates (``workload``:
    the run's workload when the caller holds it already)."""
    summary = analyze(manifest, rows)
    facts = run_facts(manifest)
    counters = read_counter_inputs(run, facts, summary.arms)
    spec_decode = spec_decode_section(rows, counters)
    prefix_cache = prefix_cache_section(rows, counters)
    theory_inputs = read_theory_inputs(run, facts, spec_decode or {})
    theory = theory_section(
        facts, rows, summary.baseline, theory_inputs, profile=manifest.hardware_profile
    )
    scored = score_run(facts, rows, run.root, summary.baseline, workload)
    quality = quality_section(scored.tallies, summary.baseline, scored.notes, scored.ppl)
    gates, required, failed = None, list[str](), list[str]()
    if facts.gate_rules:
        interim = with_sections(summary, theory=theory, quality=quality)
        gates = evaluate_gates(facts.gate_rules, interim, rows, interleaved=summary.interleaved,
                               seed=summary.seed, cfg=settings(manifest, rows))  # fmt: skip
        required = list(dict.fromkeys([summary.baseline, *facts.gate_require]))
        failed = failed_required(gates, required)
    more = (*_unreadable(bad), *client_warnings(run, manifest, rows),
            *cache_warnings(prefix_cache))  # fmt: skip
    full = with_sections(
        summary, theory=theory, quality=quality, gates=gates, gates_required=required,
        gates_failed=failed, more_warnings=more, spec_decode=spec_decode,
        prefix_cache=prefix_cache,
    )  # fmt: skip
    arches = {a: i.architecture for a, i in theory_inputs.items()}
    fits = batch_fits(summary.sweep, arches, rows)  # steps from the inter-token gaps
    matrix = hardware_matrix(manifest, rows, theory_inputs, summary.arm_order())  # --ray only
    return replace(full, batch_fit=fits or None, hardware_matrix=matrix)


def build_report(root: Path, *, workload: Workload | None = None) -> Report:
    """Read the run at ``root``, analyse it, and write summary.json, report.md, report.html.
    ``workload``: the run's workload as its runner loaded it (read once per run); by default
    the one the run recorded is loaded (its content hash is checked either way)."""
    run = read_run(root)
    run_dir, manifest, rows, bad = run.dir, run.manifest, run.rows, run.bad_lines
    summary = summarize_run(run_dir, manifest, rows, bad, workload)
    write_json_atomic(run_dir.summary, summary.to_json())
    md = run_dir.root / "report.md"
    html = run_dir.root / "report.html"
    write_text_atomic(md, render_markdown(summary, manifest, rows))
    write_text_atomic(html, render_html(summary, manifest, rows))
    return Report(run_dir, summary, md, html, bad, manifest, rows)
