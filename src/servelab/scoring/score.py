"""Scoring one stored row: the tool, script and coherence verdicts together.

Owns ``score_row`` (one ``requests.jsonl`` row -> one JSON-able ``RowScore`` with
``scorer_version``) and ``score_rows`` (a run's rows, grouped by arm, ready for
``aggregate.quality_summary``). The prompt's expectation comes from the workload by
``prompt_id``; a row whose prompt the workload does not hold is scored without one.

Pure: no I/O. Must not aggregate (``aggregate``) or decide verdicts between arms.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from servelab.scoring.aggregate import Scored, counts_ok
from servelab.scoring.coherence import score_coherence
from servelab.scoring.records import RowScore
from servelab.scoring.script import score_script
from servelab.scoring.toolcalls import score_tool
from servelab.workloads.schema import PromptItem, Workload

SCORER_VERSION = 1
"""Bumped whenever a scorer's rules change, so stored scores from older rules are told apart."""


def score_row(
    row: Mapping[str, Any],
    item: PromptItem | None,
    workload: Workload | None,
    *,
    max_tokens: int | None,
) -> RowScore:
    """Score one row: ``tool`` always, ``script`` for a Chinese prompt or a reply with Han
    characters, ``coherence`` always. ``item.max_tokens`` wins over ``max_tokens``."""
    lang = item.lang if item is not None else None
    limit = item.max_tokens if item is not None and item.max_tokens is not None else max_tokens
    prompt_id = row.get("prompt_id")
    tool = score_tool(row, item, workload)
    script = score_script(str(row.get("text") or ""), lang)
    coherence = score_coherence(row, lang=lang, max_tokens=limit)
    if script is None:
        return {"scorer_version": SCORER_VERSION, "prompt_id": prompt_id, "tool": tool,
                "coherence": coherence}  # fmt: skip
    return {"scorer_version": SCORER_VERSION, "prompt_id": prompt_id, "tool": tool,
            "script": script, "coherence": coherence}  # fmt: skip


def score_rows(
    rows: Iterable[Mapping[str, Any]], workload: Workload | None, *, max_tokens: int | None
) -> dict[str, list[Scored]]:
    """Score the successful trial rows of a run, grouped by arm in first-seen order."""
    items = workload.scoring_items() if workload is not None else {}
    by_arm: dict[str, list[Scored]] = {}
    for row in rows:
        if not counts_ok(row):
            continue
        item = items.get(str(row.get("prompt_id")))
        scored = (row, score_row(row, item, workload, max_tokens=max_tokens))
        by_arm.setdefault(str(row.get("arm")), []).append(scored)
    return by_arm
