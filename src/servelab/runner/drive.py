"""Driving requests at an engine: one job -> one HTTP request -> one observation.

Owns the request a workload prompt becomes (sampling, the arm's system prompt, unique prefix,
the engine's fairness extras), the ``RequestSource`` seam (``PromptSource``: today's single-turn
prompts; the conversation and trace sources live in ``runner.request_source``) and
``run_jobs``, which sends a list of jobs closed-loop (a fixed number in flight) or open-loop
(on a ``Schedule``), follows sessions turn by turn, and hands each observation with its
``Sent`` times to a callback the moment it completes. Shared by ``bench`` and experiments.
The engine decides how requests travel: its class's ``keep_alive``, and its ``transport()``
(None: the real network) unless the caller injects one (the executor seam's ``transport``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar, runtime_checkable

from servelab.client.clock import Clock, WallAnchor
from servelab.client.load import closed_loop, open_loop
from servelab.client.meter import ClientMeter
from servelab.client.payload import Sampling, build_payload
from servelab.client.session import StreamSession
from servelab.client.stream import Deadline, HttpRequest, stream_request
from servelab.client.transport import Transport
from servelab.engines.base import Engine
from servelab.engines.registry import engine_class
from servelab.errors import EngineCrashedError
from servelab.records import ClientLoad, Observation, Outcome, Phase
from servelab.redact import has_secrets, redact, redact_data
from servelab.workloads import Workload

J = TypeVar("J")


@dataclass(frozen=True, slots=True)
class RequestParams:
    """What an arm sends with every request: sampling, output limit, and the system prompt
    that replaces the workload's own (its ``system_prompt`` variant; None: the workload's)."""

    max_tokens: int
    temperature: float
    seed: int
    ignore_eos: bool
    system: str | None = None


@dataclass(frozen=True, slots=True)
class Job:
    """One request to send: its planned id, which prompt (or session) and where in a session."""

    request_id: str  # "" for a bench's rows
    prompt_index: int
    phase: Phase
    session: int | None = None  # the conversation it belongs to (None: a single-turn prompt)
    turn: int = 0


class RequestSource(Protocol):
    """What a block's jobs become: requests, follow-up turns, and the ids their rows carry."""

    def request_for(self, job: Job) -> HttpRequest: ...

    def follow(self, job: Job, obs: Observation) -> tuple[Job, float] | None: ...

    def prompt_id(self, job: Job) -> str: ...

    def session(self, job: Job) -> tuple[str | None, int | None]: ...


@runtime_checkable
class StartsJobs(Protocol):
    """A source that makes its own first jobs (conversations: session numbers)."""

    def start_jobs(
        self, count: int, phase: Phase, request_ids: Sequence[str] = ()
    ) -> list[Job]: ...


SourceFactory = Callable[[Engine], RequestSource]
"""A block's source, made once its engine is up (trace sources tokenize through it)."""


@dataclass(frozen=True, slots=True)
class PromptSource:
    """The workload's single-turn prompts, one request each (no sessions)."""

    workload: Workload
    engine: Engine
    params: RequestParams

    def request_for(self, job: Job) -> HttpRequest:
        return build_request(self.workload, job.prompt_index, self.engine, self.params)

    def follow(self, job: Job, obs: Observation) -> tuple[Job, float] | None:
        return None

    def prompt_id(self, job: Job) -> str:
        return self.workload.prompts[job.prompt_index].id

    def session(self, job: Job) -> tuple[str | None, int | None]:
        return None, None

    def start_jobs(self, count: int, phase: Phase, request_ids: Sequence[str] = ()) -> list[Job]:
        n = len(self.workload.prompts)
        ids = [*request_ids, *[""] * (count - len(request_ids))]
        return [Job(ids[i], i % n, phase) for i in range(count)] if n else []


def build_request(
    workload: Workload, prompt_index: int, engine: Engine, params: RequestParams
) -> HttpRequest:
    workload = workload.with_system(params.system)
    item = workload.prompts[prompt_index]
    prefix = f"[{uuid.uuid4().hex[:12]}] " if engine.config.unique_prefix else None
    if item.prompt is not None:
        return request_from(
            engine, params, prompt=item.prompt, max_tokens=item.max_tokens, unique_prefix=prefix
        )
    return request_from(
        engine, params, messages=workload.chat_messages(item), tools=workload.tools_for(item),
        max_tokens=item.max_tokens, unique_prefix=prefix,
    )  # fmt: skip


