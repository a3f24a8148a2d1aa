"""``servelab selftest --ray``: the selftest's ceiling ramp with the load split over Ray nodes.

Owns the split ramp: the same steps as the one-host ramp (those with at least one stream per
worker), each step's streams and requests dealt over the client workers of
``distributed.load`` (stream counts as ``split_concurrency`` deals them, request ``j`` to
worker ``j % N``), every worker starting at one moment on the driver's clock, and the step
judged as the one-host step is (``runner.selftest.step_of``: every request matched the mock
server's record, p99 arrival error within the bound the one-host ramp used, the busiest
worker's CPU within the bound). Side by side with the one-host ceiling it shows whether one
client process was the bottleneck.

Assumptions, stated once:

- The mock server runs on the driver's machine. A worker there shares its CLOCK_MONOTONIC, so
  its arrival stamps are exact. A worker on another machine has its stamps placed on the
  server's clock through its measured wall-clock offset: their error then includes the
  offset's uncertainty (half the round trip, ``rtt_s``), far above a 1 ms bound on most
  networks; its steps say so in ``why_not``.
- Workers of a local cluster share this machine's cores with each other and with the mock
  server: the figure shows the method, not a bigger machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pydantic import JsonValue

from servelab.runner.distributed.cluster import RayTarget
from servelab.runner.distributed.load import LEAD_S, LoadPool, split_concurrency
from servelab.runner.selftest import Driven, Probe, ProbeRun, drive_probe, probe_run, step_of
from servelab.store import LoadWorkerRecord
from servelab.store.selftest_file import Ceiling, Step

JsonObject = dict[str, JsonValue]


@dataclass(frozen=True, slots=True)
class SplitRamp:
    """The ramp with the load split over ``workers`` (by node label), and its ceiling."""

    address: str
    workers: dict[str, LoadWorkerRecord]
    steps: tuple[Step, ...]
    ceiling: Ceiling
    error_p99_ms_used: float
    skipped: tuple[int, ...] = field(default=())  # one-host steps with fewer streams than workers

    def to_json(self) -> JsonObject:
        return {
            "address": self.address,
            "workers": {k: v.to_json() for k, v in self.workers.items()},
            "error_p99_ms_used": self.error_p99_ms_used,
            "ceiling": self.ceiling.to_json(),
            "steps": [s.to_json() for s in self.steps],
            "skipped_streams": list(self.skipped),
        }


def split_ramp(
    target: RayTarget, workers: int | None, url: str, probes: Sequence[Probe], bound_ms: float,
    cpu_bound_cores: float, tell: Callable[[str], None],
) -> SplitRamp:  # fmt: skip
    """Ramp the ``probes`` with at least one stream per worker until a step does not keep up."""
    tell(f"Ray: {'starting' if target.local else 'joining'} {target.text}")
    pool = LoadPool.open(target, workers)
    try:
        n = len(pool.nodes)
        pool.before = pool.measure()
        steps: list[Step] = []
        for i, probe in enumerate(p for p in probes if p.streams >= n):
            tell(f"ceiling over {n} Ray workers: {probe.streams} streams")
            steps.append(step_of(split_probe(pool, url, probe, f"s{i}"), bound_ms,
                                 cpu_bound_cores))  # fmt: skip
            if not steps[-1].kept_up:
                break
        pool.after = pool.measure()
        return SplitRamp(
            address=target.text, workers=pool.records(), steps=tuple(steps),
            ceiling=Ceiling.of(steps), error_p99_ms_used=bound_ms,
            skipped=tuple(p.streams for p in probes if p.streams < n),
        )  # fmt: skip
    finally:
        pool.close()


def split_probe(pool: LoadPool, url: str, probe: Probe, tag: str) -> ProbeRun:
    """One probe driven by every worker at once, from one start on the driver's clock."""
    labels = [node.label for node in pool.nodes]
    streams = split_concurrency(probe.streams, len(labels), "streams")
    start = time.time() + LEAD_S
    refs = {}
    for w, label in enumerate(labels):
        jobs = [j for j in range(probe.jobs) if j % len(labels) == w]
        refs[label] = pool.actors[label].call.remote(
            drive_probe, url, probe, tag, jobs, streams[w], start + pool.before[label].offset_s
        )
    parts: list[Driven] = []
    for label, ref in refs.items():
        part: Driven = pool.get(ref, label)
        pool.requests[label] = pool.requests.get(label, 0) + len(part.seen)
        if label not in pool.same_host:
            part.shift_ns = shift_ns(part, pool.before[label].offset_s)
        parts.append(part)
    return probe_run(url, probe, parts, tag)


def shift_ns(part: Driven, offset_s: float) -> int:
    """What places a worker's monotonic stamp on the driver's monotonic clock: through the
    worker's wall clock, its offset to the driver's, and the driver's wall clock now."""
    here = time.time_ns(), time.perf_counter_ns()
    there_wall_ns = round((part.anchor.wall_unix_s - offset_s) * 1e9)
    return (there_wall_ns - here[0]) + here[1] - part.anchor.monotonic_ns
