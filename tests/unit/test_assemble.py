"""Tests for ResponseAssembler: token counts per chunk, first-token times, tool calls, outcomes.

Messages are built by the real parser (``chunk_events`` or the SSE path over the recorded
llama-server stream) and fed with explicit arrival times; there is no clock to fake.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from servelab.client.assemble import ResponseAssembler
from servelab.client.sse import Event, LineSplitter, SSEParser, StreamError, chunk_events
from servelab.records import Observation, Outcome, ToolCall, Usage

FIXTURE = Path(__file__).parents[1] / "fixtures" / "streams" / "llamacpp_chat_length.sse"


def recorded_messages(*, strip_timings: bool = False) -> list[list[Event]]:
    """The recorded stream's messages as event lists, one per SSE message that had events."""
    data = FIXTURE.read_bytes()
    if strip_timings:
        lines = []
        for line in data.decode("utf-8").split("\n"):
            if line.startswith("data: {"):
                obj = json.loads(line.removeprefix("data: "))
                obj.pop("timings", None)
                line = "data: " + json.dumps(obj)
            lines.append(line)
        data = "\n".join(lines).encode("utf-8")
    splitter, parser = LineSplitter(), SSEParser()
    out = [ev for line in splitter.feed(data) if (ev := parser.feed_line(line))]
    assert not splitter.flush()
    assert not parser.finish()
    return out


def feed(messages: list[list[Event]], step_s: float = 0.125) -> ResponseAssembler:
    acc = ResponseAssembler()
    for i, events in enumerate(messages):
        acc.add(events, step_s * (i + 1))
    return acc


def content(text: str, predicted_n: int | None = None) -> list[Event]:
    obj: dict[str, Any] = {"choices": [{"delta": {"content": text}}]}
    if predicted_n is not None:
        obj["timings"] = {"predicted_n": predicted_n, "predicted_ms": 1.0}
    return chunk_events(obj)


def finish(reason: str = "stop") -> list[Event]:
    return chunk_events({"choices": [{"delta": {}, "finish_reason": reason}]})


def usage_msg(prompt: int, completion: int, predicted_n: int | None = None) -> list[Event]:
    obj: dict[str, Any] = {
        "choices": [],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion},
    }
    if predicted_n is not None:
        obj["timings"] = {"predicted_n": predicted_n}
    return chunk_events(obj)


def observe(acc: ResponseAssembler, **kw: Any) -> Observation:
    args: dict[str, Any] = {
        "outcome": Outcome.OK,
        "wait_s": 0.0,
        "end_s": 10.0,
        "first_byte_s": 0.05,
        "http_status": 200,
        "error": None,
        "invalid_utf8_bytes": 0,
    }
    args.update(kw)
    return acc.observation(**args)


# --- the recorded stream ----------------------------------------------------------------------


def test_recorded_stream_with_per_token_timings() -> None:
    acc = feed(recorded_messages())
    obs = observe(acc, end_s=2.0)
    # 12 content messages at t = 0.125 .. 1.5; predicted_n grows by one each time
    assert obs.chunk_t_s == tuple(0.125 * (i + 1) for i in range(12))
    assert obs.chunk_tokens == (1,) * 12
    assert obs.chunk_tokens_source == "server"
    assert acc.token_timings_seen == 12
    assert acc.timings is not None
    assert sum(obs.chunk_tokens) == acc.timings["predicted_n"] == 12
    assert obs.first_content_s == 0.125
    assert obs.first_tool_s is None
    assert obs.text.startswith("The AI designed")
    assert obs.finish_reason == "length"
    assert obs.usage == Usage(prompt_tokens=36, completion_tokens=12)
    assert obs.server_timings is not None
    assert obs.server_timings["predicted_per_second"] == pytest.approx(112.31939551743503)
    assert obs.extra == {"saw_done": True}
    assert acc.outcome(stream_closed_cleanly=True) == (Outcome.OK, None)


def test_recorded_stream_without_timings_is_estimated() -> None:
    acc = feed(recorded_messages(strip_timings=True))
    obs = observe(acc)
    assert obs.chunk_tokens == (1,) * 12
    assert obs.chunk_tokens_source == "estimated"
    assert acc.token_timings_seen == 0
    assert obs.server_timings is None
    assert obs.usage == Usage(36, 12)


# --- exact counts from predicted_n ------------------------------------------------------------


def test_held_back_tokens_are_carried_by_the_next_text_chunk() -> None:
    messages = [
        content("a", 1),
        content("bc", 3),  # two tokens in one chunk (speculative decoding)
        content("d"),  # no timings on this one: it carries 0, its token shows up later
        chunk_events({"choices": [], "timings": {"predicted_n": 5}}),  # no text: held back
        content("é", 7),
        finish(),
        usage_msg(4, 7, predicted_n=7),
    ]
    acc = feed(messages, step_s=1.0)
    obs = observe(acc)
    assert obs.chunk_t_s == (1.0, 2.0, 3.0, 5.0)
    assert obs.chunk_tokens == (1, 2, 0, 4)
    assert obs.chunk_tokens_source == "server"
    assert sum(obs.chunk_tokens) == 7
    assert obs.text == "abcdé"


def test_predicted_n_going_backwards_adds_nothing() -> None:
    acc = feed([content("a", 3), content("b", 2), content("c", 4)])
    assert acc.chunk_tokens == [3, 0, 1]


