"""Workloads: built-ins validate, the content hash is stable, and bad files fail in one line."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from servelab.errors import UsageError, WorkloadError
from servelab.workloads import (
    Workload,
    list_builtin,
    load_workload,
    parse_workload,
)

BUILTINS = ["agent-loop", "chat-tools", "long-prefill", "structured", "voice-agent"]

MINIMAL_YAML = """\
# a comment that must not matter
schema_version: 1
name: tiny
version: "1.0"
description: A tiny workload.
system: Be brief.
tools:
  - type: function
    function:
      name: set_timer
      description: Start a timer.
      parameters:
        type: object
        properties:
          duration_seconds: {type: integer, minimum: 1}
          mode: {type: string, enum: ["on", "off"]}
        required: [duration_seconds]
prompts:
  - id: hello
    lang: en
    messages:
      - {role: user, content: "Hello!"}
    expect: {kind: no_tool}
  - id: timer
    messages:
      - {role: user, content: "Set a timer for 5 minutes."}
    expect:
      kind: tool
      tool: set_timer
      args:
        duration_seconds: {equals: 300}
"""

# The same content, reformatted: other indentation, flow style, key order, no comments.
REFORMATTED_YAML = """\
prompts:
- expect: {kind: no_tool}
  id: hello
  messages: [{content: "Hello!", role: user}]
  lang: en
- id: timer
  expect: {args: {duration_seconds: {equals: 300}}, tool: set_timer, kind: tool}
  messages:
  -   role: user
      content: Set a timer for 5 minutes.
name: tiny
schema_version: 1
description: "A tiny workload."
version: '1.0'
system: >-
    Be brief.
tools: [{type: function, function: {name: set_timer, description: Start a timer., parameters: {
  type: object, required: [duration_seconds], properties: {
    mode: {enum: ["on", "off"], type: string},
    duration_seconds: {minimum: 1, type: integer}}}}}]
