"""``servelab selftest``: how precise servelab's client is on this machine, and how far it goes.

Owns the measurement (docs/selftest.md). The mock server (``engines.mock_server``) runs in its
own process and streams on an exact schedule; this process drives it through the client a run
uses (``runner.drive.run_jobs`` with an ``openai``-kind engine pointed at it) and holds every
token-bearing chunk's arrival, as the client stamped it, against the moment the server wrote it
(both on CLOCK_MONOTONIC, which the two processes share):

- timing error: the first chunk's lateness (TTFT error), and each inter-chunk gap's error
  (client gap minus server gap), over a slow, a bursty and a fast engine;
- the ceiling: streams 1, 4, 16, 64, 256 on the fast engine, each for a few seconds, until the
  p99 arrival error passes ``error_bound_ms`` or the client's CPU passes ``cpu_bound_cores``;
  the ceiling is the last step that held (aggregate tokens/s, streams, CPU ms per token).

The client's chunk times are relative to its own send stamp (the ``StreamState``'s start).
``SendStamps`` is the clock handed to the client: it keeps, per request, the first reading
after the one ``run_jobs`` takes for ``Sent`` (no await lies between the two), so each chunk's
absolute arrival is exact; where that reading is missing, ``Sent`` (a few microseconds
earlier, which would make errors that much too small) stands in. The result is saved in the
cache (``store.selftest_file``) so reports can compare a run with this machine's ceiling.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import platform
import resource
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeGuard

import numpy as np
from pydantic import JsonValue

from servelab import __version__
from servelab.client import admin
from servelab.client.clock import WallAnchor
from servelab.client.payload import Sampling, build_payload
from servelab.client.stream import HttpRequest
from servelab.engines.base import Engine
from servelab.engines.mock_server import (
    PROFILE_HEADER,
    PROFILES,
    REQUEST_ID_HEADER,
    MockServerProcess,
)
from servelab.engines.registry import create_engine
from servelab.errors import EngineError, EngineStartError, EnvironmentProblem
from servelab.records import Observation, Outcome
from servelab.runner.drive import Sent, run_jobs
from servelab.runner.preflight import MachineLock
from servelab.spec.engine import EngineConfig
from servelab.store.selftest_file import (
    Bounds,
    Ceiling,
    ErrorStats,
    PreviousSelftest,
    ProfileErrors,
    SelftestHost,
    SelftestResult,
    Step,
    TimingError,
    read_selftest,
    write_selftest,
)

if TYPE_CHECKING:
    from servelab.runner.distributed.load_selftest import SplitRamp

ERROR_BOUND_MS = 1.0  # p99 arrival error a step may have and still count as kept up
CPU_BOUND_CORES = 1.0  # one event loop cannot use more than one core
RAMP_STREAMS = (1, 4, 16, 64, 256)
QUICK_RAMP_STREAMS = (1, 4, 16)
RAMP_TOKENS = 256  # tokens per request in the ramp (the fast engine: 128 ms each)


@dataclass(frozen=True, slots=True)
class Probe:
    """One measurement: ``streams`` in flight on ``profile`` for ``jobs`` requests or until
    ``duration_s`` has passed, whichever comes first."""

    profile: str
    streams: int
    jobs: int
    max_tokens: int
    duration_s: float = math.inf


@dataclass(frozen=True, slots=True)
class Plan:
    accuracy: tuple[Probe, ...]
    ramp: tuple[Probe, ...]


def ramp_step(streams: int, duration_s: float) -> Probe:
    """``streams`` on the fast engine for ``duration_s``, with jobs enough to stay busy."""
    request_s = PROFILES["fast"].schedule_s(RAMP_TOKENS)[-1][0]
    per_stream = math.ceil(duration_s / request_s) + 2
    return Probe("fast", streams, streams * per_stream, RAMP_TOKENS, duration_s)


def plan(quick: bool) -> Plan:
    """What a default (about 45 s on 2 cores) or a quick (about 10 s) selftest runs."""
    if quick:
        accuracy = (Probe("slow", 2, 2, 6), Probe("bursty", 2, 4, 24), Probe("fast", 2, 4, 128))
        return Plan(accuracy, tuple(ramp_step(n, 0.8) for n in QUICK_RAMP_STREAMS))
    accuracy = (Probe("slow", 4, 8, 16), Probe("bursty", 4, 16, 48), Probe("fast", 4, 32, 256))
    return Plan(accuracy, tuple(ramp_step(n, 3.0) for n in RAMP_STREAMS))


# ------------------------------------------------------------------------------ one probe


@dataclass
class Trace:
    """One request: when the client sent it and what it saw, and what the server did."""

    sent_ns: int
    obs: Observation
    exact: bool = True  # sent_ns is the client's own send stamp (else Sent's, a little earlier)
    emitted_ns: list[int] = field(default_factory=list)
    scheduled_ns: list[int] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)

    def arrivals_ns(self) -> list[int]:
        return [self.sent_ns + round(t * 1e9) for t in self.obs.chunk_t_s]

    @property
    def matched(self) -> bool:
        return self.obs.outcome is Outcome.OK and len(self.obs.chunk_t_s) == len(self.emitted_ns)


@dataclass
class ProbeRun:
    """What one probe measured."""

    probe: Probe
    traces: list[Trace]
    wall_s: float
    cpu_s: float
    loop_lag_p99_s: float | None

    @property
    def ok(self) -> list[Trace]:
        return [t for t in self.traces if t.matched]

    def tokens(self) -> int:
        return sum(t.obs.usage.completion_tokens for t in self.ok if t.obs.usage is not None)


def _engine(url: str) -> Engine:
    """An ``openai``-kind engine at the mock server: the path `bench --engine openai` takes."""
    return create_engine(EngineConfig(kind="openai", model="mock", endpoint=url), Path(os.devnull))


def _request_for(
    engine: Engine, probe: Probe, tag: str, stamps: SendStamps
) -> Callable[[int], HttpRequest]:
    _, body = build_payload(
        model="mock",
        sampling=Sampling(max_tokens=probe.max_tokens),
        messages=[{"role": "user", "content": "Count slowly."}],
    )

    def request_for(job: int) -> HttpRequest:
        headers = {REQUEST_ID_HEADER: f"{tag}-{job}", PROFILE_HEADER: probe.profile}
        stamps.arm(job)
        return HttpRequest(url=engine.chat_url(), payload=body, headers=headers)

    return request_for


class SendStamps:
    """A monotonic clock that notes each request's send stamp: armed by ``request_for`` (which
    ``run_jobs`` calls just before its ``Sent`` reading), it keeps the reading after that one,
    the client's own start of the request."""

    def __init__(self) -> None:
        self.stamps: dict[int, int] = {}
        self._job: int | None = None
        self._seen = 0

    def arm(self, job: int) -> None:
        self._job, self._seen = job, 0

    def now_ns(self) -> int:
        t = time.perf_counter_ns()
        if self._job is not None:
            self._seen += 1
            if self._seen == 2:
                self.stamps[self._job], self._job = t, None
        return t


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Driven:
    """What one client process saw of a probe: each job's ``Sent`` and observation, its send
    stamps, and its own load; ``shift_ns`` places its monotonic stamps on the server's
    monotonic clock (0 on the server's machine: CLOCK_MONOTONIC is one clock per host)."""

    seen: dict[int, tuple[Sent, Observation]]
    stamps: dict[int, int]
    wall_s: float
    cpu_s: float
    loop_lag_p99_s: float | None
    anchor: WallAnchor  # this process's wall clock and monotonic clock, read together
    shift_ns: int = 0


