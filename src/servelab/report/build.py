"""``servelab report``: rebuild ``summary.json``, ``report.md`` and ``report.html`` from a run
directory alone (its manifest and its requests), so a report can be regenerated at any time.

Owns reading the run directory for reporting and writing the three files atomically.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from servelab.report.analyze import analyze
from servelab.report.gates import evaluate_gates, failed_required
from servelab.report.html import render_html
from servelab.report.markdown import render_markdown
from servelab.report.quality import run_quality
from servelab.report.theory import run_theory
from servelab.store.columns import read_row_table
from servelab.store.jsonl import write_json_atomic, write_text_atomic
from servelab.store.rundir import RunDir, read_manifest


@dataclass(frozen=True, slots=True)
class Report:
    run_dir: RunDir
    summary: dict[str, Any]
    markdown: Path
    html: Path
    bad_lines: list[int]
    manifest: dict[str, Any]
    rows: list[Mapping[str, Any]]


def read_run(root: Path) -> tuple[RunDir, dict[str, Any], list[Mapping[str, Any]], list[int]]:
    """The manifest and the rows, held as columns (``store.columns``: a million rows fit in a
    few hundred MB) and seen as read-only mappings; plus the unreadable line numbers."""
    run = RunDir(root)
    manifest = read_manifest(run)
    table = read_row_table(run.requests) if run.requests.exists() else None
    rows: list[Mapping[str, Any]] = list(table.rows) if table else []
    return run, manifest, rows, table.bad_lines if table else []


def build_report(root: Path) -> Report:
    run, manifest, rows, bad = read_run(root)
    summary = analyze(manifest, rows)
    summary["theory"] = run_theory(manifest, rows, run.root)
    summary["quality"] = run_quality(manifest, rows, run.root)
    gates = (manifest.get("spec") or {}).get("gates") or {}
    if gates.get("rules"):
        summary["gates"] = evaluate_gates(
            gates["rules"], summary, rows, interleaved=bool(manifest.get("interleaved", True)),
            seed=int(manifest.get("seed") or 0),
        )  # fmt: skip
        summary["gates_required"] = list(dict.fromkeys([summary["baseline"], *gates["require"]]))
        summary["gates_failed"] = failed_required(summary["gates"], summary["gates_required"])
    if bad:
        summary.setdefault("warnings", []).append({
            "kind": "unreadable_rows",
            "detail": f"{len(bad)} line(s) of requests.jsonl could not be read "
            f"(lines {', '.join(map(str, bad[:5]))}); a hard kill can tear the last line",
            "advice": "those requests are not counted; `servelab resume` re-runs them",
        })  # fmt: skip
    write_json_atomic(run.summary, summary)
    md = run.root / "report.md"
    html = run.root / "report.html"
    write_text_atomic(md, render_markdown(summary, manifest, rows))
    write_text_atomic(html, render_html(summary, manifest, rows))
    return Report(run, summary, md, html, bad, manifest, rows)
