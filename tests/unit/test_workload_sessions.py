"""Workload schema v2: multi-turn sessions validate, hash and fail in one line naming the field;
v1 files load unchanged with the hash they always had."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from servelab.errors import WorkloadError
from servelab.workloads import Workload, load_workload, parse_workload

SESSION_YAML = """\
schema_version: 2
name: desk
version: "1.0"
description: A two-tool help desk.
system: You are a help desk.
tools:
  - type: function
    function:
      name: lookup_order
      description: Look up an order.
      parameters:
        type: object
        properties:
          order_id: {type: string}
        required: [order_id]
  - type: function
    function:
      name: create_ticket
      description: Open a ticket.
      parameters:
        type: object
        properties:
          priority: {type: string, enum: [low, high]}
sessions:
  - id: order
    lang: en
    turns:
      - user: Where is order 123?
        max_tokens: 32
        expect:
          kind: tool
          tool: lookup_order
          args: {order_id: {equals: "123"}}
      - tool_results:
          - tool: lookup_order
            arguments: {order_id: "123"}
            content: {status: shipped}
        think_s: 0.2
        expect: {kind: no_tool}
      - user: Thanks!
        think_s: [1, 3]
  - id: ticket
    tools: [create_ticket]
    system: You open tickets.
    turns:
      - user: I want a person.
