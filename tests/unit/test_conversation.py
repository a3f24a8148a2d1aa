"""The conversation state machine: replies fed back, tool results scripted, think time seeded."""

from __future__ import annotations

import json

import pytest

from servelab.metrics import prefix_reuse
from servelab.records import ToolCall
from servelab.workloads import Workload, load_workload, parse_workload
from servelab.workloads.conversation import (
    UNSCRIPTED_RESULT,
    Reply,
    plan_turn,
    think_time_s,
)
from tests.unit.test_workload_sessions import SESSION_YAML


@pytest.fixture(scope="module")
def desk() -> Workload:
    return parse_workload(SESSION_YAML, source="w.yaml")


def roles(messages: list[dict[str, object]]) -> list[object]:
    return [m["role"] for m in messages]


def test_first_turn_is_the_system_prompt_and_the_user_message(desk: Workload) -> None:
    plan = plan_turn(desk, desk.sessions[0], [], seed=0)
    assert plan is not None
    assert plan.messages == [
        {"role": "system", "content": "You are a help desk."},
        {"role": "user", "content": "Where is order 123?"},
    ]
    assert (plan.prompt_id, plan.turn, plan.max_tokens, plan.think_s) == ("order/0", 0, 32, 0.0)
    assert [t["function"]["name"] for t in plan.tools] == ["lookup_order", "create_ticket"]  # type: ignore[index,call-overload]
    assert plan.expect is not None and plan.expect.tool == "lookup_order"


def test_the_models_call_is_fed_back_and_answered_with_the_scripted_result(
    desk: Workload,
) -> None:
    call = ToolCall(index=0, name="lookup_order", arguments='{"order_id":"123"}', id="c7")
    plan = plan_turn(desk, desk.sessions[0], [Reply("Let me check.", (call,))], seed=0)
    assert plan is not None
    assert plan.messages[2:] == [
        {"role": "assistant", "content": "Let me check.", "tool_calls": [
            {"id": "c7", "type": "function",
             "function": {"name": "lookup_order", "arguments": '{"order_id":"123"}'}}]},
        {"role": "tool", "tool_call_id": "c7", "name": "lookup_order",
         "content": '{"status": "shipped"}'},
    ]  # fmt: skip
    assert plan.scripted_calls == () and plan.think_s == 0.2


def test_a_call_the_model_did_not_make_is_written_in_and_answered(desk: Workload) -> None:
    plan = plan_turn(desk, desk.sessions[0], [Reply("It is on its way.")], seed=0)
    assert plan is not None
    assistant, tool = plan.messages[2:]
    assert assistant["content"] == "It is on its way."
    assert assistant["tool_calls"] == [
        {"id": "scripted-1-0", "type": "function",
         "function": {"name": "lookup_order", "arguments": '{"order_id": "123"}'}}
    ]  # fmt: skip
    assert tool["tool_call_id"] == "scripted-1-0"
    assert plan.scripted_calls == ("lookup_order",)


def test_every_reply_so_far_is_fed_back_in_order(desk: Workload) -> None:
    call = ToolCall(index=0, name="lookup_order", arguments="{}")  # no id from the server
    replies = [Reply("", (call,)), Reply("Shipped yesterday.")]
    plan = plan_turn(desk, desk.sessions[0], replies, seed=0)
    assert plan is not None
    assert roles(plan.messages) == ["system", "user", "assistant", "tool", "assistant", "user"]
    assert plan.messages[2]["tool_calls"][0]["id"] == "call-0-0"  # type: ignore[index]
    assert plan.messages[3]["tool_call_id"] == "call-0-0"
    assert plan.messages[4] == {"role": "assistant", "content": "Shipped yesterday."}
    assert plan.messages[5] == {"role": "user", "content": "Thanks!"}
    assert plan_turn(desk, desk.sessions[0], [*replies, Reply("Bye")], seed=0) is None


def test_calls_the_script_does_not_answer_get_an_error_result_before_the_next_user_turn(
    desk: Workload,
) -> None:
    stray = ToolCall(index=1, name="create_ticket", arguments="{}", id="x1")
    replies = [Reply("", (ToolCall(0, "lookup_order", "{}", "c1"), stray)), Reply("Done", (stray,))]
    plan = plan_turn(desk, desk.sessions[0], replies, seed=0)
    assert plan is not None
    tools = [m for m in plan.messages if m["role"] == "tool"]
    assert [(m["tool_call_id"], m["content"]) for m in tools] == [
        ("c1", '{"status": "shipped"}'), ("x1", UNSCRIPTED_RESULT), ("x1", UNSCRIPTED_RESULT),
    ]  # fmt: skip
    assert plan.messages[-1] == {"role": "user", "content": "Thanks!"}


def test_think_time_is_drawn_from_the_range_and_fixed_by_the_seed(desk: Workload) -> None:
    turn = desk.sessions[0].turns[2]
    draws = [think_time_s(turn, seed, "order", 2) for seed in range(50)]
    assert all(1.0 <= d <= 3.0 for d in draws) and len(set(draws)) == 50
    assert draws == [think_time_s(turn, seed, "order", 2) for seed in range(50)]
    assert think_time_s(turn, 0, "order", 2) != think_time_s(turn, 0, "other", 2)
    plan = plan_turn(desk, desk.sessions[0], [Reply("a"), Reply("b")], seed=3)
    assert plan is not None and plan.think_s == draws[3]


def test_a_session_system_prompt_replaces_the_workloads(desk: Workload) -> None:
    plan = plan_turn(desk, desk.sessions[1], [], seed=0)
    assert plan is not None and plan.messages[0] == {
        "role": "system",
        "content": "You open tickets.",
    }


def test_agent_loop_turns_share_their_prefix_with_the_turn_before() -> None:
    workload = load_workload("agent-loop")
    for session in workload.sessions:
        replies: list[Reply] = []
        before: str | None = None
        while (plan := plan_turn(workload, session, replies, seed=1)) is not None:
            text = json.dumps([plan.tools, plan.messages])[:-2]
            if before is not None:
                assert text.startswith(before), (session.id, plan.turn)
            before = text
            replies.append(Reply(f"reply {plan.turn}"))
        assert len(replies) == len(session.turns)


def test_prefix_reuse_is_cache_n_over_n_in() -> None:
    assert prefix_reuse(1800, 2000) == 0.9
    assert prefix_reuse(0, 2000) == 0.0
    assert prefix_reuse(None, 2000) is None
    assert prefix_reuse(5, 0) is None
