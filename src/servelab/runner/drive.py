"""Driving requests at an engine: one workload prompt -> one HTTP request -> one observation.

Owns the request a workload prompt becomes (sampling, unique prefix, the engine's fairness
extras) and the closed loop that sends a list of jobs with a fixed number in flight, handing
each observation to a callback the moment it completes. Shared by ``bench`` and experiments.
The engine decides how requests travel: its class's ``keep_alive``, and its ``transport()``
(None: the real network) unless the caller injects one (the executor seam's ``transport``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from servelab.client.clock import Clock, WallAnchor
from servelab.client.load import closed_loop
from servelab.client.payload import Sampling, build_payload
from servelab.client.session import StreamSession
from servelab.client.stream import Deadline, HttpRequest, stream_request
from servelab.client.transport import Transport
from servelab.engines.base import Engine
from servelab.engines.registry import engine_class
from servelab.errors import EngineCrashedError
from servelab.records import Observation, Outcome
from servelab.redact import has_secrets, redact, redact_data
from servelab.workloads import Workload

J = TypeVar("J")


@dataclass(frozen=True, slots=True)
class RequestParams:
    max_tokens: int
    temperature: float
    seed: int
    ignore_eos: bool


def build_request(
    workload: Workload, prompt_index: int, engine: Engine, params: RequestParams
) -> HttpRequest:
    item = workload.prompts[prompt_index]
    # The run's max_tokens is a cap; a prompt's own, lower limit still applies.
    limit = min(item.max_tokens, params.max_tokens) if item.max_tokens else params.max_tokens
    sampling = Sampling(
        max_tokens=limit,
        temperature=params.temperature,
        seed=params.seed,
        ignore_eos=params.ignore_eos,
    )
    prefix = f"[{uuid.uuid4().hex[:12]}] " if engine.config.unique_prefix else None
    if item.prompt is not None:
        kind, body = build_payload(
            model=engine.config.model, sampling=sampling, prompt=item.prompt,
            extras=engine.request_extras(), unique_prefix=prefix,
        )  # fmt: skip
    else:
        kind, body = build_payload(
            model=engine.config.model, sampling=sampling,
            messages=workload.chat_messages(item), tools=workload.tools_for(item),
            extras=engine.request_extras(), unique_prefix=prefix,
        )  # fmt: skip
    url = engine.chat_url() if kind == "chat" else engine.completions_url()
    return HttpRequest(url=url, payload=body, headers=engine.request_headers())


def scrubbed(obs: Observation) -> Observation:
    """``obs`` with any registered secret redacted from the server's text: where server text
    enters a record, so an API key the server echoes in an error reaches no row or screen."""
    if not has_secrets():
        return obs
    return dataclasses.replace(
        obs, error=redact_data(obs.error), text=redact(obs.text), reasoning=redact(obs.reasoning),
        tool_calls=tuple(
            dataclasses.replace(c, name=redact(c.name), arguments=redact(c.arguments))
            for c in obs.tool_calls
        ),
        server_timings=redact_data(obs.server_timings), extra=redact_data(obs.extra),
    )  # fmt: skip


# How long a refused or reset connection waits for a dying engine to be seen dead: without it,
# the requests after a kill can all fail before the process is reaped, and the run would end as
# "every request failed" instead of "the engine crashed".
CRASH_GRACE_S = 0.5


def crash_after(engine: Engine, obs: Observation) -> EngineCrashedError | None:
    """After a failed request: the engine's own crash, if that is why it failed."""
    if obs.outcome is Outcome.OK:
        return None
    grace = CRASH_GRACE_S if obs.outcome is Outcome.CONNECTION_ERROR else 0.0
    try:
        engine.check_alive(grace)
    except EngineCrashedError as exc:
        return exc
    return None


def run_jobs(
    engine: Engine,
    jobs: Sequence[J],
    concurrency: int,
    timeout_s: float,
    request_for: Callable[[J], HttpRequest],
    on_result: Callable[[J, float, Observation], None],
    clock: Clock,
    anchor: WallAnchor,
    should_stop: Callable[[], bool],
    transport: Transport | None = None,
) -> None:
    """Send ``jobs`` with ``concurrency`` in flight; ``on_result(job, sent_unix_s, obs)``.
    ``transport`` replaces the engine's own (``engine.transport()``)."""
    if not jobs:
        return
    deadline = Deadline(total_s=timeout_s)
    keepalive = engine_class(engine.config.kind).keep_alive
    transport = transport or engine.transport()

    async def drive() -> None:
        with StreamSession(concurrency, keepalive, transport) as client:

            async def run_one(job: J, wait_s: float) -> tuple[float, Observation]:
                request = request_for(job)
                sent = anchor.to_unix_s(clock.now_ns())
                obs = await stream_request(client, request, clock, deadline, wait_s)
                return sent, scrubbed(obs)

            def done(job: J, result: tuple[float, Observation]) -> None:
                on_result(job, result[0], result[1])

            await closed_loop(list(jobs), concurrency, run_one, done, clock, should_stop)

    asyncio.run(drive())