"""

# Pinned: the canonical form of a v2 workload. Changing it changes every recorded run's hash.
SESSION_HASH = "sha256:2121bb8916e191236cb1611c9b5d9907058be4c0370cf191befe4a024ff68bb5"


def session_data() -> dict[str, Any]:
    data = yaml.safe_load(SESSION_YAML)
    assert isinstance(data, dict)
    return data


def error(data: dict[str, Any]) -> str:
    with pytest.raises(WorkloadError) as info:
        parse_workload(yaml.safe_dump(data, sort_keys=False), source="w.yaml")
    return str(info.value).removeprefix("workload w.yaml: ")


def test_sessions_load_with_their_turns() -> None:
    workload = parse_workload(SESSION_YAML, source="w.yaml")
    order, ticket = workload.sessions
    assert (order.id, len(order.turns), ticket.tools) == ("order", 3, ["create_ticket"])
    assert order.turns[1].tool_results is not None
    assert order.turns[1].tool_results[0].text == '{"status": "shipped"}'
    assert order.turns[2].think_s == [1, 3]
    assert workload.prompts == []
    assert workload.session_system(order) == "You are a help desk."
    assert workload.session_system(ticket) == "You open tickets."
    assert [t["function"]["name"] for t in workload.session_tools(ticket)] == ["create_ticket"]  # type: ignore[index,call-overload]
    assert len(workload.session_tools(order)) == 2


def test_session_hash_is_known_and_blind_to_layout() -> None:
    workload = parse_workload(SESSION_YAML, source="w.yaml")
    assert workload.content_hash == SESSION_HASH
    as_json = workload.model_dump_json()
    assert parse_workload(as_json, source="w.json", fmt="json").content_hash == SESSION_HASH


def test_any_session_change_changes_the_hash() -> None:
    base = parse_workload(SESSION_YAML, source="w.yaml").content_hash
    for change in (
        lambda d: d["sessions"][0]["turns"][0].update(user="Where is order 124?"),
        lambda d: d["sessions"][0]["turns"][1].update(think_s=0.3),
        lambda d: d["sessions"][0]["turns"][1]["tool_results"][0].update(content="x"),
        lambda d: d["sessions"].reverse(),
    ):
        data = session_data()
        change(data)
        assert Workload.model_validate(data).content_hash != base


def test_v1_builtins_keep_the_hash_pinned_before_sessions_existed() -> None:
    # pinned in the v1 era (tests/unit/test_workloads.py holds the same values)
    assert load_workload("chat-tools").content_hash == (
        "sha256:2b1029fde7038289eceec545620b7397d1dcc617f16452efdf2ca3d7662b19fd"
    )
    assert "sessions" not in load_workload("structured").canonical_json


def test_scoring_items_hold_every_turn_with_an_expectation() -> None:
    workload = parse_workload(SESSION_YAML, source="w.yaml")
    items = workload.scoring_items()
    assert sorted(items) == ["order/0", "order/1"]
    assert items["order/0"].expect.tool == "lookup_order"
    assert items["order/0"].lang == "en" and items["order/0"].max_tokens == 32
    assert workload.session_by_id("ticket").id == "ticket"


def test_agent_loop_is_a_long_prefix_resent_every_turn() -> None:
    workload = load_workload("agent-loop")
    assert workload.system is not None and len(workload.system.split()) > 800
    assert len(workload.tools) >= 6
    assert len(workload.sessions) >= 4
    assert all(3 <= len(s.turns) <= 5 for s in workload.sessions)
    assert any(t.tool_results for s in workload.sessions for t in s.turns)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda d: d.update(schema_version=1),
            "sessions: sessions need schema_version: 2; raise the file's schema_version",
        ),
        (
            lambda d: d.update(
                prompts=[
                    {
                        "id": "p",
                        "messages": [{"role": "user", "content": "x"}],
                        "expect": {"kind": "no_tool"},
                    }
                ]
            ),
            "sessions: a workload holds prompts or sessions, not both; split it into two workloads",
        ),
        (
            lambda d: d.update(sessions=[]),
            "prompts: the workload has no prompts or sessions; add at least one",
        ),
        (
            lambda d: d["sessions"][1].update(id="order"),
            "sessions.1.id: duplicate id 'order' (first used at sessions.0); ids must be unique",
        ),
        (
            lambda d: d["sessions"][0]["turns"][0].update(tool_results=[]),
            "sessions.0.turns.0.tool_results: List should have at least 1 item after "
            "validation, not 0 (got [])",
        ),
        (
            lambda d: d["sessions"][0]["turns"][2].pop("user"),
            "sessions.0.turns.2: needs exactly one of user (a message) or tool_results "
            "(scripted results)",
        ),
        (
            lambda d: d["sessions"][0].update(turns=d["sessions"][0]["turns"][1:2]),
            "sessions.0.turns.0.tool_results: a session starts with a user turn; add one first",
        ),
        (
            lambda d: d["sessions"][0]["turns"][0].update(think_s=1),
            "sessions.0.turns.0.think_s: the first turn has no think time (the load schedules "
            "a session's start); remove it",
        ),
        (
            lambda d: d["sessions"][0]["turns"][2].update(think_s=[3, 1]),
            "sessions.0.turns.2.think_s: must be seconds >= 0, or [low, high] with 0 <= low <= "
            "high",
        ),
        (
            lambda d: d["sessions"][0]["turns"][2].update(think_s=[1, 2, 3]),
            "sessions.0.turns.2.think_s: must be seconds >= 0, or [low, high] with 0 <= low <= "
            "high",
        ),
        (
            lambda d: d["sessions"][0]["turns"][1].update(think_s=-1),
            "sessions.0.turns.1.think_s: must be seconds >= 0, or [low, high] with 0 <= low <= "
            "high",
        ),
        (
            lambda d: d["sessions"][1].update(tools=["refund"]),
            "sessions.1.tools.0: tool 'refund' is not defined in tools; define it under tools "
            "or fix the name (defined: lookup_order, create_ticket)",
        ),
        (
            lambda d: d["sessions"][1]["turns"].append(
                {"tool_results": [{"tool": "lookup_order", "content": "x"}]}
            ),
            "sessions.1.turns.1.tool_results.0.tool: tool 'lookup_order' is not offered to "
            "this session; add it to sessions.1.tools",
        ),
        (
            lambda d: d["sessions"][1]["turns"][0].update(
                expect={"kind": "tool", "tool": "lookup_order"}
            ),
            "sessions.1.turns.0.expect.tool: tool 'lookup_order' is expected but not offered "
            "to this prompt; add it to sessions.1.tools",
        ),
        (
            lambda d: d["sessions"][0]["turns"][0]["expect"]["args"].update(id={"equals": 1}),
            "sessions.0.turns.0.expect.args.id: 'id' is not a parameter of tool "
            "'lookup_order' (parameters: order_id)",
        ),
        (
            lambda d: d["sessions"][0]["turns"][0].update(usr="hi"),
            "sessions.0.turns.0.usr: unknown key 'usr'; remove it or fix its spelling "
            "(allowed: user, tool_results, think_s, expect, max_tokens)",
        ),
        (
            lambda d: d["sessions"][0].update(turns=[]),
            "sessions.0.turns: List should have at least 1 item after validation, not 0 (got [])",
        ),
        (
            lambda d: d["sessions"][0].update(id="has space"),
            "sessions.0.id: String should match pattern '^[A-Za-z0-9][A-Za-z0-9._:-]*$' "
            "(got 'has space')",
        ),
    ],
)
def test_each_session_rule_fails_in_one_line_naming_the_field(change: Any, expected: str) -> None:
    data = copy.deepcopy(session_data())
    change(data)
    assert error(data) == expected


def test_jsonl_workloads_stay_prompt_lists(tmp_path: Path) -> None:
    path = tmp_path / "w.jsonl"
    path.write_text(
        '{"schema_version": 2, "name": "j", "version": "1.0", "description": "d"}\n'
        '{"id": "a", "messages": [{"role": "user", "content": "Hi"}], '
        '"expect": {"kind": "no_tool"}}\n',
        encoding="utf-8",
    )
    assert [item.id for item in load_workload(path).prompts] == ["a"]


def test_the_agent_loop_example_declares_the_prefix_cache_factor() -> None:
    from servelab.runner.experiment_inputs import load_spec
    from servelab.runner.resolve import effective_config
    from servelab.spec.confound import check_confounds
    from servelab.spec.experiment import resolve_arm
    from servelab.spec.settings import declared_fields

    spec, _ = load_spec(Path(__file__).resolve().parents[2] / "examples" / "agent-loop.yaml")
    workload = load_workload(spec.base.workload)
    arms = {arm.name: (arm, resolve_arm(spec, arm)) for arm in spec.expand()}
    assert {name: cfg.engine.prefix_cache for name, (_, cfg) in arms.items()} == {
        "prefix_cache=on": True, "prefix_cache=off": False,
    }  # fmt: skip
    effective = {name: effective_config(spec, cfg, workload)[0] for name, (_, cfg) in arms.items()}
    declared = {
        name: tuple(f for d in arm.declared for f in declared_fields(d))
        for name, (arm, _) in arms.items()
    }
    assert check_confounds(effective, declared, "prefix_cache=on") == []  # declared, not a confound
