"""Per-arm quality rates and verdicts: known answers, directions, and the trial-ok filter."""

# ruff: noqa: RUF001  (CJK punctuation and typographic quotes are the test data)

from __future__ import annotations

import json
from typing import Any

import pytest

from servelab.scoring import QUALITY_METRICS, quality_summary, score_rows
from servelab.workloads import load_workload

WORKLOAD = load_workload("chat-tools")


def _row(
    prompt_id: str, arm: str, *, text: str = "", calls: list[Any] | None = None, **kw: Any
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "prompt_id": prompt_id,
        "arm": arm,
        "phase": "trial",
        "outcome": "ok",
        "text": text,
    }
    row |= {
        "tool_calls": calls or [],
        "finish_reason": "stop",
        "n_out": 10,
        "invalid_utf8_bytes": 0,
    }
    return row | kw


def _timer(arm: str, ok: bool) -> dict[str, Any]:
    calls = (
        [{"index": 0, "name": "set_timer", "arguments": '{"duration_seconds": 300}'}] if ok else []
    )
    return _row("en-timer-5min", arm, text="" if ok else "Okay!", calls=calls)


def _greeting(arm: str, fires: bool) -> dict[str, Any]:
    calls = [{"index": 0, "name": "get_time", "arguments": "{}"}] if fires else []
    return _row("en-greeting", arm, text="Hello!", calls=calls)


def _rows() -> list[dict[str, Any]]:
    rows = [_timer("base", i < 3) for i in range(30)] + [_timer("cand", True) for _ in range(30)]
    rows += [_greeting("base", i < 20) for i in range(30)] + [
        _greeting("cand", False) for _ in range(30)
    ]
    rows += [_row("zh-greeting", "base", text="我很好，谢谢你們。") for _ in range(10)]
    rows += [_row("zh-greeting", "cand", text="我很好，謝謝你們。") for _ in range(10)]
    # never counted: warm-ups and failed requests
    rows += [_timer("cand", False) | {"phase": "warmup"} for _ in range(50)]
    rows += [_timer("cand", False) | {"outcome": "timeout"} for _ in range(50)]
    return rows


@pytest.fixture(scope="module")
def summary() -> dict[str, Any]:
    return quality_summary(score_rows(_rows(), WORKLOAD, max_tokens=256), "base", 0.95)


def test_rates_count_only_successful_trials(summary: dict[str, Any]) -> None:
    base, cand = summary["arms"]["base"], summary["arms"]["cand"]
    assert base["n_rows"] == cand["n_rows"] == 70
    assert (base["rates"]["tool_accuracy"]["k"], base["rates"]["tool_accuracy"]["n"]) == (3, 30)
    assert (cand["rates"]["tool_accuracy"]["k"], cand["rates"]["tool_accuracy"]["n"]) == (30, 30)
    assert (base["rates"]["false_fire_rate"]["k"], base["rates"]["false_fire_rate"]["n"]) == (
        20,
        40,
    )
    assert base["rates"]["args_valid_rate"]["n"] == 23  # 3 timers + 20 false fires
    assert base["tool_outcomes"] == {
        "correct": 3,
        "missed": 27,
        "false_fire": 20,
        "correct_no_call": 20,
    }
    rate = base["rates"]["tool_accuracy"]
    assert rate["p"] == pytest.approx(0.1)
    assert rate["ci_low"] < rate["p"] < rate["ci_high"]


def test_script_rates_count_zh_tw_prompts_only(summary: dict[str, Any]) -> None:
    base, cand = summary["arms"]["base"]["rates"], summary["arms"]["cand"]["rates"]
    assert (base["mixed_rate"]["k"], base["mixed_rate"]["n"]) == (10, 10)
    assert base["traditional_rate"]["k"] == 0
    assert base["traditional_rate_after_s2t"]["k"] == 10
    assert (cand["traditional_rate"]["k"], cand["traditional_rate"]["n"]) == (10, 10)


def test_verdicts_follow_each_metric_direction(summary: dict[str, Any]) -> None:
    cand = summary["comparisons"]["cand"]
    assert cand["tool_accuracy"]["verdict"] == "better"  # higher is better: 3/30 -> 30/30
    assert cand["false_fire_rate"]["verdict"] == "better"  # lower is better: 20/40 -> 0/40
    assert cand["mixed_rate"]["verdict"] == "better"
    assert cand["traditional_rate"]["verdict"] == "better"
    assert cand["coherence_flag_rate"]["verdict"] == "no_difference"  # 0/70 each, n large
    assert cand["malformed_rate"]["verdict"] == "no_difference"
    assert cand["tool_accuracy"]["difference"] == pytest.approx(0.9)


def test_swapping_the_baseline_swaps_the_verdicts() -> None:
    swapped = quality_summary(score_rows(_rows(), WORKLOAD, max_tokens=256), "cand")
    assert swapped["comparisons"]["base"]["tool_accuracy"]["verdict"] == "worse"
    assert swapped["comparisons"]["base"]["false_fire_rate"]["verdict"] == "worse"


def test_every_declared_metric_is_reported_and_json_able(summary: dict[str, Any]) -> None:
    names = [m.name for m in QUALITY_METRICS]
    assert list(summary["arms"]["base"]["rates"]) == names
    assert list(summary["comparisons"]["cand"]) == names
    assert len(set(names)) == len(names)
    json.dumps(summary)


def test_empty_populations_are_inconclusive() -> None:
    rows = [_timer("a", True), _timer("b", True)]
    result = quality_summary(score_rows(rows, WORKLOAD, max_tokens=None), "a")
    assert result["arms"]["a"]["rates"]["traditional_rate"]["p"] is None
    assert result["comparisons"]["b"]["traditional_rate"]["verdict"] == "inconclusive"


def test_unknown_baseline_is_an_error() -> None:
    with pytest.raises(ValueError, match="baseline arm 'nope'"):
        quality_summary({"a": []}, "nope")
