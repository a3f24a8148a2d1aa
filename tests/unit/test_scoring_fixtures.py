"""Crafted rows (tests/fixtures/scoring/cases.yaml) through ``score_row``: every branch of every
classifier and scorer, each case checked field by field, and the set of cases checked to
cover every outcome, script class and coherence flag kind."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from servelab.scoring import FLAG_KINDS, OUTCOMES, score_row
from servelab.workloads import Workload, load_workload

CASES_PATH = Path(__file__).resolve().parents[1] / "fixtures" / "scoring" / "cases.yaml"
CASES: list[dict[str, Any]] = yaml.safe_load(CASES_PATH.read_text(encoding="utf-8"))
MAX_TOKENS = 256


@pytest.fixture(scope="module")
def workload() -> Workload:
    return load_workload("chat-tools")


def fixture_row(case: dict[str, Any]) -> dict[str, Any]:
    """An ordinary successful trial row, with the case's fields on top."""
    calls = [
        {"index": i, "name": name, "arguments": args, "id": f"call_{i}"}
        for i, (name, args) in enumerate(case.get("calls", []))
    ]
    return {
        "schema_version": 1,
        "arm": "a",
        "block": 0,
        "phase": "trial",
        "outcome": "ok",
        "prompt_id": case["prompt_id"],
        "text": case.get("text", ""),
        "reasoning": case.get("reasoning", ""),
        "tool_calls": calls,
        "finish_reason": case.get("finish_reason", "tool_calls" if calls else "stop"),
        "n_out": case.get("n_out", 24),
        "invalid_utf8_bytes": case.get("invalid_utf8_bytes", 0),
    }


def _score(case: dict[str, Any], workload: Workload) -> dict[str, Any]:
    items = {item.id: item for item in workload.prompts}
    row = fixture_row(case)
    return score_row(row, items.get(case["prompt_id"]), workload, max_tokens=MAX_TOKENS)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_case(case: dict[str, Any], workload: Workload) -> None:
    score = _score(case, workload)
    expect = case["expect"]
    tool = score["tool"]
    assert tool["outcome"] == expect["tool"], tool["reason"]
    if "args_valid" in expect:
        assert tool["args_valid"] is expect["args_valid"], tool
    assert [f["kind"] for f in score["coherence"]["flags"]] == expect["flags"]
    assert score["coherence"]["ok"] is (not expect["flags"])
    assert all(f["reason"] for f in score["coherence"]["flags"])
    if tool["outcome"] not in ("correct", "correct_no_call"):
        assert tool["reason"]
    script = score.get("script")
    if expect["script"] is None:
        assert script is None
        return
    assert script is not None
    assert script["class"] == expect["script"], script["evidence"]
    for kind in ("allowed", "simplified", "variant", "traditional"):
        for char in expect.get(kind, ""):
            assert char in script["evidence"][kind], (kind, char, script["evidence"])
    assert script["after_s2t"]["class"] == expect["after_s2t"]
    if "over_converted" in expect:
        assert script["after_s2t"]["over_converted"] == expect["over_converted"]
    json.dumps(score)  # stored next to the row: must be JSON-able


def test_cases_cover_every_branch(workload: Workload) -> None:
    scores = [_score(case, workload) for case in CASES]
    outcomes = {s["tool"]["outcome"] for s in scores}
    assert outcomes == set(OUTCOMES)
    classes = {s["script"]["class"] for s in scores if "script" in s}
    assert classes == {"traditional", "simplified", "mixed", "neutral", "none"}
    kinds = {f["kind"] for s in scores for f in s["coherence"]["flags"]}
    assert kinds == set(FLAG_KINDS)
    evidence = [s["script"]["evidence"] for s in scores if "script" in s]
    for kind in ("allowed", "simplified", "variant", "traditional"):
        assert any(e[kind] for e in evidence), kind
    assert any(s["script"]["after_s2t"]["over_converted"] for s in scores if "script" in s)
    assert {s["tool"]["args_valid"] for s in scores} == {True, False, None}


def test_the_must_show_fixtures_exist() -> None:
    names = {c["name"] for c in CASES}
    for needed in (
        "script-tai-in-zh-tw-is-allowed",
        "coherence-reply-split-into-mojibake",
        "coherence-repetition-loop",
        "tool-args-break-schema",
    ):
        assert needed in names
