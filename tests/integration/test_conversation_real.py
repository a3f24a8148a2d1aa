"""Conversations and traces against the real llama-server: prompts synthesised to an exact
token count, and a multi-turn session whose later turns come from the prefix cache only when
the cache is on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from servelab.client.clock import MonotonicClock, WallAnchor
from servelab.engines.base import Engine
from servelab.engines.registry import create_engine
from servelab.metrics import prefix_reuse
from servelab.records import Observation, Outcome, Phase
from servelab.runner.drive import Job, RequestParams, RequestSource, Schedule, run_jobs
from servelab.runner.request_source import (
    ConversationSource,
    conversation_jobs,
    trace_jobs,
    trace_source,
)
from servelab.spec.engine import EngineConfig
from servelab.workloads import Workload, parse_workload
from servelab.workloads.trace import parse_trace

pytestmark = pytest.mark.engine

PARAMS = RequestParams(max_tokens=12, temperature=0.0, seed=0, ignore_eos=True)

SYSTEM = " ".join(
    f"Rule {n}: answer the customer briefly, politely and only about their own order."
    for n in range(20)
)
SESSION = f"""\
schema_version: 2
name: small-session
version: "1.0"
description: three turns behind a long shared system prompt
system: "{SYSTEM}"
sessions:
  - id: s
    turns:
      - user: Hello, where is my order 12345?
      - user: And when will it arrive?
        think_s: 0.1
      - user: Thanks, bye.
"""


def send_all(
    engine: Engine, source: RequestSource, jobs: list[Job], schedule: Schedule | None = None
) -> list[tuple[Job, Observation]]:
    """Send ``jobs`` from ``source`` through the real loop, following conversations."""
    clock = MonotonicClock()
    seen: list[tuple[Job, Observation]] = []
    run_jobs(
        engine, jobs, 1, 120.0, request_for=source.request_for,
        on_result=lambda job, sent, obs: seen.append((job, obs)), clock=clock,
        anchor=WallAnchor.take(clock), should_stop=lambda: False, schedule=schedule,
        follow=source.follow,
    )  # fmt: skip
    assert all(obs.outcome is Outcome.OK for _, obs in seen), seen
    return seen


@pytest.fixture
def cache(server: Engine) -> Iterator[None]:
    """The shared server's requests with ``cache_prompt: true`` (a per-request setting)."""
    original = server.config
    server.config = original.model_copy(update={"prefix_cache": True})
    try:
        yield
    finally:
        server.config = original


def run_session(engine: Engine, workload: Workload) -> list[Observation]:
    source = ConversationSource(workload, engine, PARAMS, seed=0)
    seen = send_all(engine, source, conversation_jobs(workload, 1, Phase.TRIAL))
    assert [job.turn for job, _ in seen] == [0, 1, 2]
    return [obs for _, obs in seen]


def reuse(observed: list[Observation]) -> list[float | None]:
    return [
        prefix_reuse(
            o.server_timings.get("cache_n") if o.server_timings else None,  # type: ignore[arg-type]
            o.usage.prompt_tokens if o.usage else None,
        )
        for o in observed
    ]


def test_token_count_prompts_reach_the_server_at_exactly_that_count(server: Engine) -> None:
    counts = (1, 17, 300)
    lines = [
        f'{{"t_s": {i}, "prompt_tokens": {n}, "output_tokens": 5}}' for i, n in enumerate(counts)
    ]
    trace = parse_trace("\n".join(lines), source="t")
    source = trace_source(trace, PARAMS, seed=3)(server)  # synthesises through /tokenize
    schedule = Schedule(tuple(trace.offsets_s(time_scale=10.0)))
    seen = send_all(server, source, trace_jobs(trace), schedule)
    used = sorted((o.usage.prompt_tokens, o.usage.completion_tokens) for _, o in seen if o.usage)
    assert used == [(n, 5) for n in counts]


def test_later_turns_reuse_the_prefix_only_with_the_cache_on(server: Engine, cache: None) -> None:
    workload = parse_workload(SESSION, source="small-session")
    on = reuse(run_session(server, workload))
    assert all(r is not None and r > 0.5 for r in on[1:]), on


def test_with_the_cache_off_no_turn_reuses_its_prefix(server: Engine) -> None:
    workload = parse_workload(SESSION, source="small-session")
    off = reuse(run_session(server, workload))
    assert off == [0.0, 0.0, 0.0], off


def test_the_openai_kind_tokenizes_like_the_server_it_fronts(server: Engine) -> None:
    endpoint = create_engine(
        EngineConfig(kind="openai", endpoint=server.base_url + "/v1", model="x"), Path("unused")
    )
    text = "Trailhead Outfitters ships to Canada."
    ids = server.tokenize(text)
    assert endpoint.tokenize(text) == ids and len(ids) > 3
    assert endpoint.detokenize(ids) == server.detokenize(ids) == text