def drive_probe(
    url: str, probe: Probe, tag: str, jobs: Sequence[int] | None = None,
    streams: int | None = None, start_unix_s: float | None = None,
) -> Driven:  # fmt: skip
    """Drive the mock server at ``url`` through the real client: ``jobs`` of ``probe`` (None:
    all) with ``streams`` in flight (None: the probe's), from ``start_unix_s`` (this
    process's wall clock; None: now). Runs in this process, or on a Ray worker."""
    engine, clock = _engine(url), SendStamps()
    anchor = WallAnchor(wall_unix_s=0.0, monotonic_ns=0)  # Sent.unix_s = monotonic seconds
    seen: dict[int, tuple[Sent, Observation]] = {}
    while start_unix_s is not None and (left := start_unix_s - time.time()) > 0:
        time.sleep(min(left, 0.05))
    real = WallAnchor.take(clock)
    t0, cpu0 = time.perf_counter(), _cpu_s()
    load = run_jobs(
        engine,
        list(range(probe.jobs)) if jobs is None else list(jobs),
        streams or probe.streams,
        60.0,
        _request_for(engine, probe, tag, clock),
        lambda job, sent, obs: seen.__setitem__(job, (sent, obs)),
        clock,
        anchor,
        lambda: time.perf_counter() - t0 >= probe.duration_s,
    )
    # The client's own meter when it ran (it did unless there were no jobs), else the process.
    wall_s, cpu_s = time.perf_counter() - t0, _cpu_s() - cpu0
    if load is not None:
        wall_s, cpu_s = load.wall_s, load.cpu_s
    lag = load.loop_lag_p99_s if load is not None else None
    return Driven(seen, dict(clock.stamps), wall_s, cpu_s, lag, real)


