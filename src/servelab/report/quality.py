"""Quality beside speed: every successful trial reply scored, per arm, from the run directory.

Owns ``summary["quality"]`` and ``quality/scores.jsonl``: the run's workload is loaded again
(and checked against the content hash the run recorded), each successful trial row is scored for
tool calls, Chinese script and coherence (scoring/), and the per-arm rates with their Wilson
intervals and between-arm exact tests are summarised. Perplexity and KL divergence, when
``servelab quality ppl`` has written ``quality/ppl.json``, are added as they are.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from servelab.errors import ServelabError
from servelab.scoring import quality_summary, score_rows
from servelab.store.jsonl import JsonlWriter
from servelab.workloads import Workload, load_workload

Row = Mapping[str, Any]


def _workload(manifest: Mapping[str, Any]) -> tuple[Workload | None, str | None]:
    info = manifest.get("workload") or {}
    name = info.get("name")
    if not name:
        return None, "the run records no workload; replies are scored without expectations"
    try:
        workload = load_workload(str(name))
    except ServelabError as exc:
        return None, f"workload {name!r} cannot be loaded ({exc}); scored without expectations"
    recorded = info.get("content_hash")
    if recorded and recorded != workload.content_hash:
        return None, (
            f"workload {name!r} changed since the run ({recorded} vs {workload.content_hash}); "
            "scored without expectations"
        )
    return workload, None


def _max_tokens(manifest: Mapping[str, Any]) -> int | None:
    spec = manifest.get("spec") or {}
    base = spec.get("base") or {}
    value = base.get("max_tokens") or (manifest.get("config") or {}).get("max_tokens")
    return int(value) if isinstance(value, int) else None


def run_quality(manifest: Mapping[str, Any], rows: Sequence[Row], run_root: Path) -> dict[str, Any]:
    workload, note = _workload(manifest)
    scored = score_rows(rows, workload, max_tokens=_max_tokens(manifest))
    baseline = str(manifest.get("baseline") or next(iter(scored), ""))
    out: dict[str, Any] = {"notes": [note] if note else []}
    if scored and baseline in scored:
        out.update(quality_summary(scored, baseline))
        qdir = run_root / "quality"
        qdir.mkdir(exist_ok=True)
        tmp = qdir / ".scores.jsonl.tmp"
        tmp.unlink(missing_ok=True)
        with JsonlWriter(tmp) as writer:
            for arm, pairs in scored.items():
                for row, score in pairs:
                    writer.write({"arm": arm, "seq": row.get("seq"),
                                  "request_id": row.get("request_id"), **score})  # fmt: skip
        tmp.replace(qdir / "scores.jsonl")
    ppl = run_root / "quality" / "ppl.json"
    if ppl.exists():
        try:
            out["ppl"] = json.loads(ppl.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            out["notes"].append(f"quality/ppl.json cannot be read ({exc})")
    return out
