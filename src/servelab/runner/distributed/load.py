"""Distributed load generation: client workers on several Ray nodes drive one endpoint.

Owns ``servelab bench --ray``'s client side (and the split ``servelab selftest --ray`` ramps
with): one ``LoadWorker`` actor per node (pinned to it as ``distributed.spread`` pins its
workers), each worker's wall-clock offset to the driver, measured NTP-style before and after
the measured requests (``estimate_offset``), the split of a block's requests over the workers
(``split_concurrency``, ``job_owners``) and ``LoadExecutor``, the bench's ``BlockExecutor``
whose measured requests go out from the workers instead of this process.

Assumptions, stated once:

- The driver starts the engine, warms it up and scrapes its counters, as a bench on one
  machine does; only the measured requests travel. The driver builds every request (prompt,
  sampling, headers) and each worker sends its share through the same client a bench uses
  (``runner.drive.run_jobs``), so a worker needs servelab and Ray, not the engine or the model.
- Closed loop: the concurrency ``C`` is split over the ``N`` workers (``C >= N``), and job ``j``
  goes to the worker owning slot ``j % C`` (slots dealt round-robin), so each worker's share of
  the jobs matches its share of the slots. Open loop: job ``i`` of the one seeded schedule goes
  to worker ``i % N``, sent at its time on the driver's clock (a common start, converted to
  each worker's clock through its offset); a cap on requests in flight is split like ``C``.
- Clock offset = worker's wall clock minus the driver's at the same instant; the estimate
  keeps the round trip with the shortest time (its error is at most half that round trip).
  Rows' wall-clock times (``t_send_unix_s``, ``t_sched_unix_s``) are converted to the driver's
  clock with the offset measured before; intervals (TTFT, e2e, lag) are on one worker's clock
  and need no conversion.
- One writer: only the driver writes ``requests.jsonl``; a row gets its ``seq`` in arrival
  order and a ``node`` field (the worker's label) right after ``request_id``.
- Requests go over the network: an engine with an in-process transport (``replay``) cannot be
  driven from other nodes, and a conversation's later turns (which follow its replies) are not
  split; both are refused.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

from servelab.client.clock import MonotonicClock, WallAnchor
from servelab.client.stream import HttpRequest
from servelab.engines.base import Engine
from servelab.errors import EnvironmentProblem, UsageError
from servelab.records import ClientLoad, Phase
from servelab.runner.distributed.cluster import (
    RayCluster,
    RayNode,
    RayTarget,
    driver_address,
    ray_get,
)
from servelab.runner.distributed.spread import with_node
from servelab.runner.drive import Job, RequestSource, Schedule, Sent, crash_after, run_jobs
from servelab.runner.lifecycle import Block, BlockExecutor
from servelab.store import LoadWorkerRecord, RequestRow
from servelab.store.jsonl import JsonlWriter
from servelab.store.metrics_files import write_client_load

PINGS = 8  # round trips per offset estimate
LEAD_S = 0.5  # the common start lies this far ahead of the moment the shares are sent
LOOPBACK = ("127.", "localhost", "::1")

Event = tuple[str, Any]


# -- the pure parts -----------------------------------------------------------------------------
def split_concurrency(total: int, workers: int, flag: str = "--concurrency") -> tuple[int, ...]:
    """``total`` requests in flight dealt over ``workers`` (the first ones take the rest)."""
    if total < workers:
        raise UsageError(
            f"{flag} {total} is less than --workers {workers}: each worker needs at least one "
            f"request in flight; raise {flag} or lower --workers"
        )
    return tuple(total // workers + (1 if i < total % workers else 0) for i in range(workers))


def job_owners(n_jobs: int, workers: int, concurrency: int | None = None) -> tuple[int, ...]:
    """Which worker sends job ``j``: closed loop (``concurrency``) the owner of slot
    ``j % concurrency``, slots dealt round-robin; open loop (None) worker ``j % workers``."""
    if concurrency is None:
        return tuple(j % workers for j in range(n_jobs))
    return tuple((j % concurrency) % workers for j in range(n_jobs))


@dataclass(frozen=True, slots=True)
class ClockOffset:
    """A worker's wall clock minus the driver's (s), and the round trip it was measured
    with: the true offset lies within ``rtt_s / 2`` of ``offset_s``."""

    offset_s: float
    rtt_s: float

    def to_driver(self, sent: Sent) -> Sent:
        """``sent`` (the worker's wall clock) on the driver's clock."""
        sched = None if sent.sched_unix_s is None else sent.sched_unix_s - self.offset_s
        return Sent(sent.unix_s - self.offset_s, sched)


def estimate_offset(samples: Sequence[tuple[float, float, float]]) -> ClockOffset:
    """NTP-style, from round trips ``(t0, t_worker, t1)`` (driver send, worker reading, driver
    receive): the one with the shortest round trip, offset ``t_worker - (t0 + t1) / 2``."""
    if not samples:
        raise ValueError("no round trips to estimate a clock offset from")
    t0, tw, t1 = min(samples, key=lambda s: s[2] - s[0])
    return ClockOffset(tw - (t0 + t1) / 2, t1 - t0)


def merged_load(loads: Sequence[ClientLoad]) -> ClientLoad | None:
    """The clients' load over a block: the longest wall time, every process's CPU, the worst
    loop lag, the streams held by all at once (at most), one process per worker."""
    if not loads:
        return None
    lags = [x.loop_lag_p99_s for x in loads if x.loop_lag_p99_s is not None]
    maxes = [x.loop_lag_max_s for x in loads if x.loop_lag_max_s is not None]
    return ClientLoad(
        wall_s=max(x.wall_s for x in loads), cpu_user_s=sum(x.cpu_user_s for x in loads),
        cpu_sys_s=sum(x.cpu_sys_s for x in loads), loop_lag_p99_s=max(lags) if lags else None,
        loop_lag_max_s=max(maxes) if maxes else None,
        streams_max=sum(x.streams_max for x in loads), processes=sum(x.processes for x in loads),
    )  # fmt: skip


def reachable(url: str, bind: str, driver_ip: str | None) -> str:
    """``url`` as a worker on another machine reaches it (``driver_ip`` None: every worker
    shares the driver's machine, ``url`` as it is): an engine listening on every address
    (``bind`` 0.0.0.0) at the driver's address; a loopback-only one cannot be reached."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if driver_ip is None or not host.startswith(LOOPBACK):
        return url
    if bind not in ("0.0.0.0", "::"):
        raise UsageError(
            f"--ray: workers on other machines cannot reach {parts.scheme}://{parts.netloc} "
            "(loopback only); give --bind 0.0.0.0 (a managed engine) or an --endpoint they reach"
        )
    netloc = f"{driver_ip}:{parts.port}" if parts.port else driver_ip
    return urlunsplit(parts._replace(netloc=netloc))


# -- on a node ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Share:
    """One worker's part of a block: the requests it sends (built by the driver), how many in
    flight, and when to start (its own wall clock); ``offsets_s`` (open loop): each request's
    send time after the start."""

    kind: str  # the engine's kind: the client's keep-alive follows it
    requests: tuple[HttpRequest, ...]
    concurrency: int
    timeout_s: float
    start_unix_s: float
    offsets_s: tuple[float, ...] | None = None
    max_concurrency: int | None = None


@dataclass(frozen=True, slots=True)
class _Kind:
    kind: str


@dataclass(frozen=True, slots=True)
class _Endpoint:
    """The engine as a worker's client sees it: its kind (keep-alive) and the real network.
    A worker never launches, checks or stops it: the driver does."""

    config: _Kind

    def transport(self) -> None:
        return None


def _sleep_until(unix_s: float) -> None:
    while (left := unix_s - time.time()) > 0:
        time.sleep(min(left, 0.05))


class LoadWorker:
    """One node's client: its clock, and its share of a block, streamed back as it finishes."""

    def __init__(self, label: str) -> None:
        self.label = label

    def now(self) -> float:
        """This node's wall clock (a round trip of the driver's offset estimate)."""
        return time.time()

    def drive(self, share: Share) -> Iterator[Event]:
        """Send ``share``; yield ``("row", (index, Sent, Observation))`` as each request
        finishes (index: its place in the share, Sent on this node's clock), then
        ``("done", ClientLoad | None)``."""
        events: queue.Queue[Event] = queue.Queue()
        engine = cast(Engine, _Endpoint(_Kind(share.kind)))
        schedule = None if share.offsets_s is None else Schedule(share.offsets_s,
                                                                 share.max_concurrency)  # fmt: skip
        clock = MonotonicClock()

        def work() -> None:
            try:
                _sleep_until(share.start_unix_s)
                load = run_jobs(
                    engine, list(range(len(share.requests))), share.concurrency, share.timeout_s,
                    request_for=lambda i: share.requests[i],
                    on_result=lambda i, sent, obs: events.put(("row", (i, sent, obs))),
                    clock=clock, anchor=WallAnchor.take(clock), should_stop=lambda: False,
                    schedule=schedule,
                )  # fmt: skip
                events.put(("done", load))
            except BaseException as exc:  # re-raised in the generator, for the driver
                events.put(("error", exc))

        thread = threading.Thread(target=work, name=f"load-{self.label}", daemon=True)
        thread.start()
        while True:
            kind, value = events.get()
            if kind == "error":
                thread.join()
                raise value
            yield kind, value
            if kind == "done":
                break
        thread.join()

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` here (the selftest's split ramp sends its probes this way)."""
        return fn(*args)


def actor_class(ray: Any) -> Any:
    """``LoadWorker`` as a Ray actor: no CPU reserved (pinned by a sliver of its node's own
    resource), never restarted (a lost worker fails the bench with its rows kept)."""
    return ray.remote(num_cpus=0, max_restarts=0, max_task_retries=0)(LoadWorker)


# -- on the driver ------------------------------------------------------------------------------
@dataclass
class LoadPool:
    """The cluster, one load worker per node used, and their clock offsets."""

    cluster: RayCluster
    nodes: list[RayNode]
    actors: dict[str, Any] = field(default_factory=dict)
    before: dict[str, ClockOffset] = field(default_factory=dict)
    after: dict[str, ClockOffset] = field(default_factory=dict)
    requests: dict[str, int] = field(default_factory=dict)
    same_host: set[str] = field(default_factory=set)  # labels on the driver's machine
    driver_ip: str | None = None

    @classmethod
    def open(cls, target: RayTarget, workers: int | None,
             note: Callable[[str], None] | None = None) -> LoadPool:  # fmt: skip
        """Join or start the cluster and start a worker on each of its first ``workers``
        nodes (None: every worker node)."""
        if note is not None:
            note(f"Ray: {'starting ' if target.local else 'joining '}{target.text}")
        cluster = RayCluster(target)
        try:
            nodes = cluster.nodes()
            n = workers or len(nodes)
            if n > len(nodes):
                raise UsageError(
                    f"--workers {n}: the Ray cluster at {target.text} has {len(nodes)} worker "
                    f"node(s) ({', '.join(x.label for x in nodes)}); lower --workers or add nodes"
                )
            pool = cls(cluster, nodes[:n], driver_ip=driver_address())
            actor = actor_class(cluster.ray)
            for node in pool.nodes:
                pool.actors[node.label] = actor.options(resources={node.pin: 0.001}).remote(
                    node.label
                )
                if target.local or node.ip.startswith("127.") or node.ip == pool.driver_ip:
                    pool.same_host.add(node.label)
            return pool
        except BaseException:
            cluster.close()
            raise

    @property
    def remote(self) -> bool:
        """Some worker runs on another machine (a loopback URL would not reach the engine)."""
        return any(n.label not in self.same_host for n in self.nodes)

    def get(self, ref: Any, label: str) -> Any:
        """``ray.get`` with a worker's own error unwrapped, a lost node as one line."""
        return ray_get(self.cluster.ray, ref, f"Ray load worker {label}")

    def measure(self) -> dict[str, ClockOffset]:
        """Each worker's clock offset, from ``PINGS`` round trips (one worker at a time)."""
        out: dict[str, ClockOffset] = {}
        for label, actor in self.actors.items():
            self.get(actor.now.remote(), label)  # the first call pays for the actor's start
            samples = []
            for _ in range(PINGS):
                t0 = time.time()
                tw = float(self.get(actor.now.remote(), label))
                samples.append((t0, tw, time.time()))
            out[label] = estimate_offset(samples)
        return out

    def records(self) -> dict[str, LoadWorkerRecord]:
        """The manifest's ``load_workers``."""
        out: dict[str, LoadWorkerRecord] = {}
        for node in self.nodes:
            b, a = self.before.get(node.label), self.after.get(node.label)
            if b is None:
                continue
            out[node.label] = LoadWorkerRecord(
                node_id=node.node_id, ip=node.ip, offset_s=b.offset_s, rtt_s=b.rtt_s,
                offset_after_s=a.offset_s if a else None, rtt_after_s=a.rtt_s if a else None,
                requests=self.requests.get(node.label, 0),
            )  # fmt: skip
        return out

    def stream(self, label: str, share: Share, events: queue.Queue[Any]) -> None:
        """One worker's share, its events put on ``events`` as ``(label, kind, value)``."""
        ray = self.cluster.ray
        try:
            gen = self.actors[label].drive.options(num_returns="streaming").remote(share)
            for ref in gen:
                kind, value = ray.get(ref)
                events.put((label, kind, value))
        except ray.exceptions.RayTaskError as exc:
            events.put((label, "error", exc.as_instanceof_cause()))
        except BaseException as exc:
            why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            events.put((label, "error", EnvironmentProblem(f"Ray load worker {label}: {why}")))

    def close(self) -> None:
        ray = self.cluster.ray
        for actor in self.actors.values():
            try:
                ray.kill(actor)
            except Exception:
                continue
        self.cluster.close()


class _NodeWriter:
    """The executor's row writer for one worker's rows: each gets its ``node``."""

    def __init__(self, writer: JsonlWriter, label: str) -> None:
        self.writer, self.label = writer, label

    def write(self, row: RequestRow) -> None:
        self.writer.write(with_node(row, self.label, row.seq))


class LoadExecutor(BlockExecutor):
    """A bench's executor whose measured requests go out from the pool's workers; launch,
    warm-up (from the driver), counters and rows are ``BlockExecutor``'s."""

    pool: LoadPool | None = None

    def send(self, engine: Engine, block: Block, jobs: list[Job], writer: JsonlWriter,
             schedule: Schedule | None = None) -> None:  # fmt: skip
        if jobs[0].phase is not Phase.TRIAL or self.pool is None:
            super().send(engine, block, jobs, writer, schedule)
            return
        pool, source = self.pool, self.source or self.make_source(block, engine)
        if engine.transport() is not None or self.seam.transport is not None:
            raise UsageError(f"--ray: engine {engine.config.kind} is not reached over the "
                             "network; drive a llamacpp or openai engine")  # fmt: skip
        driver_ip = pool.driver_ip if pool.remote else None
        bind = engine.config.bind
        requests = [_reachable(source.request_for(j), bind, driver_ip) for j in jobs]
        pool.before = pool.measure()
        shares, index = self.shares(block, jobs, requests, schedule)
        events: queue.Queue[Any] = queue.Queue()
        threads = [threading.Thread(target=pool.stream, args=(label, share, events),
                                    name=f"ray-load-{label}", daemon=True)
                   for label, share in shares.items()]  # fmt: skip
        for t in threads:
            t.start()
        loads = self.collect(engine, block, source, events, len(threads), index, writer)
        for t in threads:
            t.join(timeout=5)
        pool.after = pool.measure()
        load = merged_load(loads)
        if load is not None:
            write_client_load(self.run, block.arm.name, block.block, load, block.level)
        if self.crash is not None:
            raise self.crash
        engine.check_alive()

    def shares(
        self, block: Block, jobs: list[Job], requests: list[HttpRequest], schedule: Schedule | None
    ) -> tuple[dict[str, Share], dict[str, list[Job]]]:
        """Each worker's share and, by worker, the jobs in its share's order."""
        assert self.pool is not None
        labels = [n.label for n in self.pool.nodes]
        n = len(labels)
        closed = schedule is None
        owner = job_owners(len(jobs), n, block.concurrency if closed else None)
        if closed:
            flight: Sequence[int | None] = split_concurrency(block.concurrency, n)
        elif schedule is not None and schedule.max_concurrency:
            flight = split_concurrency(schedule.max_concurrency, n, "--max-concurrency")
        else:
            flight = [None] * n
        start = time.time() + LEAD_S
        shares: dict[str, Share] = {}
        index: dict[str, list[Job]] = {}
        for w, label in enumerate(labels):
            mine = [j for j, o in enumerate(owner) if o == w]
            if not mine:
                continue
            offsets = None if schedule is None else tuple(schedule.offsets_s[j] for j in mine)
            cap = flight[w]
            shares[label] = Share(
                kind=block.arm.engine.kind, requests=tuple(requests[j] for j in mine),
                concurrency=cap or len(mine), timeout_s=self.timeout_s,
                start_unix_s=start + self.pool.before[label].offset_s, offsets_s=offsets,
                max_concurrency=None if closed else cap,
            )  # fmt: skip
            index[label] = [jobs[j] for j in mine]
        return shares, index

    def collect(self, engine: Engine, block: Block, source: RequestSource, events: queue.Queue[Any],
                running: int, index: dict[str, list[Job]],
                writer: JsonlWriter) -> list[ClientLoad]:  # fmt: skip
        """Record each worker's rows as they arrive, on the driver's clock, until every worker
        is done; the first worker error is raised once all are done."""
        assert self.pool is not None
        pool, loads, error = self.pool, [], None
        concurrency = block.concurrency
        while running:
            label, kind, value = events.get()
            if kind == "row":
                i, sent, obs = value
                sent = pool.before[label].to_driver(sent)
                rows = cast(JsonlWriter, _NodeWriter(writer, label))
                self.record(block, source, concurrency, index[label][i], sent, obs, rows)
                pool.requests[label] = pool.requests.get(label, 0) + 1
                if self.crash is None:
                    self.crash = crash_after(engine, obs)
                continue
            running -= 1
            if kind == "done" and value is not None:
                loads.append(value)
            elif kind == "error" and error is None:
                error = value
        if error is not None and self.crash is None:
            raise error
        return loads


def _reachable(request: HttpRequest, bind: str, driver_ip: str | None) -> HttpRequest:
    url = reachable(request.url, bind, driver_ip)
    return request if url == request.url else dataclasses.replace(request, url=url)