"""

# Pinned: changing the canonical form changes every recorded run's hash. Update only on purpose.
MINIMAL_HASH = "sha256:8be2ab7eaaffce5dd107335d0b6339a8423d1aca3946800e3bfc49204227e80d"

SIMPLIFIED_ONLY = set("这们个时钟灯开乐设计说吗么几点气厅卧调请谢给听欢为觉应该发帮")


def minimal() -> dict[str, Any]:
    data = yaml.safe_load(MINIMAL_YAML)
    assert isinstance(data, dict)
    return data


def load_text(tmp_path: Path, text: str, name: str = "my.yaml") -> Workload:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return load_workload(str(path))


def error_of(tmp_path: Path, text: str, name: str = "my.yaml") -> str:
    with pytest.raises(WorkloadError) as info:
        load_text(tmp_path, text, name)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"workload {tmp_path / name}: ")
    return message.removeprefix(f"workload {tmp_path / name}: ")


def dump(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)


# --- built-ins --------------------------------------------------------------------------------


def test_list_builtin_names_the_builtins() -> None:
    assert list_builtin() == BUILTINS


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_loads_with_its_own_name_and_version(name: str) -> None:
    workload = load_workload(name)
    schema = 2 if name == "agent-loop" else 1  # sessions need schema_version 2
    assert (workload.name, workload.version, workload.schema_version) == (name, "1.0", schema)
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", workload.content_hash)


# A built-in's content may only change together with its version. When you change one on
# purpose, bump its version and update this table and the one in docs/workloads.md.
BUILTIN_HASHES = {
    "agent-loop": (
        "1.0",
        "sha256:ed07c9ce35cf49d2668d7e8a946d6e964cc63dd7e48d68c0a3285080185de401",
    ),
    "chat-tools": (
        "1.0",
        "sha256:2b1029fde7038289eceec545620b7397d1dcc617f16452efdf2ca3d7662b19fd",
    ),
    "long-prefill": (
        "1.0",
        "sha256:9dedad5ab1031484ef5c0b29946240f2d6af7fd7df600ed3b34099d07b20f9dc",
    ),
    "structured": (
        "1.0",
        "sha256:b975ab3cba7e0361d13380629707a2a269a0fff0115de4c80d4a32e66b66fdc2",
    ),
    "voice-agent": (
        "1.0",
        "sha256:1ce6045d71feba97e8425b553326d054aec9347be8c5b54b4ab979a559216c21",
    ),
}


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_content_changes_only_with_a_version_bump(name: str) -> None:
    workload = load_workload(name)
    assert (workload.version, workload.content_hash) == BUILTIN_HASHES[name]


def test_docs_list_the_current_builtin_hashes() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "workloads.md").read_text(encoding="utf-8")
    for name, (_, content_hash) in BUILTIN_HASHES.items():
        assert f"`{name}`" in docs and content_hash in docs, name


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_hash_is_stable_across_loads(name: str) -> None:
    assert load_workload(name).content_hash == load_workload(name).content_hash


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_hash_survives_conversion_to_json_and_back(name: str, tmp_path: Path) -> None:
    workload = load_workload(name)
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(workload.model_dump(mode="json"), indent=3), encoding="utf-8")
    assert load_workload(path).content_hash == workload.content_hash


@pytest.mark.parametrize("name", BUILTINS)
def test_builtin_tools_have_object_schemas_and_args_name_parameters(name: str) -> None:
    workload = load_workload(name)
    for tool in workload.tools:
        params = tool.function.parameters
        properties = params.get("properties", {})
        assert params["type"] == "object"
        assert isinstance(properties, dict)
        required = params.get("required", [])
        assert isinstance(required, list)
        assert {str(name) for name in required} <= set(properties)
        for prop in properties.values():
            assert isinstance(prop, dict) and "type" in prop and "description" in prop
    tools = {tool.name: tool for tool in workload.tools}
    for item in workload.prompts:
        if item.expect.tool is None:
            continue
        assert item.expect.tool in {t["function"]["name"] for t in workload.tools_for(item)}
        for arg in item.expect.args or {}:
            assert arg in tools[item.expect.tool].function.properties, (item.id, arg)


JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
}


def test_chat_tools_arg_values_have_the_parameter_type_and_range() -> None:
    workload = load_workload("chat-tools")
    tools = {tool.name: tool for tool in workload.tools}
    for item in workload.prompts:
        for arg, expect in (item.expect.args or {}).items():
            assert item.expect.tool is not None
            schema = tools[item.expect.tool].function.properties[arg]
            values = [expect.equals] if expect.equals is not None else []
            for value in [*values, *(expect.one_of or [])]:
                assert isinstance(value, JSON_TYPES[schema["type"]]), (item.id, arg, value)
                if schema["type"] == "integer":
                    assert not isinstance(value, bool)
                    assert schema.get("minimum", value) <= value <= schema.get("maximum", value)


@pytest.mark.parametrize("lang", ["en", "zh-TW"])
def test_chat_tools_has_required_counts_per_language(lang: str) -> None:
    items = [p for p in load_workload("chat-tools").prompts if p.lang == lang]
    kinds = [p.expect.kind for p in items]
    assert len(items) >= 12
    assert kinds.count("no_tool") >= 6
    assert kinds.count("tool") >= 6
    assert all(p.is_chat for p in items)
    tool_items = [p for p in items if p.expect.kind == "tool"]
    assert len({p.expect.tool for p in tool_items}) >= 5  # commands spread over the tools
    assert sum(1 for p in tool_items if p.expect.args) >= 5


def test_chat_tools_zh_tw_prompts_use_traditional_characters() -> None:
    workload = load_workload("chat-tools")
    for item in workload.prompts:
        text = "".join(m["content"] for m in workload.chat_messages(item)[1:])
        has_cjk = re.search(r"[\u4e00-\u9fff]", text) is not None
        assert has_cjk == (item.lang == "zh-TW"), item.id
        assert not SIMPLIFIED_ONLY & set(text), (item.id, SIMPLIFIED_ONLY & set(text))


def test_chat_tools_has_six_tools_and_the_voice_system_prompt() -> None:
    workload = load_workload("chat-tools")
    assert len(workload.tools) == 6
    assert workload.system is not None and "voice assistant" in workload.system
    state = workload.tools[3].function.properties["state"]
    assert state["enum"] == ["on", "off"]  # quoted in YAML: must not become booleans


def test_structured_prompts_carry_a_20_to_60_line_code_block() -> None:
    workload = load_workload("structured")
    assert len(workload.prompts) >= 10
    assert workload.tools == []
    for item in workload.prompts:
        assert item.expect.kind == "text"
        assert workload.tools_for(item) == []
        content = workload.chat_messages(item)[-1]["content"]
        block = re.search(r"```\w*\n(.*?)```", content, re.DOTALL)
        assert block is not None, item.id
        assert 20 <= block.group(1).count("\n") <= 60, item.id


def test_long_prefill_prompts_are_long_with_short_answers() -> None:
    workload = load_workload("long-prefill")
    assert len(workload.prompts) >= 4
    assert workload.tools == []
    for item in workload.prompts:
        assert (item.expect.kind, item.max_tokens) == ("text", 64)
        # ~4.6 characters per SmolLM2 token; measured counts are in docs/workloads.md.
        assert len(workload.chat_messages(item)[-1]["content"]) >= 9_500, item.id


# --- content hash -----------------------------------------------------------------------------


def test_hash_is_sha256_of_the_canonical_json() -> None:
    workload = Workload.model_validate(minimal())
    canonical = json.dumps(
        workload.model_dump(mode="json", exclude_defaults=True),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    assert workload.canonical_json == canonical
    assert workload.content_hash == "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()
    assert workload.content_hash == MINIMAL_HASH


def test_reformatting_the_yaml_keeps_the_hash(tmp_path: Path) -> None:
    original = load_text(tmp_path, MINIMAL_YAML, "a.yaml")
    reformatted = load_text(tmp_path, REFORMATTED_YAML, "b.yml")
    assert reformatted == original
    assert reformatted.content_hash == original.content_hash == MINIMAL_HASH


def test_spelling_out_a_default_keeps_the_hash() -> None:
    data = minimal()
    data["prompts"][1]["expect"]["args"]["duration_seconds"]["min"] = None
    data["prompts"][0]["tools"] = None
    data["prompts"][0]["max_tokens"] = None
    assert Workload.model_validate(data).content_hash == MINIMAL_HASH


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d["prompts"][0]["messages"][0].update(content="Hello."),
        lambda d: d["prompts"][1]["expect"]["args"]["duration_seconds"].update(equals=301),
        lambda d: d["prompts"][0].update(max_tokens=64),
        lambda d: d["prompts"][0].update(tools=[]),
        lambda d: d.update(system="Be brief!"),
        lambda d: d.update(version="1.1"),
        lambda d: d["tools"][0]["function"].update(description="Start a countdown."),
        lambda d: d["prompts"].reverse(),
    ],
)
def test_any_content_change_changes_the_hash(change: Any) -> None:
    data = minimal()
    change(data)
    assert Workload.model_validate(data).content_hash != MINIMAL_HASH


@settings(max_examples=20, deadline=None)
@given(
    flow=st.booleans(),
    sort_keys=st.booleans(),
    indent=st.integers(min_value=2, max_value=8),
    width=st.integers(min_value=40, max_value=200),
)
def test_any_yaml_layout_of_a_builtin_keeps_its_hash(
    flow: bool, sort_keys: bool, indent: int, width: int
) -> None:
    workload = load_workload("chat-tools")
    text = yaml.safe_dump(
        workload.model_dump(mode="json"),
        default_flow_style=flow,
        sort_keys=sort_keys,
        indent=indent,
        width=width,
        allow_unicode=True,
    )
    assert parse_workload(text, source="x").content_hash == workload.content_hash


# --- JSONL ------------------------------------------------------------------------------------


def jsonl_of(data: dict[str, Any]) -> str:
    header = {key: value for key, value in data.items() if key != "prompts"}
    lines = [json.dumps(header), ""] + [json.dumps(p, ensure_ascii=False) for p in data["prompts"]]
    return "\n".join(lines) + "\n"


def test_jsonl_loads_to_the_same_workload_and_hash(tmp_path: Path) -> None:
    workload = load_text(tmp_path, jsonl_of(minimal()), "tiny.jsonl")
    assert [p.id for p in workload.prompts] == ["hello", "timer"]
    assert workload.content_hash == MINIMAL_HASH


def test_jsonl_error_names_the_line_of_the_bad_prompt(tmp_path: Path) -> None:
    data = minimal()
    data["prompts"][1]["expect"]["tool"] = "set_alarm"
    message = error_of(tmp_path, jsonl_of(data), "tiny.jsonl")
    assert message.startswith("line 4: prompts.1.expect.tool: tool 'set_alarm' is not defined")


def test_jsonl_header_must_not_hold_prompts(tmp_path: Path) -> None:
    text = json.dumps(minimal()) + "\n"
    assert "the header line must not hold prompts" in error_of(tmp_path, text, "x.jsonl")


def test_jsonl_syntax_error_names_the_file_line(tmp_path: Path) -> None:
    text = jsonl_of(minimal()) + '{"id": "broken",\n'
    assert error_of(tmp_path, text, "x.jsonl").startswith("line 5, column 17: JSON syntax error")


# --- one-line errors with the field path ------------------------------------------------------


def yaml_error(tmp_path: Path, change: Any) -> str:
    data = minimal()
    change(data)
    return error_of(tmp_path, dump(data))


def test_unknown_key_names_its_path_and_the_allowed_keys(tmp_path: Path) -> None:
    message = yaml_error(tmp_path, lambda d: d["prompts"][1]["expect"].update(kindd="tool"))
    assert message == (
        "prompts.1.expect.kindd: unknown key 'kindd'; remove it or fix its spelling "
        "(allowed: kind, tool, args)"
    )


def test_missing_expect_tool(tmp_path: Path) -> None:
    message = yaml_error(tmp_path, lambda d: d["prompts"][1]["expect"].pop("tool"))
    assert message.startswith("prompts.1.expect.tool: kind is 'tool' but no tool is named")


def test_unknown_tool_name(tmp_path: Path) -> None:
    message = yaml_error(tmp_path, lambda d: d["prompts"][1]["expect"].update(tool="set_alarm"))
    assert message == (
        "prompts.1.expect.tool: tool 'set_alarm' is not defined in tools; define it under "
        "tools or fix the name (defined: set_timer)"
    )


def test_duplicate_id(tmp_path: Path) -> None:
    message = yaml_error(tmp_path, lambda d: d["prompts"][1].update(id="hello"))
    assert message.startswith("prompts.1.id: duplicate id 'hello' (first used at prompts.0)")


def test_both_messages_and_prompt(tmp_path: Path) -> None:
    message = yaml_error(tmp_path, lambda d: d["prompts"][0].update(prompt="Hello"))
    assert message.startswith("prompts.0: has both messages and prompt; keep one")


def test_neither_messages_nor_prompt(tmp_path: Path) -> None:
    message = yaml_error(tmp_path, lambda d: d["prompts"][0].pop("messages"))
    assert message == "prompts.0: has neither messages nor prompt; add one"


def test_bad_yaml_syntax_names_the_line(tmp_path: Path) -> None:
    text = MINIMAL_YAML.replace("description: A tiny workload.", "description: [unclosed")
    message = error_of(tmp_path, text)
    assert re.match(r"line \d+, column \d+: YAML syntax error: ", message), message
    line = int(message.split()[1].rstrip(","))
    assert 5 <= line <= 7  # the broken line is 5; the parser notices within two lines


def test_duplicate_yaml_key_is_an_error_not_a_silent_overwrite(tmp_path: Path) -> None:
    text = MINIMAL_YAML.replace("name: tiny\n", "name: tiny\nname: other\n")
    assert error_of(tmp_path, text) == ("line 4, column 1: YAML syntax error: duplicate key 'name'")


def test_unknown_builtin_name_lists_builtins_and_mentions_paths() -> None:
    with pytest.raises(WorkloadError) as info:
        load_workload("chat-toolz")
    assert str(info.value) == (
        "unknown workload 'chat-toolz'; built-ins: agent-loop, chat-tools, long-prefill, "
        "structured, voice-agent; a path to a .yaml, .yml, .json or .jsonl file also works"
    )


def test_several_errors_report_the_first_and_count_the_rest(tmp_path: Path) -> None:
    def change(d: dict[str, Any]) -> None:
        d["prompts"][0]["expect"]["kind"] = "maybe"
        d["prompts"][1]["lang"] = 7
        d.pop("description")

    message = yaml_error(tmp_path, change)
    assert message == "description: required key is missing; add it (and 2 more)"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda d: d["prompts"][1]["expect"]["args"].update(seconds={"equals": 1}),
            "prompts.1.expect.args.seconds: 'seconds' is not a parameter of tool 'set_timer' "
            "(parameters: duration_seconds, mode)",
        ),
        (
            lambda d: d["prompts"][1]["expect"]["args"].update(mode={"equals": "dim"}),
            "prompts.1.expect.args.mode.equals: 'dim' is not in the enum of 'mode' ('on', 'off')",
        ),
        (
            lambda d: d["prompts"][1]["expect"]["args"]["duration_seconds"].update(equals="300"),
            "prompts.1.expect.args.duration_seconds.equals: '300' is not of type integer, the "
            "type of 'duration_seconds'",
        ),
        (
            lambda d: d["prompts"][1]["expect"]["args"].update(mode={"one_of": ["on", True]}),
            "prompts.1.expect.args.mode.one_of.1: True is not of type string, the type of 'mode'",
        ),
        (
            lambda d: d["prompts"][1]["expect"]["args"].update(mode={"sign": "positive"}),
            "prompts.1.expect.args.mode: min, max and sign need a numeric parameter; 'mode' is "
            "'string'",
        ),
        (
            lambda d: d["prompts"][1].update(tools=[]),
            "prompts.1.expect.tool: tool 'set_timer' is expected but not offered to this "
            "prompt; add it to prompts.1.tools",
        ),
        (
            lambda d: d["prompts"][0].update(tools=["get_time"]),
            "prompts.0.tools.0: tool 'get_time' is not defined in tools; define it under "
            "tools or fix the name (defined: set_timer)",
        ),
        (
            lambda d: d["prompts"][0]["expect"].update(tool="set_timer"),
            "prompts.0.expect.tool: tool is only allowed with kind 'tool' (kind is 'no_tool'); "
            "remove it or set kind: tool",
        ),
        (
            lambda d: d["prompts"][1]["expect"]["args"]["duration_seconds"].update(min=5, max=1),
            "prompts.1.expect.args.duration_seconds.min: min 5 is greater than max 1",
        ),
        (
            lambda d: d["prompts"][0]["expect"].update(kind="maybe"),
            "prompts.0.expect.kind: Input should be 'no_tool', 'tool' or 'text' (got 'maybe')",
        ),
        (
            lambda d: d["prompts"][0].update(max_tokens=0),
            "prompts.0.max_tokens: Input should be greater than or equal to 1 (got 0)",
        ),
        (
            lambda d: d["prompts"][0].update(max_tokens=True),
            "prompts.0.max_tokens: Input should be a valid integer (got True)",
        ),
        (
            lambda d: d["prompts"][0]["messages"].append({"role": "system", "content": "x"}),
            "prompts.0.messages.1.role: a system message may only come first",
        ),
        (
            lambda d: d["tools"][0]["function"]["parameters"].update(required=["seconds"]),
            "tools.0.function.parameters.required.0: 'seconds' is required but not defined "
            "in properties",
        ),
        (
            lambda d: d["tools"][0]["function"]["parameters"].update(type="array"),
            "tools.0.function.parameters.type: must be 'object' (got 'array')",
        ),
        (
            lambda d: d["tools"].append(copy.deepcopy(d["tools"][0])),
            "tools.1.function.name: duplicate tool name 'set_timer' (first defined at tools.0)",
        ),
        (
            lambda d: d.update(schema_version=3),
            "schema_version: schema_version 3 is not supported (this servelab reads 1, 2); "
            "upgrade servelab or convert the file",
        ),
        (
            lambda d: d.update(version=1.0),
            'version: version must be a string; quote it: version: "1.0"',
        ),
        (
            lambda d: d.update(prompts=[]),
            "prompts: the workload has no prompts; add at least one",
        ),
        (
            lambda d: d["prompts"][0].update(lang="english!"),
            "prompts.0.lang: String should match pattern '^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$' "
            "(got 'english!')",
        ),
        (
            lambda d: d["prompts"][1].update(prompt="Set a timer", messages=None),
            "prompts.1.expect.kind: a raw prompt cannot expect a tool call; use messages",
        ),
    ],
)
def test_each_rule_fails_in_one_line_naming_the_field(
    tmp_path: Path, change: Any, expected: str
) -> None:
    assert yaml_error(tmp_path, change) == expected


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    assert error_of(tmp_path, "- a\n- b\n").startswith("the top level must be a mapping")
    assert error_of(tmp_path, "").endswith("(got nothing)")


def test_file_problems_are_workload_errors(tmp_path: Path) -> None:
    with pytest.raises(WorkloadError, match=r"missing\.yaml: file not found; check the path$"):
        load_workload(str(tmp_path / "missing.yaml"))
    with pytest.raises(WorkloadError, match=r"unsupported file type '\.txt'; use \.yaml"):
        load_workload(tmp_path / "notes.txt")


def test_workload_error_is_a_usage_error_with_exit_code_2() -> None:
    with pytest.raises(UsageError) as info:
        load_workload("nope")
    assert info.value.exit_code == 2


def test_yaml_on_off_yes_no_and_dates_stay_strings(tmp_path: Path) -> None:
    data = minimal()
    data["prompts"][0]["messages"][0]["content"] = "PLACEHOLDER"
    text = dump(data).replace("PLACEHOLDER", "2025-01-01").replace("'on'", "on")
    workload = load_text(tmp_path, text.replace("'off'", "off"))
    assert workload.prompts[0].messages is not None
    assert workload.prompts[0].messages[0].content == "2025-01-01"
    assert workload.tools[0].function.properties["mode"]["enum"] == ["on", "off"]


# --- model behaviour --------------------------------------------------------------------------


def test_models_are_frozen() -> None:
    workload = Workload.model_validate(minimal())
    with pytest.raises(ValidationError):
        workload.name = "other"


def test_chat_messages_prepend_the_system_prompt_unless_the_item_has_one() -> None:
    data = minimal()
    data["prompts"][1]["messages"].insert(0, {"role": "system", "content": "Own."})
    workload = Workload.model_validate(data)
    assert workload.chat_messages(workload.prompts[0]) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello!"},
    ]
    assert workload.chat_messages(workload.prompt_by_id("timer"))[0] == {
        "role": "system",
        "content": "Own.",
    }


def test_chat_messages_returns_fresh_dicts() -> None:
    workload = Workload.model_validate(minimal())
    workload.chat_messages(workload.prompts[0])[1]["content"] = "changed"
    assert workload.chat_messages(workload.prompts[0])[1]["content"] == "Hello!"


def test_raw_prompt_has_no_chat_messages_and_no_tools() -> None:
    data = minimal()
    data["prompts"][0] = {"id": "raw", "prompt": "Once upon a time", "expect": {"kind": "text"}}
    workload = Workload.model_validate(data)
    raw = workload.prompt_by_id("raw")
    assert not raw.is_chat
    assert workload.tools_for(raw) == []
    with pytest.raises(ValueError, match="raw completion prompt"):
        workload.chat_messages(raw)


def test_tools_for_none_all_and_subset() -> None:
    data = minimal()
    second = copy.deepcopy(data["tools"][0])
    second["function"]["name"] = "get_time"
    data["tools"].append(second)
    data["prompts"][0]["tools"] = []
    data["prompts"][1]["tools"] = ["set_timer"]
    workload = Workload.model_validate(data)
    names = [t["function"]["name"] for t in workload.tools_for(workload.prompts[1])]
    assert names == ["set_timer"]
    assert workload.tools_for(workload.prompts[0]) == []
    data["prompts"][0]["tools"] = None
    everything = Workload.model_validate(data)
    names = [t["function"]["name"] for t in everything.tools_for(everything.prompts[0])]
    assert names == ["set_timer", "get_time"]
    assert everything.tools_for(everything.prompts[0])[0] == data["tools"][0]


def test_model_copy_with_an_update_gets_a_fresh_hash() -> None:
    workload = Workload.model_validate(minimal())
    assert workload.content_hash == MINIMAL_HASH
    assert workload.model_copy(update={"version": "2.0"}).content_hash != MINIMAL_HASH


def test_prompt_lookup_by_id() -> None:
    workload = Workload.model_validate(minimal())
    assert workload.prompt_by_id("timer").expect.tool == "set_timer"
    with pytest.raises(KeyError):
        workload.prompt_by_id("absent")
