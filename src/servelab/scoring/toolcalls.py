"""Tool-call scoring: did one reply call the expected tool, with arguments that hold?

Owns the per-request tool verdict (docs/quality.md): the outcome vocabulary (``OUTCOMES``), the
malformed-call checks (arguments that are not JSON, a tool name the workload does not define,
tool-call text leaked into the reply's content), JSON Schema validation of the arguments with
``jsonschema`` and the workload's argument expectations (equals, one_of, min, max, sign).

Pure: takes a stored row and the workload's data, returns a JSON-able ``ToolScore``. Must not
read files, speak HTTP or aggregate across rows (``aggregate`` does that).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal, TypedDict

import jsonschema

from servelab.workloads.schema import ArgExpectation, PromptItem, Tool, Workload

ToolOutcome = Literal[
    "correct",  # the expected tool, schema-valid arguments, every argument expectation holds
    "wrong_args",  # the expected tool, but arguments break the schema or an expectation
    "wrong_tool",  # only well-formed calls to other tools
    "missed",  # a tool was expected and nothing was called
    "malformed",  # a tool was expected; the only attempts were malformed
    "false_fire",  # no tool was expected and the reply called (or tried to call) one
    "correct_no_call",  # no tool was expected and none was called
    "not_applicable",  # no expectation known (prompt not in the workload)
]
OUTCOMES: tuple[ToolOutcome, ...] = (
    "correct",
    "wrong_args",
    "wrong_tool",
    "missed",
    "malformed",
    "false_fire",
    "correct_no_call",
    "not_applicable",
)

# Tool-call syntax of common chat templates; seen in content, they mean the engine's tool-call
# parser did not recognise the model's attempt, so the client got text instead of a call.
_LEAK_MARKERS = (
    "<tool_call>",
    "</tool_call>",
    "[TOOL_CALLS]",
    "<|python_tag|>",
    "<function=",
    "<|tool_call",
    "<start_function_call>",
    "functools[",
)
_SIGNS: dict[str, Callable[[float], bool]] = {
    "positive": lambda v: v > 0,
    "negative": lambda v: v < 0,
}


class ArgCheck(TypedDict):
    """One argument expectation checked against the call's parsed arguments."""

    arg: str
    ok: bool
    value: object  # the argument as the model sent it (any JSON value), None when missing
    reason: str


class ToolScore(TypedDict):
    """The tool verdict of one reply, as stored (quality/scores.jsonl)."""

    outcome: ToolOutcome
    expected: str | None
    called: list[str]
    args_valid: bool | None
    schema_error: str | None
    arg_checks: list[ArgCheck]
    malformed: list[str]
    reason: str


