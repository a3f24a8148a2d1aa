"""Failed trial requests are left out of the quality rates, and the quality notes say so per
arm: how many, their outcomes, and how many fell on prompts that expect a tool call or must
not call one (``report.quality_scores.unscored_notes``), with the built-in voice-agent
workload's own expectations."""

from __future__ import annotations

from servelab.report.quality_scores import unscored_notes
from servelab.workloads import load_workload


def row(arm: str, prompt: str, outcome: str, phase: str = "trial") -> dict[str, object]:
    return {"arm": arm, "prompt_id": prompt, "outcome": outcome, "phase": phase}


def test_each_arm_with_failures_gets_one_note_with_the_expectations_they_fell_on() -> None:
    workload = load_workload("voice-agent")
    items = workload.scoring_items()
    tool = next(k for k, v in items.items() if v.expect.kind == "tool")
    talk = next(k for k, v in items.items() if v.expect.kind == "no_tool")
    rows = [
        row("stub", tool, "http_error"), row("stub", talk, "http_error"),
        row("stub", tool, "timeout"), row("stub", tool, "ok"),
        row("full", tool, "ok"), row("full", talk, "http_error", phase="warmup"),
    ]  # fmt: skip
    notes = unscored_notes(rows, workload)
    assert notes == [
        "stub: 3 failed trial request(s) not scored (2 http_error, 1 timeout, 2 on prompts "
        "that expect a tool call, 1 on prompts that must not call one); its rates cover the "
        "replies that arrived, so a failure that was the model's (a reply the engine could not "
        "parse) is missing from them: read the rates with the failures"
    ]


def test_without_tool_expectations_the_note_only_counts_outcomes() -> None:
    notes = unscored_notes([row("a", "p1", "timeout")], None)
    assert notes == [
        "a: 1 failed trial request(s) not scored (1 timeout); its rates cover the replies that "
        "arrived, so a failure that was the model's (a reply the engine could not parse) is "
        "missing from them: read the rates with the failures"
    ]
    assert unscored_notes([row("a", "p1", "ok")], None) == []
