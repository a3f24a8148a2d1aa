"""The selftest's mock server: its schedule (known answers), its wire format as servelab's
own decoders read it, and its record of when it wrote each chunk (issue 13)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator

import httpx
import pytest

from servelab.client.assemble import ResponseAssembler
from servelab.client.sse import SSEParser
from servelab.engines.mock_server import (
    PROFILES,
    REQUEST_ID_HEADER,
    MockServerProcess,
    Profile,
    profile_from,
)
from servelab.records import Outcome, Usage


def test_a_slow_profile_schedules_one_token_every_50_ms_after_its_ttft() -> None:
    offsets = PROFILES["slow"].schedule_s(4)
    assert [n for _, n in offsets] == [1, 1, 1, 1]
    assert [round(t, 6) for t, _ in offsets] == [0.1, 0.15, 0.2, 0.25]


def test_a_bursty_profile_sends_groups_when_their_tokens_are_done() -> None:
    p = Profile("b", ttft_s=0.01, tokens_per_s=100.0, chunk_tokens=(3, 1, 4))
    offsets = p.schedule_s(10)
    assert [n for _, n in offsets] == [3, 1, 4, 2]  # the last group is cut at max_tokens
    assert [round(t, 6) for t, _ in offsets] == [0.01, 0.02, 0.06, 0.08]


def test_profile_overrides_and_unknown_names() -> None:
    p = profile_from("fast", ttft_ms=5, tokens_per_s=100, chunk_tokens=(2,))
    assert (p.ttft_s, p.tokens_per_s, p.chunk_tokens) == (0.005, 100, (2,))
    with pytest.raises(ValueError, match="choose one of"):
        profile_from("warp")


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with MockServerProcess("slow") as s:
        yield s.url


def _decode(body: bytes) -> ResponseAssembler:
    parser, acc = SSEParser(), ResponseAssembler()
    for line in body.decode().split("\n"):
        events = parser.feed_line(line)
        if events:
            acc.add(events, 0.0)
    return acc


def test_a_streamed_chat_reads_as_llama_server_and_keeps_its_schedule(server: str) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "stream": True, "max_tokens": 4,
            "stream_options": {"include_usage": True}}  # fmt: skip
    r = httpx.post(f"{server}/v1/chat/completions", json=body,
                   headers={REQUEST_ID_HEADER: "k1"}, timeout=10)  # fmt: skip
    assert r.status_code == 200 and r.headers["content-type"] == "text/event-stream"
    assert r.content.endswith(b"data: [DONE]\n\n")
    acc = _decode(r.content)
    assert acc.outcome(True) == (Outcome.OK, None) and acc.saw_done
    assert acc.finish_reason == "length" and len(acc.chunk_t_s) == 4
    assert isinstance(acc.usage, Usage) and acc.usage.completion_tokens == 4
    assert acc.timings is not None and acc.timings["predicted_n"] == 4
    record = httpx.get(f"{server}/emissions", timeout=10).json()["requests"]["k1"]
    sched, emitted = record["scheduled_ns"], record["emitted_ns"]
    assert [b - a for a, b in itertools.pairwise(sched)] == [50_000_000] * 3
    assert sched[0] - record["received_ns"] == 100_000_000
    assert all(0 <= e - s < 40_000_000 for s, e in zip(sched, emitted, strict=True))
    assert record["tokens"] == [1, 1, 1, 1] and record["done_ns"] >= emitted[-1]
    assert httpx.get(f"{server}/emissions", timeout=10).json()["requests"] == {}  # read once


def test_bursty_chunks_carry_their_token_counts_per_chunk(server: str) -> None:
    body = {"prompt": "x", "stream": True, "max_tokens": 7, "timings_per_token": True}
    r = httpx.post(f"{server}/v1/completions", json=body, timeout=10,
                   headers={"X-Mock-Profile": "bursty"})  # fmt: skip
    acc = _decode(r.content)
    assert acc.chunk_tokens == [3, 1, 3] and acc.finish_reason == "length"


def test_models_health_errors_and_a_whole_answer(server: str) -> None:
    assert httpx.get(f"{server}/health", timeout=10).json() == {"status": "ok"}
    assert httpx.get(f"{server}/v1/models", timeout=10).json()["data"][0]["id"] == "mock"
    assert httpx.get(f"{server}/nope", timeout=10).status_code == 404
    bad = httpx.post(f"{server}/v1/completions", content=b"{", timeout=10)
    assert bad.status_code == 400 and "JSON" in bad.json()["error"]["message"]
    whole = httpx.post(f"{server}/v1/completions", timeout=10,
                       json={"prompt": "x", "max_tokens": 2, "stream": False}).json()  # fmt: skip
    assert whole["usage"]["completion_tokens"] == 2 and whole["choices"][0]["text"]
    assert json.dumps(whole)  # a plain JSON object
