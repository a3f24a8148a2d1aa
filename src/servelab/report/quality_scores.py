"""Scoring every successful trial reply and storing the scores, for ``servelab report``.

Owns ``quality/scores.jsonl`` and the reads behind the summary's ``quality`` section: the
run's workload is loaded again (the copy the run stored, ``inputs/workload.json``, when it has
one, as an import does; else by the name it recorded) and checked against the content hash the
run recorded, each
successful trial row is scored for tool calls, Chinese script and coherence (scoring/) one at a
time into per-arm tallies and part files (so a million rows hold no scores), and
``quality/ppl.json`` is read when ``servelab quality ppl`` wrote it. The rates themselves are
``analysis.quality_rates``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from servelab.analysis.row_selection import Row
from servelab.analysis.settings import RunFacts
from servelab.errors import ServelabError
from servelab.redact import redact_data
from servelab.scoring.aggregate import ArmTally, counts_ok
from servelab.scoring.score import score_row
from servelab.store.perplexity import PerplexityDoc, read_perplexity
from servelab.store.rundir import RunDir
from servelab.workloads import Workload, load_workload


@dataclass(frozen=True, slots=True)
class ScoredRun:
    """Per-arm tallies of the scored replies, notes on how they were scored, and ppl.json."""

    tallies: dict[str, ArmTally]
    notes: list[str] = field(default_factory=list)
    ppl: PerplexityDoc | None = None


def _workload(
    facts: RunFacts, loaded: Workload | None, run_root: Path
) -> tuple[Workload | None, str | None]:
    """The run's workload: the one the caller already loaded for the run (``servelab run``
    reads its inputs once), else the copy stored in the run directory, else loaded by the name
    the run recorded (runs that stored none)."""
    name = facts.workload_name
    if not name:
        return None, "the run records no workload; replies are scored without expectations"
    stored = RunDir(run_root).workload
    try:
        if loaded is not None and loaded.name == name:
            workload = loaded
        else:
            workload = load_workload(stored if stored.is_file() else name)
    except ServelabError as exc:
        return None, f"workload {name!r} cannot be loaded ({exc}); scored without expectations"
    recorded = facts.workload_hash
    if recorded and recorded != workload.content_hash:
        return None, (
            f"workload {name!r} changed since the run ({recorded} vs {workload.content_hash}); "
            "scored without expectations"
        )
    return workload, None


def _score_to_files(
    rows: Sequence[Row], workload: Workload | None, max_tokens: int | None, qdir: Path
) -> tuple[dict[str, ArmTally], dict[str, Path]]:
    """Score each successful trial row once: count it in its arm's tally and append its line
    to the arm's part file (so no score is held; scores.jsonl lists arms in first-seen order)."""
    items = workload.scoring_items() if workload is not None else {}
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


def unscored_notes(rows: Sequence[Row], workload: Workload | None) -> list[str]:
    """One note per arm with failed trial requests: they have no reply, so no score, and the
    rates cover only the replies that arrived. A failure can be the model's (llama-server
    answers HTTP 500 when it cannot parse a reply as a tool call) or the engine's; the note
    says how many fell on prompts that expect a tool call, so a reader can bound the rates."""
    items = workload.scoring_items() if workload is not None else {}
    expects = {k: v.expect.kind for k, v in items.items()}
    tool_workload = any(kind != "text" for kind in expects.values())
    failed: dict[str, list[Row]] = {}
    for row in rows:
        if row.get("phase") == "trial" and row.get("outcome") != "ok":
            failed.setdefault(str(row.get("arm")), []).append(row)
    notes = []
    for arm, lost in failed.items():
        outcomes: dict[str, int] = {}
        for r in lost:
            outcomes[str(r.get("outcome"))] = outcomes.get(str(r.get("outcome")), 0) + 1
        what = ", ".join(f"{n} {o}" for o, n in sorted(outcomes.items()))
        kinds = [expects.get(str(r.get("prompt_id"))) for r in lost]
        on = ""
        if tool_workload:
            on = (f", {kinds.count('tool')} on prompts that expect a tool call, "
                  f"{kinds.count('no_tool')} on prompts that must not call one")  # fmt: skip
        notes.append(
            f"{arm}: {len(lost)} failed trial request(s) not scored ({what}{on}); its rates "
            "cover the replies that arrived, so a failure that was the model's (a reply the "
            "engine could not parse) is missing from them: read the rates with the failures"
        )
    return notes


def score_run(facts: RunFacts, rows: Sequence[Row], run_root: Path, baseline: str | None,
              workload: Workload | None = None) -> ScoredRun:  # fmt: skip
    """Score the run's replies, write quality/scores.jsonl (when the baseline has scores) and
    read quality/ppl.json."""
    workload, note = _workload(facts, workload, run_root)
    qdir = run_root / "quality"
    qdir.mkdir(exist_ok=True)
    tallies, parts = _score_to_files(rows, workload, facts.max_tokens, qdir)
    notes = [note] if note else []
    notes.extend(unscored_notes(rows, workload))
    try:
        if tallies and (baseline or next(iter(tallies), "")) in tallies:
            _join(parts, qdir / "scores.jsonl")
    finally:
        for part in parts.values():
            part.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # only when empty: no scores and no ppl.json
            qdir.rmdir()
    path = run_root / "quality" / "ppl.json"
    ppl = read_perplexity(path)
    if ppl is None and path.exists():
        notes.append(
            "quality/ppl.json cannot be read (damaged, or not a format this servelab knows)"
        )
    return ScoredRun(tallies, notes, ppl)
