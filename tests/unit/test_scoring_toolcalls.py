"""Tool-call scoring: argument expectations (equals, one_of, min, max, sign), JSON equality,
schema validation and the outcomes when no workload or no expectation is known."""

from __future__ import annotations

from typing import Any

import pytest

from servelab.scoring.toolcalls import score_tool
from servelab.workloads import ArgExpectation, Workload, parse_workload

THERMO_YAML = """\
schema_version: 1
name: thermo
version: "1.0"
description: One tool with numeric arguments.
tools:
  - type: function
    function:
      name: set_temperature
      description: Set the thermostat.
      parameters:
        type: object
        properties:
          celsius: {type: number}
          offset: {type: integer}
          mode: {type: string}
        required: [celsius]
prompts:
  - id: warm
    messages: [{role: user, content: "Set it to 21.5 degrees, offset up, mode eco."}]
    expect:
      kind: tool
      tool: set_temperature
      args:
        celsius: {min: 18, max: 24}
        offset: {sign: positive}
        mode: {one_of: ["eco", "comfort"]}
  - id: raw
    prompt: "Once upon a time"
    expect: {kind: text}
  - id: chat
    messages: [{role: user, content: "Hello"}]
    expect: {kind: no_tool}
"""


@pytest.fixture(scope="module")
def thermo() -> Workload:
    return parse_workload(THERMO_YAML, source="test")


def _row(arguments: str, name: str = "set_temperature", text: str = "") -> dict[str, Any]:
    return {"text": text, "tool_calls": [{"index": 0, "name": name, "arguments": arguments}]}


def _checks(thermo: Workload, arguments: str) -> dict[str, bool]:
    result = score_tool(_row(arguments), thermo.prompt_by_id("warm"), thermo)
    return {c["arg"]: c["ok"] for c in result["arg_checks"]}


def test_every_expectation_holds(thermo: Workload) -> None:
    result = score_tool(
        _row('{"celsius": 21.5, "offset": 2, "mode": "eco"}'), thermo.prompt_by_id("warm"), thermo
    )
    assert result["outcome"] == "correct"
    assert result["args_valid"] is True


@pytest.mark.parametrize(
    ("arguments", "failing"),
    [
        ('{"celsius": 17.9, "offset": 2, "mode": "eco"}', "celsius"),  # below min
        ('{"celsius": 24.1, "offset": 2, "mode": "eco"}', "celsius"),  # above max
        ('{"celsius": 18, "offset": 0, "mode": "eco"}', "offset"),  # 0 is not positive
        ('{"celsius": 18, "offset": -1, "mode": "eco"}', "offset"),
        ('{"celsius": 20, "offset": 1, "mode": "turbo"}', "mode"),  # not one of
        ('{"celsius": 20, "mode": "eco"}', "offset"),  # missing
    ],
)
def test_each_expectation_can_fail(thermo: Workload, arguments: str, failing: str) -> None:
    checks = _checks(thermo, arguments)
    assert [arg for arg, ok in checks.items() if not ok] == [failing]
    result = score_tool(_row(arguments), thermo.prompt_by_id("warm"), thermo)
    assert result["outcome"] == "wrong_args"
    assert failing in result["reason"]


def test_bounds_hold_at_the_edges(thermo: Workload) -> None:
    assert all(_checks(thermo, '{"celsius": 18, "offset": 1, "mode": "comfort"}').values())
    assert all(_checks(thermo, '{"celsius": 24.0, "offset": 1, "mode": "comfort"}').values())


def test_a_string_number_fails_numeric_checks_and_schema(thermo: Workload) -> None:
    result = score_tool(
        _row('{"celsius": "20", "offset": 1, "mode": "eco"}'), thermo.prompt_by_id("warm"), thermo
    )
    assert result["args_valid"] is False
    assert "expected a number" in result["reason"]


def test_json_equality_is_not_python_equality() -> None:
    from servelab.scoring.toolcalls import _same, _value_problems

    assert _same(300, 300.0)
    assert not _same(1, True) and not _same(True, 1) and _same(True, True)
    assert _value_problems(300.0, ArgExpectation(equals=300)) == []
    assert _value_problems(True, ArgExpectation(min=0)) == ["expected a number"]
    assert _value_problems(float("nan"), ArgExpectation(max=1)) == ["expected a number"]


def test_arguments_that_are_not_an_object_break_the_schema(thermo: Workload) -> None:
    result = score_tool(_row("[21.5]"), thermo.prompt_by_id("warm"), thermo)
    assert result["outcome"] == "wrong_args"
    assert result["args_valid"] is False


def test_prompts_offered_no_tools_are_not_counted(thermo: Workload) -> None:
    raw = score_tool({"text": "there was a cat"}, thermo.prompt_by_id("raw"), thermo)
    assert raw["outcome"] == "not_applicable"
    chat = score_tool({"text": "Hi!"}, thermo.prompt_by_id("chat"), thermo)
    assert chat["outcome"] == "correct_no_call"


def test_without_a_workload_names_are_matched_but_not_validated(thermo: Workload) -> None:
    item = thermo.prompt_by_id("warm")
    result = score_tool(_row('{"celsius": 21, "offset": 1, "mode": "eco"}'), item, None)
    assert result["outcome"] == "correct"
    assert result["args_valid"] is None
    assert result["malformed"] == []


def test_no_tool_call_at_all_is_missed_not_malformed(thermo: Workload) -> None:
    # SmolLM2's template drops tools: it answers in words, which is a miss, never a crash.
    result = score_tool(
        {"text": "Sure, setting it to 21.5.", "tool_calls": []}, thermo.prompt_by_id("warm"), thermo
    )
    assert result["outcome"] == "missed"
    assert result["called"] == [] and result["malformed"] == []
