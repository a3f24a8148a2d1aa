"""Tests for request-body construction (chat and completions)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from servelab.client.payload import Sampling, build_payload

MESSAGES: list[dict[str, Any]] = [
    {"role": "system", "content": "You are a home voice assistant."},
    {"role": "user", "content": "What's the weather in Taipei?"},
    {"role": "assistant", "content": "Let me check."},
    {"role": "user", "content": "And tomorrow?"},
]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]


def test_chat_body_defaults() -> None:
    kind, body = build_payload(model="m", sampling=Sampling(), messages=MESSAGES)
    assert kind == "chat"
    assert body == {
        "model": "m",
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 128,
        "temperature": 0.0,
        "seed": 0,
        "messages": MESSAGES,
    }
    json.dumps(body)


def test_sampling_fields() -> None:
    sampling = Sampling(max_tokens=7, temperature=0.7, seed=None, ignore_eos=True)
    _, body = build_payload(model="m", sampling=sampling, prompt="hi")
    assert (body["max_tokens"], body["temperature"], body["ignore_eos"]) == (7, 0.7, True)
    assert "seed" not in body
    _, plain = build_payload(model="m", sampling=Sampling(seed=42), prompt="hi")
    assert plain["seed"] == 42
    assert "ignore_eos" not in plain


def test_engine_extras_are_sent() -> None:
    extras = {"cache_prompt": False, "timings_per_token": True}
    _, body = build_payload(model="m", sampling=Sampling(), messages=MESSAGES, extras=extras)
    assert body["cache_prompt"] is False
    assert body["timings_per_token"] is True
    assert body["stream"] is True


def test_tools_only_when_given() -> None:
    _, with_tools = build_payload(model="m", sampling=Sampling(), messages=MESSAGES, tools=TOOLS)
    assert with_tools["tools"] == TOOLS
    _, empty = build_payload(model="m", sampling=Sampling(), messages=MESSAGES, tools=[])
    assert "tools" not in empty


def test_completions_body() -> None:
    kind, body = build_payload(model="m", sampling=Sampling(max_tokens=3), prompt="Once upon")
    assert kind == "completions"
    assert body["prompt"] == "Once upon"
    assert "messages" not in body
    assert body["stream_options"] == {"include_usage": True}


def test_unique_prefix_goes_on_the_first_message_only() -> None:
    original = copy.deepcopy(MESSAGES)
    _, body = build_payload(
        model="m", sampling=Sampling(), messages=MESSAGES, unique_prefix="[abc123] "
    )
    sent = body["messages"]
    assert sent[0]["content"] == "[abc123] " + MESSAGES[0]["content"]
    assert [m["content"] for m in sent[1:]] == [m["content"] for m in MESSAGES[1:]]
    assert original == MESSAGES  # the caller's (shared, workload) messages are not touched
    assert sum("[abc123]" in m["content"] for m in sent) == 1


def test_unique_prefix_leaves_no_shared_prefix() -> None:
    _, body = build_payload(model="m", sampling=Sampling(), messages=MESSAGES, unique_prefix="[u] ")
    assert body["messages"][0]["content"].startswith("[u] ")


def test_unique_prefix_on_a_prompt() -> None:
    _, body = build_payload(model="m", sampling=Sampling(), prompt="Once", unique_prefix="[x] ")
    assert body["prompt"] == "[x] Once"


def test_two_prefixes_give_two_different_bodies() -> None:
    a = build_payload(model="m", sampling=Sampling(), messages=MESSAGES, unique_prefix="[1] ")
    b = build_payload(model="m", sampling=Sampling(), messages=MESSAGES, unique_prefix="[2] ")
    assert a[1]["messages"] != b[1]["messages"]


def test_neither_messages_nor_prompt_is_an_error() -> None:
    with pytest.raises(ValueError, match="messages or a prompt"):
        build_payload(model="m", sampling=Sampling())