def run_probe(url: str, probe: Probe, tag: str) -> ProbeRun:
    """Drive the mock server at ``url`` through the real client; match the server's record."""
    return probe_run(url, probe, [drive_probe(url, probe, tag)], tag)


def probe_run(url: str, probe: Probe, parts: Sequence[Driven], tag: str) -> ProbeRun:
    """One probe's figures from the client processes that drove it: their requests matched
    with the server's record, the longest wall time, and the busiest process's CPU share
    (over that wall time: the bound is per process)."""
    record = _emissions(url)
    traces = []
    for part in parts:
        for job, (sent, obs) in part.seen.items():
            trace = _trace(part.stamps.get(job), sent, obs, record.get(f"{tag}-{job}"))
            trace.sent_ns += part.shift_ns
            traces.append(trace)
    wall_s = max(p.wall_s for p in parts)
    share = max(p.cpu_s / p.wall_s if p.wall_s > 0 else 0.0 for p in parts)
    lags = [p.loop_lag_p99_s for p in parts if p.loop_lag_p99_s is not None]
    return ProbeRun(probe, traces, wall_s, share * wall_s, max(lags) if lags else None)


def _emissions(url: str) -> dict[str, JsonValue]:  # JSON boundary: the server's record
    try:
        answer = admin.get_json(f"{url}/emissions", timeout_s=30.0)
    except admin.AdminHttpError as exc:
        raise EngineError(
            f"the selftest's mock server stopped answering ({exc}); run "
            "`servelab selftest` again on a machine with a free core"
        ) from exc
    requests = answer.get("requests") if isinstance(answer, dict) else None
    return dict(requests) if isinstance(requests, dict) else {}


@contextlib.contextmanager
def _machine() -> Iterator[None]:
    """The machine lock a run holds: a selftest beside a run would distort both."""
    lock = MachineLock()
    holder = lock.acquire(Path("selftest"))
    if holder is not None:
        raise EnvironmentProblem(
            f"a servelab run holds this machine ({holder}); run `servelab selftest` after it"
        )
    try:
        yield
    finally:
        lock.release()


@contextlib.contextmanager
def _mock_server() -> Iterator[MockServerProcess]:
    try:
        server = MockServerProcess("fast").__enter__()
    except (OSError, RuntimeError) as exc:
        raise EngineStartError(
            f"the selftest's mock server did not start ({exc}); try "
            "`python -m servelab.engines.mock_server --port 0` to see why"
        ) from exc
    try:
        yield server
    finally:
        server.stop()


def _trace(stamp_ns: int | None, sent: Sent, obs: Observation, server: JsonValue) -> Trace:
    sent_ns = round(sent.unix_s * 1e9)
    exact = stamp_ns is not None and 0 <= stamp_ns - sent_ns < 10_000_000
    trace = Trace(stamp_ns if exact and stamp_ns is not None else sent_ns, obs, exact=exact)
    if isinstance(server, dict) and server:
        emitted, scheduled, tokens = server["emitted_ns"], server["scheduled_ns"], server["tokens"]
        if _ints(emitted) and _ints(scheduled) and _ints(tokens):
            trace.emitted_ns, trace.scheduled_ns, trace.tokens = emitted, scheduled, tokens
    return trace


def _ints(value: JsonValue) -> TypeGuard[list[int]]:
    return isinstance(value, list) and all(isinstance(v, int) for v in value)


# ------------------------------------------------------------------------------ the figures


