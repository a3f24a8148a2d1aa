"""The conversation state machine: a session and the model's replies so far -> the next turn.

Owns how a multi-turn session (``schema.Session``) becomes requests: the messages of turn k
are the system prompt, then every earlier turn followed by the model's own reply to it, then
turn k; the tools offered on every turn; turn k's output limit, expectation and think time.
A pure function of (workload, session, replies, seed): nothing is kept between calls, so the
caller holds the replies and the same inputs always give the same request.

The rules that keep every arm on the same script:

- The model's replies are fed back verbatim as ``assistant`` messages: the text, and its tool
  calls with their arguments as sent. Reasoning text is not fed back.
- A ``tool_results`` turn answers the model's calls: each scripted result answers the first
  unanswered call of its tool in the model's last reply, as a ``tool`` message with that
  call's id. **When the model did not call the tool**, the call is written into its last reply
  (id ``scripted-<turn>-<n>``, the result's ``arguments``) and then answered: the conversation
  goes on as scripted, and ``TurnPlan.scripted_calls`` names the calls written in. Whether the
  model made the call is scored on the turn before, through that turn's ``expect``.
- Calls the script does not answer (a call of another tool, a second call) are answered with
  ``UNSCRIPTED_RESULT`` before the next user message, so every call has its answer (servers
  that check this, such as OpenAI's, refuse a dangling call).
- Think time: a fixed ``think_s``, or ``[low, high]`` drawn uniformly by a generator seeded
  with (seed, session id, turn), so the draw does not depend on the order turns complete in.

The derived turn metric ``prefix_reuse`` (cache_n / n_in) is in ``servelab.metrics``.

Must not: speak HTTP, read files, sleep, or hold state.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import JsonValue

from servelab.records import ToolCall
from servelab.workloads.schema import Expectation, Session, ToolResult, Turn, Workload, turn_id

UNSCRIPTED_RESULT = '{"error": "no result was scripted for this call"}'
"""The ``tool`` message that answers a call the workload's script does not answer."""

Message = dict[str, JsonValue]


@dataclass(frozen=True, slots=True)
class Reply:
    """What the model answered one turn with."""

    text: str
    tool_calls: tuple[ToolCall, ...] = ()  # as the client assembled them


@dataclass(frozen=True, slots=True)
class TurnPlan:
    """Everything needed to send one turn of a session."""

    session_id: str
    turn: int
    prompt_id: str  # ``<session id>/<turn>``
    messages: list[Message]
    tools: list[dict[str, JsonValue]]
    max_tokens: int | None
    expect: Expectation | None
    think_s: float  # the pause before sending, after the previous turn's reply
    scripted_calls: tuple[str, ...]  # tools whose call was written into the model's reply


def plan_turn(
    workload: Workload, session: Session, replies: Sequence[Reply], seed: int
) -> TurnPlan | None:
    """The next turn of ``session`` after ``replies`` (one per turn already answered), or None
    when the session has ended."""
    index = len(replies)
    if index >= len(session.turns):
        return None
    messages, scripted = transcript(workload, session, replies)
    turn = session.turns[index]
    return TurnPlan(
        session_id=session.id, turn=index, prompt_id=turn_id(session.id, index),
        messages=messages, tools=workload.session_tools(session), max_tokens=turn.max_tokens,
        expect=turn.expect, think_s=think_time_s(turn, seed, session.id, index),
        scripted_calls=scripted,
    )  # fmt: skip


def transcript(
    workload: Workload, session: Session, replies: Sequence[Reply]
) -> tuple[list[Message], tuple[str, ...]]:
    """The messages of turn ``len(replies)`` and the calls written in while answering it."""
    system = workload.session_system(session)
    messages: list[Message] = [{"role": "system", "content": system}] if system else []
    scripted: tuple[str, ...] = ()
    for index, turn in enumerate(session.turns[: len(replies) + 1]):
        if index > 0:
            messages.append(_assistant(replies[index - 1], index - 1))
        if turn.user is not None:
            messages += _close_open_calls(messages)
            messages.append({"role": "user", "content": turn.user})
        else:
            scripted = _answer(messages, turn.tool_results or [], index)
    return messages, scripted


def think_time_s(turn: Turn, seed: int, session_id: str, index: int) -> float:
    """The pause before ``turn``: fixed, or uniform in [low, high] seeded by (seed, session,
    turn)."""
    if not isinstance(turn.think_s, list):
        return turn.think_s
    low, high = turn.think_s
    # str seeds hash with SHA-512: stable across processes, unlike hash()
    return random.Random(f"{seed}:{session_id}:{index}").uniform(low, high)


def _assistant(reply: Reply, index: int) -> Message:
    message: Message = {"role": "assistant", "content": reply.text}
    if reply.tool_calls:
        message["tool_calls"] = [
            _call(call.id or f"call-{index}-{n}", call.name, call.arguments)
            for n, call in enumerate(reply.tool_calls)
        ]
    return message


def _call(call_id: str, name: str, arguments: str) -> Message:
    return {"id": call_id, "type": "function",
            "function": {"name": name, "arguments": arguments}}  # fmt: skip


def _open_calls(messages: list[Message]) -> list[Message]:
    """The calls of the last assistant message that no tool message after it answers."""
    for at in range(len(messages) - 1, -1, -1):
        if messages[at]["role"] == "assistant":
            answered = {m.get("tool_call_id") for m in messages[at + 1 :]}
            calls = messages[at].get("tool_calls") or []
            assert isinstance(calls, list)
            return [c for c in calls if isinstance(c, dict) and c["id"] not in answered]
    return []


def _close_open_calls(messages: list[Message]) -> list[Message]:
    return [_tool_message(call, UNSCRIPTED_RESULT) for call in _open_calls(messages)]


def _answer(messages: list[Message], results: Sequence[ToolResult], index: int) -> tuple[str, ...]:
    """Append the scripted results' tool messages, writing in calls the model did not make."""
    scripted: list[str] = []
    for n, result in enumerate(results):
        call = next((c for c in _open_calls(messages) if _name(c) == result.tool), None)
        if call is None:
            call = _call(f"scripted-{index}-{n}", result.tool, _arguments(result))
            _last_assistant(messages).setdefault("tool_calls", [])
            calls = _last_assistant(messages)["tool_calls"]
            assert isinstance(calls, list)
            calls.append(call)
            scripted.append(result.tool)
        messages.append(_tool_message(call, result.text))
    messages += _close_open_calls(messages)
    return tuple(scripted)


def _tool_message(call: Message, content: str) -> Message:
    return {"role": "tool", "tool_call_id": call["id"], "name": _name(call), "content": content}


def _name(call: Message) -> str:
    function = call["function"]
    return str(function["name"]) if isinstance(function, dict) else ""


def _last_assistant(messages: list[Message]) -> Message:
    return next(m for m in reversed(messages) if m["role"] == "assistant")


def _arguments(result: ToolResult) -> str:
    return json.dumps(result.arguments, ensure_ascii=False, separators=(", ", ": "))
