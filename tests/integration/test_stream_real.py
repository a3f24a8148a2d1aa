"""The streaming client against the real llama-server: exact counts and honest timings."""

from __future__ import annotations

import asyncio

import pytest

from servelab.client.clock import MonotonicClock
from servelab.client.payload import Sampling, build_payload
from servelab.client.session import StreamSession
from servelab.client.stream import HttpRequest, stream_request
from servelab.engines.base import Engine
from servelab.engines.prom import counter_deltas
from servelab.metrics import derive
from servelab.records import Observation, Outcome

pytestmark = pytest.mark.engine

MESSAGES = [{"role": "user", "content": "Write a short poem about the sea."}]


def _run(engine: Engine, max_tokens: int, extras: dict[str, object] | None = None) -> Observation:
    _, body = build_payload(
        model="m",
        sampling=Sampling(max_tokens=max_tokens, ignore_eos=True),
        messages=MESSAGES,
        extras=engine.request_extras() if extras is None else extras,
    )

    async def go() -> Observation:
        with StreamSession(1, keepalive=False) as session:
            req = HttpRequest(engine.chat_url(), body)
            return await stream_request(session, req, MonotonicClock())

    return asyncio.run(go())


def test_token_counts_are_exact_with_per_chunk_timings(server: Engine) -> None:
    obs = _run(server, 48, extras={"cache_prompt": False, "timings_per_token": True})
    assert obs.outcome is Outcome.OK
    assert obs.finish_reason == "length"
    assert obs.usage is not None and obs.usage.completion_tokens == 48
    assert obs.chunk_tokens_source == "server"
    # every token but the ones whose text never reached a chunk is attributed to a chunk
    assert sum(obs.chunk_tokens) == 48
    assert obs.server_timings is not None and obs.server_timings["predicted_n"] == 48


def test_client_timings_agree_with_the_server(server: Engine) -> None:
    obs = _run(server, 64)
    m = derive(obs)
    assert m["n_out"] == 64 and m["n_out_source"] == "usage"
    # TTFT contains the server's prompt processing plus transport; never less
    assert m["ttft_s"] > m["server_prompt_s"]
    assert m["ttft_s"] - m["server_prompt_s"] < 0.25
    # same token count over nearly the same interval: within 5 % on a noisy shared machine
    assert m["decode_tps"] == pytest.approx(m["server_decode_tps"], rel=0.05)
    assert len(m["itl_s"]) >= 60


def test_without_server_timings_counts_are_estimated(server: Engine) -> None:
    assert (
        "timings_per_token" not in server.request_extras()
    )  # the default costs the engine nothing
    obs = _run(server, 16)
    assert obs.outcome is Outcome.OK
    assert obs.chunk_tokens_source == "estimated"
    assert all(n == 1 for n in obs.chunk_tokens)
    m = derive(obs)
    assert m["n_out"] == 16  # usage is still the source of n_out
    assert m["chunk_tokens_source"] == "verified"  # English: one token per chunk, checked
    assert len(m["itl_s"]) == 15


def test_prompt_cache_is_off_by_default(server: Engine) -> None:
    first, second = _run(server, 4), _run(server, 4)
    assert first.server_timings is not None and second.server_timings is not None
    assert second.server_timings["cache_n"] == 0


def test_metrics_counters_move_by_the_tokens_generated(server: Engine) -> None:
    before = server.scrape_metrics()
    obs = _run(server, 20)
    after = server.scrape_metrics()
    assert before is not None and after is not None
    deltas = counter_deltas(before, after)
    assert obs.usage is not None
    assert deltas["llamacpp:tokens_predicted_total"] == obs.usage.completion_tokens


def test_describe_names_the_build_and_model(server: Engine) -> None:
    d = server.describe()
    assert d["commit"] == "0c1e57098"
    assert len(d["model_sha256"]) == 64 and len(d["binary_sha256"]) == 64
    assert d["argv"][0] == d["binary"] and "--metrics" in d["argv"]
    assert "127.0.0.1" in d["argv"]
    assert d["chat_template"]