def request_from(
    engine: Engine,
    params: RequestParams,
    *,
    messages: Sequence[Mapping[str, object]] | None = None,
    prompt: str | None = None,
    tools: Sequence[Mapping[str, object]] = (),
    max_tokens: int | None = None,
    ignore_eos: bool | None = None,
    unique_prefix: str | None = None,
) -> HttpRequest:
    """One streamed request to ``engine``: chat ``messages`` (with ``tools``) or a raw
    ``prompt``; ``max_tokens`` below the run's cap lowers it; the engine's fairness extras."""
    limit = min(max_tokens, params.max_tokens) if max_tokens else params.max_tokens
    sampling = Sampling(
        max_tokens=limit, temperature=params.temperature, seed=params.seed,
        ignore_eos=params.ignore_eos if ignore_eos is None else ignore_eos,
    )  # fmt: skip
    kind, body = build_payload(
        model=engine.config.model, sampling=sampling, messages=messages, prompt=prompt,
        tools=tools, extras=engine.request_extras(), unique_prefix=unique_prefix,
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


# While requests run, the engine process is also checked on a timer: a request whose engine
# died can wait on a connection that never ends until its own timeout (300 s by default; seen
# about once in 20 kills of llama-server mid-stream). A crash seen this way gives the requests
# CRASH_SETTLE_S to fail and be recorded as usual; those still waiting then are cancelled.
CRASH_WATCH_S = 0.5
CRASH_SETTLE_S = 3.0


class _CrashWatch:
    """Checks ``engine`` every ``CRASH_WATCH_S`` while ``loop`` runs; on a crash the loop
    still running after ``CRASH_SETTLE_S`` is cancelled and ``crash`` holds the reason."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.crash: EngineCrashedError | None = None

    async def watch(self, loop: asyncio.Task[ClientLoad]) -> None:
        while not loop.done():
            await asyncio.sleep(CRASH_WATCH_S)
            try:
                self.engine.check_alive()
            except EngineCrashedError as exc:
                await asyncio.wait([loop], timeout=CRASH_SETTLE_S)
                if not loop.done():
                    self.crash = exc
                    loop.cancel()
                return

    async def run(self, loop: asyncio.Task[ClientLoad]) -> ClientLoad:
        """``loop``'s result; its crash instead when the watch had to cancel it."""
        watcher = asyncio.ensure_future(self.watch(loop))
        try:
            return await loop
        except asyncio.CancelledError:
            if self.crash is not None:
                raise self.crash from None
            raise
        finally:
            watcher.cancel()


@dataclass(frozen=True, slots=True)
class Sent:
    """When a request went: its send and, in the open loop, its scheduled send (wall clock)."""

    unix_s: float
    sched_unix_s: float | None = None

    @property
    def lag_s(self) -> float | None:
        return None if self.sched_unix_s is None else self.unix_s - self.sched_unix_s


@dataclass(frozen=True, slots=True)
class Schedule:
    """An open-loop block's send times (seconds from its start) and its in-flight cap."""

    offsets_s: tuple[float, ...]
    max_concurrency: int | None = None


MAX_READERS = 1024  # an uncapped open loop's reader pool (threads start only when used)


def pool_size(n_jobs: int, concurrency: int, schedule: Schedule | None) -> int:
    """Requests the client must be able to hold in flight at once."""
    if schedule is None:
        return concurrency
    return schedule.max_concurrency or max(1, min(n_jobs, MAX_READERS))


def run_jobs(
    engine: Engine,
    jobs: Sequence[J],
    concurrency: int,
    timeout_s: float,
    request_for: Callable[[J], HttpRequest],
    on_result: Callable[[J, Sent, Observation], None],
    clock: Clock,
    anchor: WallAnchor,
    should_stop: Callable[[], bool],
    transport: Transport | None = None,
    *,
    schedule: Schedule | None = None,
    follow: Callable[[J, Observation], tuple[J, float] | None] | None = None,
) -> ClientLoad | None:
    """Send ``jobs`` with ``concurrency`` in flight, or on ``schedule`` (open loop);
    ``on_result(job, sent, obs)``; ``follow`` gives a session's next turn. ``transport``
    replaces the engine's own (``engine.transport()``). Returns the client's own load over
    the block (CPU, event-loop lag, most streams in flight); None when there were no jobs."""
    if not jobs:
        return None
    deadline = Deadline(total_s=timeout_s)
    keepalive = engine_class(engine.config.kind).keep_alive
    transport = transport or engine.transport()
    size = pool_size(len(jobs), concurrency, schedule)
    ahead = None if follow is None else _observed(follow)

    async def drive() -> ClientLoad:
        with StreamSession(size, keepalive, transport) as client, ClientMeter(clock) as meter:

            async def send(job: J, wait_s: float, sched_ns: int | None) -> tuple[Sent, Observation]:
                request = request_for(job)
                now = clock.now_ns()
                sched = None if sched_ns is None else anchor.to_unix_s(sched_ns)
                obs = await stream_request(client, request, clock, deadline, wait_s)
                return Sent(anchor.to_unix_s(now), sched), scrubbed(obs)

            def done(job: J, result: tuple[Sent, Observation]) -> None:
                on_result(job, result[0], result[1])

            if schedule is None:
                await closed_loop(
                    list(jobs), concurrency, lambda j, w: send(j, w, None), done, clock,
                    should_stop, ahead,
                )  # fmt: skip
            else:
                await open_loop(
                    list(jobs), schedule.offsets_s, schedule.max_concurrency,
                    lambda j, t: send(j, 0.0, t), done, clock, should_stop, ahead,
                )  # fmt: skip
            return meter.result(client.streams_max)

    async def watched() -> ClientLoad:
        return await _CrashWatch(engine).run(asyncio.ensure_future(drive()))

    return asyncio.run(watched())


def _observed(
    follow: Callable[[J, Observation], tuple[J, float] | None],
) -> Callable[[J, tuple[Sent, Observation]], tuple[J, float] | None]:
    return lambda job, result: follow(job, result[1])
