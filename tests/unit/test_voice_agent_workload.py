"""The voice-agent built-in: the Reachy Mini agent's own eight tools, balanced prompts, and
expectations that follow the tools' schema (issue 16).

The tools are pinned by the canonical hash of the upstream file (github.com/thc1006/
reachy-mini-agent @ a909075, tool_specs_robot_tools.json) so this test needs no copy of it; the
expectations are checked through the real tool scorer with the replies a right and a wrong
model would give.
"""

# ruff: noqa: RUF001, RUF003  (CJK punctuation is the test data)

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from typing import Any

import pytest

from servelab.cli.main import main
from servelab.scoring.script import classify
from servelab.scoring.toolcalls import score_tool
from servelab.workloads import Workload, load_workload

# sha256 of json.dumps(<the upstream list of 8 tools>, sort_keys=True, separators=(",", ":"),
# ensure_ascii=False), computed from the file at a909075.
UPSTREAM_TOOLS_SHA256 = "086f9e336bb62c744ed32b6570023ffa5574e3ad3d3ba4b8e6307dcdbe1e4720"
TOOLS = {
    "move_head", "play_emotion", "stop_motion", "get_current_time", "see_what", "find_in_view",
    "count_items", "recall_memory",
}  # fmt: skip


@pytest.fixture(scope="module")
def voice() -> Workload:
    return load_workload("voice-agent")


def _row(name: str, arguments: dict[str, Any] | str, text: str = "") -> dict[str, Any]:
    args = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"text": text, "tool_calls": [{"index": 0, "name": name, "arguments": args}]}


def _outcome(voice: Workload, prompt_id: str, row: dict[str, Any]) -> str:
    return str(score_tool(row, voice.prompt_by_id(prompt_id), voice)["outcome"])


def test_the_tools_are_the_agents_own_eight_exactly(voice: Workload) -> None:
    tools = [tool.model_dump(mode="json") for tool in voice.tools]
    text = json.dumps(tools, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert hashlib.sha256(text.encode("utf-8")).hexdigest() == UPSTREAM_TOOLS_SHA256
    assert {tool.name for tool in voice.tools} == TOOLS


def test_prompts_are_balanced_small_talk_and_commands_in_both_languages(voice: Workload) -> None:
    kinds = Counter((item.lang, item.expect.kind) for item in voice.prompts)
    assert kinds == {("zh-TW", "no_tool"): 8, ("en", "no_tool"): 4, ("zh-TW", "tool"): 9,
                     ("en", "tool"): 9}  # fmt: skip
    assert all(item.tools is None for item in voice.prompts)  # every prompt offered all eight
    for lang in ("zh-TW", "en"):
        expected = {item.expect.tool for item in voice.prompts
                    if item.lang == lang and item.expect.kind == "tool"}  # fmt: skip
        assert expected == TOOLS, lang  # every tool asked for in both languages


def test_every_kind_appears_within_the_first_few_prompts(voice: Workload) -> None:
    first = {(item.lang, item.expect.kind) for item in voice.prompts[:6]}
    assert first == {("zh-TW", "no_tool"), ("zh-TW", "tool"), ("en", "tool")}


def test_chinese_is_written_in_traditional_characters(voice: Workload) -> None:
    texts = [m.content for item in voice.prompts if item.lang == "zh-TW"
             for m in item.messages or []]  # fmt: skip
    texts += [voice.systems["full"]]
    for text in texts:
        assert classify(text)["class"] in ("traditional", "neutral"), text


def test_the_two_system_prompts_are_a_stub_and_one_with_call_and_no_call_examples(
    voice: Workload,
) -> None:
    assert voice.system_variants == ("default", "stub", "full")
    assert voice.system == voice.systems["stub"]
    assert len(voice.systems["stub"].splitlines()) == 4
    full = voice.systems["full"]
    calls = re.findall(r'^User: .+ -> \{"name": "(\w+)", "arguments": ', full, flags=re.MULTILINE)
    no_calls = re.findall(r"^User: .+ -> no tool", full, flags=re.MULTILINE)
    assert set(calls) == TOOLS and len(no_calls) >= 3
    examples = {line.split(" -> ")[0].removeprefix("User: ") for line in full.splitlines()
                if line.startswith("User: ")}  # fmt: skip
    prompts = {m.content for item in voice.prompts for m in item.messages or []}
    assert not examples & prompts  # the examples teach; they are not the test prompts


def test_head_directions_follow_the_schemas_sign_conventions(voice: Workload) -> None:
    head = next(tool for tool in voice.tools if tool.name == "move_head").function.properties
    assert "(+right)" in str(head["yaw"]["description"])
    assert "(+down)" in str(head["pitch"]["description"])
    signs = {item.id: {arg: e.sign for arg, e in (item.expect.args or {}).items()}
             for item in voice.prompts if item.expect.tool == "move_head"}  # fmt: skip
    assert signs == {
        "en-turn-right": {"yaw": "positive"},
        "zh-turn-left": {"yaw": "negative"},
        "zh-look-up": {"pitch": "negative"},
        "en-look-down": {"pitch": "positive"},
    }


@pytest.mark.parametrize(
    ("prompt_id", "right", "wrong"),
    [
        ("zh-turn-left", {"yaw": -20}, {"yaw": 20}),  # the published bench's reply is right
        ("en-turn-right", {"yaw": 15}, {"yaw": -15}),
        ("zh-look-up", {"pitch": -25, "yaw": 0, "roll": 0}, {"pitch": 25}),
        ("en-look-down", {"pitch": 10}, {"pitch": 40}),  # beyond the safe 25 degrees
        ("zh-happy", {"name": "happy"}, {"name": "dance"}),
        ("en-any-emotion", {"name": "curious"}, {"name": "dance"}),
        ("zh-find", {"description": "紅色馬克杯"}, {}),
        ("en-count", {"description": "books"}, {"query": "books"}),
        ("zh-recall", {"query": "書"}, {"max_results": 3}),
    ],
)
def test_argument_expectations_tell_a_right_call_from_a_wrong_one(
    voice: Workload, prompt_id: str, right: dict[str, Any], wrong: dict[str, Any]
) -> None:
    tool = voice.prompt_by_id(prompt_id).expect.tool
    assert tool is not None
    assert _outcome(voice, prompt_id, _row(tool, right)) == "correct"
    assert _outcome(voice, prompt_id, _row(tool, wrong)) == "wrong_args"


def test_small_talk_with_a_call_is_a_false_fire(voice: Workload) -> None:
    # the published dense model's reply to 你好，我是瑞奇。
    assert _outcome(voice, "zh-chat-hello", _row("play_emotion", {"name": "happy"})) == (
        "false_fire"
    )
    reply = {"text": "你好，瑞奇！很高興認識你。", "tool_calls": []}
    assert _outcome(voice, "zh-chat-hello", reply) == "correct_no_call"
    assert _outcome(voice, "zh-time", _row("get_current_time", {})) == "correct"
    assert _outcome(voice, "zh-time", _row("see_what", {})) == "wrong_tool"


def test_servelab_workloads_check_passes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["workloads", "check", "voice-agent"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "voice-agent" in out