@settings(deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.integers(min_value=0, max_value=5), st.booleans()), min_size=1, max_size=30
    )
)
def test_sum_of_chunk_tokens_is_the_last_predicted_n(steps: list[tuple[int, bool]]) -> None:
    predicted = 0
    messages = []
    last_timed = 0
    for i, (increment, timed) in enumerate(steps):
        if timed or i == 0:
            predicted += increment
            last_timed = predicted
            messages.append(content(f"t{i}", predicted))
        else:
            messages.append(content(f"t{i}"))
    acc = feed(messages)
    obs = observe(acc)
    assert len(obs.chunk_tokens) == len(obs.chunk_t_s) == len(steps)
    assert all(n >= 0 for n in obs.chunk_tokens)
    assert sum(obs.chunk_tokens) == last_timed
    assert obs.chunk_tokens_source == "server"


def test_without_timings_each_token_message_counts_one() -> None:
    messages = [
        chunk_events({"choices": [{"delta": {"role": "assistant", "content": None}}]}),
        chunk_events({"choices": [{"delta": {"reasoning_content": "think"}}]}),
        chunk_events(
            {
                "choices": [
                    {
                        "delta": {
                            "content": "x",
                            "tool_calls": [{"index": 0, "function": {"name": "f"}}],
                        }
                    }
                ]
            }
        ),
        content("yz"),
        finish(),
        usage_msg(3, 9),
    ]
    obs = observe(feed(messages))
    assert obs.chunk_tokens == (1, 1, 1)
    assert obs.chunk_tokens_source == "estimated"
    assert obs.chunk_t_s == (0.25, 0.375, 0.5)


# --- first-token times ------------------------------------------------------------------------


def test_first_content_tool_and_reasoning_times() -> None:
    messages = [
        chunk_events({"choices": [{"delta": {"reasoning_content": "hmm"}}]}),
        content("Sure"),
        chunk_events(
            {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{"}}]}}]}
        ),
        chunk_events(
            {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"name": "f"}}]}}]}
        ),
        content(" thing"),
        finish("tool_calls"),
    ]
    acc = feed(messages, step_s=0.5)
    obs = observe(acc)
    assert obs.extra["first_reasoning_s"] == 0.5
    assert obs.first_content_s == 1.0
    assert obs.first_tool_s == 2.0  # the name, not the earlier arguments-only delta
    assert obs.reasoning == "hmm"
    assert obs.text == "Sure thing"
    assert obs.tool_calls == (ToolCall(index=0, name="f", arguments="{"),)


def test_tool_only_reply_has_no_content_time() -> None:
    messages = [
        chunk_events(
            {
                "choices": [
                    {
                        "delta": {
                            "tool_calls": [
                                {
                                    "index": 0,
                                    "id": "c",
                                    "function": {"name": "get_", "arguments": ""},
                                }
                            ]
                        }
                    }
                ]
            }
        ),
        chunk_events(
            {
                "choices": [
                    {"delta": {"tool_calls": [{"index": 0, "function": {"name": "weather"}}]}}
                ]
            }
        ),
        chunk_events(
            {
                "choices": [
                    {"delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}}
                ]
            }
        ),
        finish("tool_calls"),
    ]
    acc = feed(messages, step_s=1.0)
    assert acc.first_content_s is None
    assert acc.first_tool_s == 1.0
    assert acc.tool_calls() == (ToolCall(0, "get_weather", "{}", "c"),)


# --- outcomes ---------------------------------------------------------------------------------


def test_outcome_ok_without_done() -> None:
    acc = feed([content("a"), finish("stop")])
    assert not acc.saw_done
    assert acc.outcome(stream_closed_cleanly=True) == (Outcome.OK, None)
    assert observe(acc).extra["saw_done"] is False


def test_outcome_truncated_without_finish_reason() -> None:
    acc = feed([content("a"), content("b")])
    assert acc.outcome(stream_closed_cleanly=True) == (
        Outcome.TRUNCATED_STREAM,
        "stream closed before a finish_reason arrived",
    )
    assert acc.outcome(stream_closed_cleanly=False)[1] == (
        "stream cut before a finish_reason arrived"
    )


def test_outcome_error_wins_over_malformed_and_finish() -> None:
    acc = feed(
        [
            content("a"),
            finish(),
            chunk_events({"choices": "bad"}),
            chunk_events({"choices": [1]}),
        ]
    )
    assert acc.failed
    assert acc.malformed == "'choices' is not a list"  # the first one is kept
    assert acc.outcome(True) == (Outcome.INVALID_STREAM, "'choices' is not a list")
    acc.add([StreamError("out of memory")], 9.0)
    outcome, detail = acc.outcome(True)
    assert outcome is Outcome.HTTP_ERROR
    assert detail == "server error in stream: out of memory"


def test_observation_passes_through_the_callers_fields() -> None:
    acc = feed([content("a", 1), finish()])
    obs = acc.observation(
        outcome=Outcome.TIMEOUT,
        wait_s=0.25,
        end_s=4.5,
        first_byte_s=0.125,
        http_status=200,
        error="no complete response within 5 s",
        invalid_utf8_bytes=3,
    )
    assert obs.outcome is Outcome.TIMEOUT
    assert (obs.wait_s, obs.end_s, obs.first_byte_s) == (0.25, 4.5, 0.125)
    assert obs.http_status == 200
    assert obs.error == "no complete response within 5 s"
    assert obs.invalid_utf8_bytes == 3
    assert "first_reasoning_s" not in obs.extra