@dataclass(frozen=True, slots=True)
class _Verdict:
    """A tool verdict while it is worked out; ``as_json`` keeps the stored key order."""

    outcome: ToolOutcome
    reason: str
    args_valid: bool | None = None
    schema_error: str | None = None
    arg_checks: tuple[ArgCheck, ...] = ()

    def as_json(self, expected: str | None, called: list[str], malformed: list[str]) -> ToolScore:
        return {
            "outcome": self.outcome,
            "expected": expected,
            "called": called,
            "args_valid": self.args_valid,
            "schema_error": self.schema_error,
            "arg_checks": list(self.arg_checks),
            "malformed": malformed,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class _Call:
    """One call as stored in the row, with its arguments parsed (None when they are not JSON)."""

    name: str
    arguments: str
    parsed: Any
    json_error: str | None


def _date_time(value: object) -> bool:
    # ISO 8601 as Python reads it: the workload's own example "2025-05-04T09:00:00" has no
    # offset, which strict RFC 3339 (jsonschema's optional checker) would reject.
    if not isinstance(value, str):
        return True
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return "T" in value or " " in value


_FORMATS = jsonschema.FormatChecker(formats=())
_FORMATS.checks("date-time")(_date_time)


def score_tool(
    row: Mapping[str, Any], item: PromptItem | None, workload: Workload | None
) -> ToolScore:
    """The tool verdict of one row: outcome, argument validity and checks, malformed reasons."""
    tools = {tool.name: tool for tool in workload.tools} if workload is not None else {}
    calls = [_parse_call(c) for c in row.get("tool_calls") or []]
    malformed = _malformed_reasons(calls, tools, workload is not None)
    malformed += _leaks(str(row.get("text") or ""), tools)
    called = [c.name for c in calls]
    verdict = _Verdict("not_applicable", "prompt has no known expectation")
    if item is None:
        return verdict.as_json(None, called, malformed)
    expected = item.expect.tool if item.expect.kind == "tool" else None
    offered = workload is None or bool(workload.tools_for(item))
    if not (offered or calls or malformed):
        # A raw completion or a prompt offered no tool cannot fire one: not a tool test.
        verdict = replace(verdict, reason="no tools offered to this prompt")
        return verdict.as_json(expected, called, malformed)
    good = [c for c in calls if c.json_error is None and (not tools or c.name in tools)]
    if item.expect.kind == "tool":
        assert item.expect.tool is not None  # the schema guarantees it for kind "tool"
        verdict = _expected_call(good, item.expect.tool, item.expect.args or {}, tools)
        if verdict.outcome == "missed" and malformed:
            verdict = replace(verdict, outcome="malformed", reason="; ".join(malformed))
    elif calls or malformed:
        names = ", ".join(c.name for c in calls) or "leaked text"
        verdict = _validity(good[0], tools) if good else verdict
        verdict = replace(verdict, outcome="false_fire", reason=f"no tool expected, got {names}")
    else:
        verdict = replace(
            verdict, outcome="correct_no_call", reason="no tool expected, none called"
        )
    return verdict.as_json(expected, called, malformed)


def _parse_call(raw: Mapping[str, Any]) -> _Call:
    name = str(raw.get("name") or "")
    arguments = str(raw.get("arguments") or "")
    if not arguments.strip():
        # Streams deliver "" for a call without arguments; that is the empty object.
        return _Call(name, arguments, {}, None)
    try:
        return _Call(name, arguments, json.loads(arguments), None)
    except json.JSONDecodeError as exc:
        return _Call(name, arguments, None, f"arguments of '{name}' are not JSON ({exc.msg})")


def _malformed_reasons(calls: Sequence[_Call], tools: Mapping[str, Tool], known: bool) -> list[str]:
    reasons = [c.json_error for c in calls if c.json_error is not None]
    if known:
        reasons += [f"unknown tool '{c.name}'" for c in calls if c.name not in tools]
    return reasons


def _leaks(text: str, tools: Mapping[str, Tool]) -> list[str]:
    found = [m for m in _LEAK_MARKERS if m in text]
    for name in tools:
        as_json = re.search(r'"name"\s*:\s*"' + re.escape(name) + '"', text)
        as_code = re.search(r"\b" + re.escape(name) + r"\s*\(", text)
        found += [name] if as_json or as_code else []
    return [f"tool-call text leaked into content: {', '.join(found)}"] if found else []


def _expected_call(
    good: Sequence[_Call],
    expected: str,
    args: Mapping[str, ArgExpectation],
    tools: Mapping[str, Tool],
) -> _Verdict:
    match = next((c for c in good if c.name == expected), None)
    if match is None and good:
        other = good[0]
        reason = f"expected {expected}, called {other.name}"
        return replace(_validity(other, tools), outcome="wrong_tool", reason=reason)
    if match is None:
        return _Verdict("missed", f"expected {expected}, no tool called")
    validity = _validity(match, tools)
    checks = tuple(_check_arg(name, spec, match.parsed) for name, spec in args.items())
    failed = [c["reason"] for c in checks if not c["ok"]]
    if validity.args_valid is False and validity.schema_error is not None:
        failed.insert(0, validity.schema_error)
    extra = len(good) - 1
    if failed:
        return replace(validity, outcome="wrong_args", arg_checks=checks, reason="; ".join(failed))
    note = f" (plus {extra} other call{'s' if extra > 1 else ''})" if extra else ""
    reason = f"called {expected}{note}"
    return replace(validity, outcome="correct", arg_checks=checks, reason=reason)


def _validity(call: _Call, tools: Mapping[str, Tool]) -> _Verdict:
    """Whether ``call``'s parsed arguments validate against its tool's parameter schema (only
    ``args_valid`` and ``schema_error`` of the result are meant)."""
    tool = tools.get(call.name)
    if tool is None:
        return _Verdict("not_applicable", "")
    validator = jsonschema.Draft202012Validator(tool.function.parameters, format_checker=_FORMATS)
    error = jsonschema.exceptions.best_match(validator.iter_errors(call.parsed))
    if error is None:
        return _Verdict("not_applicable", "", args_valid=True)
    where = "/".join(str(p) for p in error.absolute_path) or "arguments"
    return _Verdict("not_applicable", "", False, f"schema: {where}: {error.message}")


def _check_arg(name: str, spec: ArgExpectation, parsed: Any) -> ArgCheck:
    """One argument expectation against the parsed arguments: ``{arg, ok, value, reason}``."""
    if not isinstance(parsed, dict) or name not in parsed:
        return {"arg": name, "ok": False, "value": None, "reason": f"'{name}' is missing"}
    value = parsed[name]
    problems = _value_problems(value, spec)
    reason = f"'{name}'={json.dumps(value, ensure_ascii=False)}: " + ", ".join(problems)
    return {"arg": name, "ok": not problems, "value": value, "reason": reason if problems else "ok"}


def _value_problems(value: Any, spec: ArgExpectation) -> list[str]:
    problems: list[str] = []
    if spec.equals is not None and not _same(value, spec.equals):
        problems.append(f"expected {json.dumps(spec.equals, ensure_ascii=False)}")
    if spec.one_of is not None and not any(_same(value, v) for v in spec.one_of):
        problems.append(f"expected one of {json.dumps(spec.one_of, ensure_ascii=False)}")
    numeric = spec.min is not None or spec.max is not None or spec.sign is not None
    if numeric and not _is_number(value):
        return [*problems, "expected a number"]
    if spec.min is not None and value < spec.min:
        problems.append(f"below min {spec.min:g}")
    if spec.max is not None and value > spec.max:
        problems.append(f"above max {spec.max:g}")
    if spec.sign is not None and not _SIGNS[spec.sign](value):
        problems.append(f"expected {spec.sign}")
    return problems


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _same(value: Any, expected: Any) -> bool:
    """JSON equality: 300 equals 300.0, but true never equals 1 (Python's bool is an int)."""
    if isinstance(value, bool) or isinstance(expected, bool):
        return isinstance(value, bool) and isinstance(expected, bool) and value == expected
    return bool(value == expected)
