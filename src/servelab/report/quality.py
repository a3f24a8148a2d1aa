"""Quality beside speed: every successful trial reply scored, per arm, from the run directory.

Owns ``summary["quality"]`` and ``quality/scores.jsonl``: the run's workload is loaded again
(and checked against the content hash the run recorded), each successful trial row is scored for
tool calls, Chinese script and coherence (scoring/), and the per-arm rates with their Wilson
intervals and between-arm exact tests are summarised. Perplexity and KL divergence, when
``servelab quality ppl`` has written ``quality/ppl.json``, are added as they are. Rows are
scored one at a time into per-arm counts and part files, so a million rows hold no scores.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from servelab.errors import ServelabError
from servelab.redact import redact_data
from servelab.scoring.aggregate import ArmTally, counts_ok, summary_of_rates
from servelab.scoring.score import score_row
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


def _score_to_files(
    rows: Sequence[Row], workload: Workload | None, max_tokens: int | None, qdir: Path
) -> tuple[dict[str, ArmTally], dict[str, Path]]:
    """Score each successful trial row once: count it in its arm's tally and append its line
    to the arm's part file (so no score is held; scores.jsonl lists arms in first-seen order)."""
    items = {item.id: item for item in workload.prompts} if workload is not None else {}
    tallies: dict[str, ArmTally] = {}
    parts: dict[str, Path] = {}
    files: dict[str, IO[str]] = {}
    try:
        for row in rows:
            if not counts_ok(row):
                continue
            arm = str(row.get("arm"))
            item = items.get(str(row.get("prompt_id")))
            score = score_row(row, item, workload, max_tokens=max_tokens)
            tallies.setdefault(arm, ArmTally()).add(score)
            if arm not in files:
                parts[arm] = qdir / f".scores.{len(parts)}.part"
                files[arm] = parts[arm].open("w", encoding="utf-8")
            line = {"arm": arm, "seq": row.get("seq"), "request_id": row.get("request_id"),
                    **score}  # fmt: skip
            files[arm].write(
                json.dumps(
                    redact_data(line), ensure_ascii=False, separators=(",", ":"), allow_nan=False
                )
                + "\n"
            )
    finally:
        for fh in files.values():
            fh.close()
    return tallies, parts


def _join(parts: dict[str, Path], target: Path) -> None:
    tmp = target.with_name(f".{target.name}.tmp")
    with tmp.open("wb") as out:
        for part in parts.values():
            with part.open("rb") as fh:
                shutil.copyfileobj(fh, out)
        out.flush()
        os.fsync(out.fileno())
    tmp.replace(target)


def run_quality(manifest: Mapping[str, Any], rows: Sequence[Row], run_root: Path) -> dict[str, Any]:
    workload, note = _workload(manifest)
    qdir = run_root / "quality"
    qdir.mkdir(exist_ok=True)
    tallies, parts = _score_to_files(rows, workload, _max_tokens(manifest), qdir)
    baseline = str(manifest.get("baseline") or next(iter(tallies), ""))
    out: dict[str, Any] = {"notes": [note] if note else []}
    try:
        if tallies and baseline in tallies:
            confidence = 0.95
            rates = {arm: tally.rates(confidence) for arm, tally in tallies.items()}
            out.update(summary_of_rates(rates, baseline, confidence))
            _join(parts, qdir / "scores.jsonl")
    finally:
        for part in parts.values():
            part.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # only when empty: no scores and no ppl.json
            qdir.rmdir()
    ppl = run_root / "quality" / "ppl.json"
    if ppl.exists():
        try:
            out["ppl"] = json.loads(ppl.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            out["notes"].append(f"quality/ppl.json cannot be read ({exc})")
    return out