def error_stats(values_ns: Sequence[float]) -> ErrorStats:
    """Median, p99 and maximum, in milliseconds (None without values)."""
    if not len(values_ns):
        return ErrorStats()
    a = np.asarray(values_ns, dtype=float) / 1e6
    return ErrorStats(float(np.median(a)), float(np.percentile(a, 99)), float(a.max()))


@dataclass
class Errors:
    """Errors of the client's stamps against the server's writes, in nanoseconds."""

    ttft: list[float] = field(default_factory=list)  # first chunk: arrival stamp - write
    gaps: list[float] = field(default_factory=list)  # |client gap - server gap|
    arrivals: list[float] = field(default_factory=list)  # every chunk: arrival stamp - write
    server_lag: list[float] = field(default_factory=list)  # write - schedule (the server's own)

    def add(self, trace: Trace) -> None:
        late = [a - e for a, e in zip(trace.arrivals_ns(), trace.emitted_ns, strict=True)]
        self.ttft += late[:1]
        self.gaps += [abs(b - a) for a, b in itertools.pairwise(late)]
        self.arrivals += late
        self.server_lag += [
            e - s for e, s in zip(trace.emitted_ns, trace.scheduled_ns, strict=True)
        ]

    @classmethod
    def of(cls, runs: Sequence[ProbeRun]) -> Errors:
        errors = cls()
        for run in runs:
            for trace in run.ok:
                errors.add(trace)
        return errors

    def timing(self) -> TimingError:
        return TimingError(
            error_stats(self.ttft), error_stats(self.gaps), error_stats(self.arrivals)
        )


SERVER_BEHIND_MS = 10.0  # the mock server's p99 lag behind its own schedule that marks it saturated


def step_of(run: ProbeRun, error_bound_ms: float, cpu_bound_cores: float) -> Step:
    """One ramp step's figures and whether the client kept up (``error_bound_ms``: the p99
    arrival error it may have; ``cpu_bound_cores``: the CPU it may use)."""
    errors, tokens = Errors.of([run]), run.tokens()
    p99 = error_stats(errors.arrivals).p99
    cores = run.cpu_s / run.wall_s if run.wall_s > 0 else 0.0
    failed = len(run.traces) - len(run.ok)
    why = None
    if failed or p99 is None:
        why = f"{failed} of {len(run.traces)} requests failed or did not match the server's record"
    elif p99 > error_bound_ms:
        why = f"p99 arrival error {p99:.2f} ms > {error_bound_ms:.2f} ms"
    elif cores > cpu_bound_cores:
        why = f"client CPU {cores:.2f} cores > {cpu_bound_cores:g}"
    server_lag = error_stats(errors.server_lag)
    return Step(
        streams=run.probe.streams,
        requests=len(run.traces),
        tokens=tokens,
        wall_s=run.wall_s,
        tokens_per_s=tokens / run.wall_s if run.wall_s else 0.0,
        cpu_cores=cores,
        cpu_ms_per_token=run.cpu_s * 1000 / tokens if tokens else None,
        loop_lag_p99_ms=None if run.loop_lag_p99_s is None else run.loop_lag_p99_s * 1000,
        arrival_ms=error_stats(errors.arrivals),
        itl_ms=error_stats(errors.gaps),
        server_lag_ms=server_lag,
        kept_up=why is None,
        why_not=why,
        server_behind=(server_lag.p99 or 0.0) > SERVER_BEHIND_MS,
    )


def error_bound(bound_ms: float, first: Step) -> float:
    """The p99 arrival error a step may have: ``bound_ms``, or twice what one stream showed
    when this machine's own noise is larger (the ceiling is where the client's load makes its
    timing worse, not where the machine already was)."""
    floor = first.arrival_ms.p99
    return max(bound_ms, 2 * floor) if isinstance(floor, float) else bound_ms


def host() -> SelftestHost:
    return SelftestHost(
        cpu_count=os.cpu_count(),
        machine=platform.machine(),
        python=platform.python_version(),
        system=platform.system(),
        load_avg_1m=os.getloadavg()[0],
    )


# ------------------------------------------------------------------------------ the selftest

Progress = Callable[[str], None]


def selftest(
    *,
    quick: bool = False,
    error_bound_ms: float = ERROR_BOUND_MS,
    cpu_bound_cores: float = CPU_BOUND_CORES,
    progress: Progress | None = None,
    save: bool = True,
) -> SelftestResult:
    """Measure the client's timing error and ceiling (``to_json``: docs/selftest.md's JSON)."""
    return _selftest(quick, error_bound_ms, cpu_bound_cores, progress, save, None)[0]


def selftest_split(
    *,
    ray: str,
    workers: int | None = None,
    quick: bool = False,
    error_bound_ms: float = ERROR_BOUND_MS,
    cpu_bound_cores: float = CPU_BOUND_CORES,
    progress: Progress | None = None,
    save: bool = True,
) -> tuple[SelftestResult, SplitRamp]:
    """The selftest, then its ceiling ramp again with the load split over client workers on
    ``workers`` nodes of the Ray cluster ``ray`` (``distributed.load_selftest``): the same mock
    server, the same error bound. Only the one-host result is saved."""
    from servelab.runner.distributed.cluster import parse_target
    from servelab.runner.distributed.load_selftest import split_ramp

    target, probes = parse_target(ray), plan(quick).ramp

    def split(url: str, bound_ms: float, tell: Progress) -> SplitRamp:
        return split_ramp(target, workers, url, probes, bound_ms, cpu_bound_cores, tell)

    result, ramp = _selftest(quick, error_bound_ms, cpu_bound_cores, progress, save, split)
    assert ramp is not None
    return result, ramp


def _selftest(
    quick: bool, error_bound_ms: float, cpu_bound_cores: float, progress: Progress | None,
    save: bool, split: Callable[[str, float, Progress], SplitRamp] | None,
) -> tuple[SelftestResult, SplitRamp | None]:  # fmt: skip
    steps_plan, tell = plan(quick), progress or (lambda _: None)
    previous = read_selftest()
    ramp = None
    with _machine(), _mock_server() as server:
        accuracy = []
        for i, probe in enumerate(steps_plan.accuracy):
            tell(f"timing: {probe.profile} engine, {probe.streams} streams")
            accuracy.append(run_probe(server.url, probe, f"a{i}"))
        steps, bound_ms = _ramp(server.url, steps_plan.ramp, error_bound_ms, cpu_bound_cores, tell)
        if split is not None:
            ramp = split(server.url, bound_ms, tell)
    result = _result(
        quick,
        accuracy,
        steps,
        Bounds(error_bound_ms, cpu_bound_cores, bound_ms),
        PreviousSelftest.from_json(previous),
    )
    if save:
        write_selftest(result)
    return result, ramp


def _ramp(
    url: str, probes: Sequence[Probe], error_bound_ms: float, cpu_bound_cores: float, tell: Progress
) -> tuple[list[Step], float]:
    """Ramp until a step does not keep up; the steps and the error bound they were held to."""
    steps: list[Step] = []
    bound_ms = error_bound_ms
    for i, probe in enumerate(probes):
        tell(f"ceiling: {probe.streams} streams")
        run = run_probe(url, probe, f"r{i}")
        if i == 0:
            bound_ms = error_bound(error_bound_ms, step_of(run, math.inf, math.inf))
        steps.append(step_of(run, bound_ms, cpu_bound_cores))
        if not steps[-1].kept_up:
            break
    return steps, bound_ms


def _result(
    quick: bool,
    accuracy: Sequence[ProbeRun],
    steps: Sequence[Step],
    bounds: Bounds,
    previous: PreviousSelftest | None,
) -> SelftestResult:
    profiles = {}
    for run in accuracy:
        errors = Errors.of([run])
        profiles[run.probe.profile] = ProfileErrors(
            streams=run.probe.streams,
            requests=len(run.traces),
            matched=len(run.ok),
            exact_send_stamps=sum(t.exact for t in run.traces),
            errors=errors.timing(),
            server_lag_ms=error_stats(errors.server_lag),
        )
    return SelftestResult(
        servelab_version=__version__,
        created_unix_s=time.time(),
        quick=quick,
        host=host(),
        bounds=bounds,
        timing_error=Errors.of(accuracy).timing(),
        server_lag_ms=error_stats(Errors.of(accuracy).server_lag),
        profiles=profiles,
        ceiling=Ceiling.of(steps),
        steps=tuple(steps),
        previous=previous,
    )
