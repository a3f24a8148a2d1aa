"""The one lifecycle ``servelab run`` and ``servelab bench`` share, and its executor seam.

Owns, for both commands:

- the stages and their order (``Stage``, ``STAGES``; tested): load -> resolve ->
  confound_guard -> preflight -> kv_probe -> blocks [launch -> healthy -> describe -> warmup ->
  measure -> scrape]... -> stop -> ppl -> summarize. A bench is a one-arm experiment of one
  block; ``Lifecycle`` records the stages a command's manifest lists and tells the seam's
  observer about every one;
- the executor seam (``Seam``, hyperfine's executor, httpx's transport): the engine factory,
  the transport, the clock and the preflight are parameters, so tests drive the whole run loop
  through the replay engine on a fake clock in milliseconds;
- the one error mapping (``failure_status``, ``failure_error``): interrupt, crash, engine
  error and store error -> the manifest status and the one-line message, with the resume hint
  where the command can resume;
- the block executor (``BlockExecutor``): (re)start an arm's engine, warm up, empty its prefix
  cache (the engine's reset, else a restart when the arm caches prompts; recorded per block in
  ``metrics/cache/``), send the block's requests with its concurrency, write and flush each row
  as it completes, scrape the engine's counters around the block, stop on a crash after
  recording everything already sent.

It must not read the spec or the workload (callers pass typed objects), nor analyse results.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from servelab.client.clock import Clock, MonotonicClock, WallAnchor
from servelab.client.transport import Transport
from servelab.engines.base import Engine
from servelab.engines.prom import MetricsSnapshot
from servelab.engines.registry import create_engine
from servelab.errors import EngineCrashedError, EngineError, Interrupted, StoreError
from servelab.records import Observation, Phase
from servelab.runner.drive import (
    Job as Job,
)
from servelab.runner.drive import (
    PromptSource,
    RequestParams,
    RequestSource,
    Schedule,
    Sent,
    SourceFactory,
    StartsJobs,
    crash_after,
    run_jobs,
)
from servelab.runner.host import foreign_engines, host_facts
from servelab.runner.preflight import MachineLock, run_preflight
from servelab.runner.progress import Reporter
from servelab.spec.engine import EngineConfig
from servelab.spec.slo import Slo, request_meets
from servelab.store import RowContext, RunStatus, build_row
from servelab.store.jsonl import JsonlWriter
from servelab.store.metrics_files import write_block_cache, write_client_load
from servelab.store.rundir import RunDir
from servelab.workloads import Workload


class Stage(StrEnum):
    LOAD = "load"
    RESOLVE = "resolve"
    CONFOUND_GUARD = "confound_guard"
    PREFLIGHT = "preflight"
    KV_PROBE = "kv_probe"
    BLOCKS = "blocks"
    LAUNCH = "launch"
    HEALTHY = "healthy"
    DESCRIBE = "describe"
    WARMUP = "warmup"
    MEASURE = "measure"
    SCRAPE = "scrape"
    STOP = "stop"
    PPL = "ppl"
    SUMMARIZE = "summarize"


STAGES: tuple[Stage, ...] = tuple(Stage)
BLOCK_STAGES = (Stage.LAUNCH, Stage.HEALTHY, Stage.DESCRIBE, Stage.WARMUP, Stage.MEASURE,
                Stage.SCRAPE)  # fmt: skip
# What each command's manifest lists under ``stages`` (the observer sees every stage).
EXPERIMENT_RECORDS = frozenset(
    {Stage.LOAD, Stage.RESOLVE, Stage.CONFOUND_GUARD, Stage.PREFLIGHT, Stage.KV_PROBE,
     Stage.BLOCKS, Stage.PPL}
)  # fmt: skip
BENCH_RECORDS = frozenset({Stage.PREFLIGHT, *BLOCK_STAGES, Stage.STOP, Stage.SUMMARIZE})

EngineFactory = Callable[[EngineConfig, Path], Engine]
Finding = Mapping[str, object]


# -- preflight --------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PreflightCheck:
    """What a run asks of the machine. ``thorough``: an experiment (machine lock, ports, busy
    CPU, GPU, memory; blocking findings refuse); otherwise a bench (foreign engines and load
    average, recorded only)."""

    run_root: Path
    thorough: bool
    managed: bool
    ports: tuple[tuple[str, int], ...] = ()
    model_bytes: int = 0
    max_foreign_cpu: float = 0.25


class Preflight(Protocol):
    def check(self, request: PreflightCheck) -> tuple[list[Finding], Callable[[], None]]:
        """The findings, and how to release what was taken (the machine lock)."""
        ...


class MachinePreflight:
    """The real checks of this machine (``runner/preflight.py``, ``runner/host.py``)."""

    def check(self, request: PreflightCheck) -> tuple[list[Finding], Callable[[], None]]:
        if not request.thorough:
            return bench_findings(request.managed), lambda: None
        lock = MachineLock()
        holder = lock.acquire(request.run_root)
        try:
            findings: list[Finding] = list(run_preflight(
                ports=list(request.ports), model_bytes=request.model_bytes,
                max_foreign_cpu=request.max_foreign_cpu,
            ))  # fmt: skip
        except BaseException:
            lock.release()
            raise
        if holder is not None:
            findings.insert(0, {
                "kind": "machine_locked", "blocking": True,
                "detail": f"another servelab experiment holds the machine ({holder})",
                "advice": "wait for it to finish",
            })  # fmt: skip
        return findings, lock.release


@dataclass(frozen=True, slots=True)
class ScriptedPreflight:
    """A preflight that reports what it is given and takes no lock (tests)."""

    findings: tuple[Finding, ...] = ()

    def check(self, request: PreflightCheck) -> tuple[list[Finding], Callable[[], None]]:
        return list(self.findings), lambda: None


def bench_findings(managed: bool) -> list[Finding]:
    """Findings that could distort a bench's numbers; recorded, not fatal."""
    findings: list[Finding] = []
    others = foreign_engines()
    if others and managed:
        findings.append({
            "kind": "foreign_engine",
            "detail": f"{len(others)} other engine process(es) running: "
            + ", ".join(f"{o['name']} (pid {o['pid']})" for o in others),
            "advice": "stop them: engines on the same cores slow each other down many-fold",
        })  # fmt: skip
    facts = host_facts()
    load1 = facts.loadavg[0] if facts.loadavg else 0.0
    cores = facts.cpu_count_logical or 1
    if load1 > 0.5 * cores:
        findings.append({
            "kind": "busy_machine",
            "detail": f"1-minute load average {load1:.2f} on {cores} cores",
            "advice": "wait for the machine to go idle; the run's numbers will be noisy",
        })  # fmt: skip
    return findings


def _ignore_stage(stage: Stage) -> None:
    pass


@dataclass(frozen=True)
class Seam:
    """The executor seam: what a run is executed with. The defaults are the real ones."""

    engine_factory: EngineFactory = create_engine
    transport: Transport | None = None  # None: each engine's own (``engine.transport()``)
    clock: Clock = field(default_factory=MonotonicClock)
    preflight: Preflight = field(default_factory=MachinePreflight)
    on_stage: Callable[[Stage], None] = _ignore_stage  # sees every stage as it begins


class Lifecycle:
    """The stages a run passes, in order; the recorded ones go in the manifest."""

    def __init__(self, records: frozenset[Stage], seam: Seam, done: Sequence[str] = ()) -> None:
        self.records = records
        self.seam = seam
        self.stages: list[str] = list(done)

    def enter(self, stage: Stage) -> None:
        if stage in self.records:
            self.stages.append(str(stage))
        self.seam.on_stage(stage)


# -- the one error mapping --------------------------------------------------------------------
def failure_status(exc: BaseException) -> RunStatus:
    """The manifest status of a run that ended with ``exc``."""
    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
        return "interrupted"
    if isinstance(exc, EngineCrashedError):
        return "crashed"
    if isinstance(exc, EngineError):
        return "engine_error"
    return "failed"


def failure_error(exc: BaseException, run_root: Path, resumable: bool) -> BaseException | None:
    """The error to raise instead of ``exc`` (None: ``exc`` itself): where the rows are, and
    for a resumable run the command that continues it."""
    where = f"requests recorded so far are in {run_root}"
    resume = f"continue with `servelab resume {run_root}`"
    if isinstance(exc, KeyboardInterrupt):
        return Interrupted(f"interrupted; {where}" + (f"; {resume}" if resumable else ""))
    if isinstance(exc, EngineCrashedError):
        hint = f"; after fixing the cause, {resume}" if resumable else ""
        return EngineCrashedError(f"{exc}; {where}{hint}")
    if isinstance(exc, StoreError) and resumable:
        # rows written before it are kept: resume runs only the rest
        return StoreError(f"{exc}; after fixing it, {resume}")
    return None


def slo_check(slos: Sequence[Slo]) -> Callable[[Mapping[str, object]], bool | None] | None:
    """A row's ``slo_met`` from its JSON (``spec.slo.request_meets``); None without SLOs."""
    if not slos:
        return None
    return lambda row: request_meets(slos, row)


# -- the block executor -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ArmRun:
    """What one arm's requests are sent with."""

    name: str
    engine: EngineConfig
    params: RequestParams


@dataclass(frozen=True, slots=True)
class Block:
    arm: ArmRun
    block: int
    concurrency: int
    trials: tuple[Job, ...]
    restart: bool  # start the arm's engine afresh even if it is running
    label: str = ""  # the progress line while its requests run
    warmup_label: str = ""
    warmup_concurrency: int = 1  # an experiment warms up one request at a time
    rate_rps: float | None = None  # open loop: the requested rate (None: closed loop)
    offsets_s: tuple[float, ...] | None = None  # open loop: each trial's send time (s from start)
    max_concurrency: int | None = None  # open loop: cap on requests in flight (None: none)
    source: SourceFactory | None = None  # None: the workload's prompts (``PromptSource``)

    @property
    def level(self) -> str:
        """The block's load level in file names: ``c4`` (closed loop) or ``r2`` (req/s)."""
        return f"c{self.concurrency}" if self.rate_rps is None else f"r{self.rate_rps:g}"

    def schedule(self, keep: Sequence[bool]) -> Schedule | None:
        """The open-loop schedule of the trials ``keep`` selects (resume skips done ones)."""
        if self.offsets_s is None:
            return None
        offsets = tuple(t for t, k in zip(self.offsets_s, keep, strict=True) if k)
        return Schedule(tuple(t - offsets[0] for t in offsets), self.max_concurrency)


@dataclass(frozen=True, slots=True)
class EngineStarted:
    """One start of an arm's engine: where in the plan, when, and its own description."""

    arm: str
    block: int
    concurrency: int
    t_unix_s: float
    describe: Mapping[str, object]


@dataclass(frozen=True, slots=True)
class BlockCounters:
    """The engine's counters around a block's measured requests (None: it has none), and how
    its prefix cache was emptied before them (``CACHE_*`` or the engine's reset)."""

    before: MetricsSnapshot | None
    after: MetricsSnapshot | None
    emptied: str = ""


CACHE_RESTART = "restart"  # a fresh engine (its warm-up requests ran after the start)
CACHE_OFF = "caching off"  # reused engine, no reset, and the arm does not cache prompts


class BlockExecutor:
    """Runs blocks of requests on engines it starts through the seam."""

    def __init__(
        self,
        run: RunDir,
        workload: Workload,
        seam: Seam,
        lifecycle: Lifecycle,
        reporter: Reporter,
        *,
        warmup: int,
        timeout_s: float,
        startup_timeout_s: Callable[[str], float],
        seq: int = 0,
        done: set[str] | None = None,
        starts: int = 0,
        on_start: Callable[[EngineStarted], None] = lambda s: None,
        request_ids: bool = True,
        slo_check: Callable[[Mapping[str, object]], bool | None] | None = None,
    ) -> None:
        self.run = run
        self.workload = workload
        self.seam = seam
        self.lifecycle = lifecycle
        self.reporter = reporter
        self.warmup = warmup
        self.timeout_s = timeout_s
        self.startup_timeout_s = startup_timeout_s
        self.seq = seq
        self.done: set[str] = done if done is not None else set()
        self.starts = starts
        self.on_start = on_start
        self.request_ids = request_ids  # False: rows carry no request id (bench)
        self.slo_check = slo_check  # a row's JSON -> met every per-request SLO (None: no SLOs)
        self.source: RequestSource | None = None
        self.anchor = WallAnchor.take(seam.clock)
        self.engine: Engine | None = None
        self.engine_arm: str | None = None
        self.crash: EngineCrashedError | None = None

    def create(self, config: EngineConfig, log: Path) -> Engine:
        return self.seam.engine_factory(config, log)

    def stop(self) -> None:
        if self.engine is not None:
            engine, self.engine, self.engine_arm = self.engine, None, None
            engine.stop()

    def start(self, block: Block, writer: JsonlWriter, engine: Engine | None = None) -> Engine:
        """Launch (a fresh engine for) the block's arm, describe it, warm it up."""
        self.stop()
        arm = block.arm
        log = self.run.engine_log(arm.name)
        engine = engine or self.create(arm.engine, log)
        self.engine, self.engine_arm = engine, arm.name
        self.lifecycle.enter(Stage.LAUNCH)
        engine.launch()
        engine.wait_healthy(self.startup_timeout_s(arm.name))
        self.lifecycle.enter(Stage.HEALTHY)
        self.lifecycle.enter(Stage.DESCRIBE)
        self.starts += 1
        self.on_start(EngineStarted(arm.name, block.block, block.concurrency,
                                    self.anchor.to_unix_s(self.seam.clock.now_ns()),
                                    engine.describe()))  # fmt: skip
        self.source = self.make_source(block, engine)
        self.lifecycle.enter(Stage.WARMUP)
        ids = [f"w{self.starts}/{arm.name}/{i}" if self.request_ids else ""
               for i in range(self.warmup)]  # fmt: skip
        warm = self.source.start_jobs(self.warmup, Phase.WARMUP, ids) \
            if isinstance(self.source, StartsJobs) else []  # fmt: skip
        if warm:
            self.reporter.phase(block.warmup_label or f"{arm.name}: warm-up", len(warm))
            self.send(engine, block, warm, writer)
        return engine

    def make_source(self, block: Block, engine: Engine) -> RequestSource:
        if block.source is not None:
            return block.source(engine)
        return PromptSource(self.workload, engine, block.arm.params)

    def run_block(
        self, block: Block, writer: JsonlWriter, engine: Engine | None = None
    ) -> BlockCounters | None:
        """The block's planned requests not yet done; None when there were none."""
        keep = [not j.request_id or j.request_id not in self.done for j in block.trials]
        todo = [j for j, k in zip(block.trials, keep, strict=True) if k]
        if not todo:
            return None
        running = self.engine is not None and self.engine_arm == block.arm.name
        reused = self.reuse(block) if running and not block.restart else None
        if reused is not None:
            live, emptied = reused
        else:
            live = self.start(block, writer, engine)  # a caching arm: reset its warm-up away
            reset = live.reset_prefix_cache() if block.arm.engine.prefix_cache else None
            emptied = reset or CACHE_RESTART
        write_block_cache(self.run, block.arm.name, block.block, block.level,
                          restarted=reused is None, emptied=emptied)  # fmt: skip
        before = live.scrape_metrics()
        self.lifecycle.enter(Stage.MEASURE)
        label = block.label or f"block {block.block + 1} · {block.arm.name}"
        self.reporter.phase(label, len(todo))
        self.send(live, block, todo, writer, block.schedule(keep))
        self.lifecycle.enter(Stage.SCRAPE)
        return BlockCounters(before, live.scrape_metrics(), emptied)

    def reuse(self, block: Block) -> tuple[Engine, str] | None:
        """The running engine with its prefix cache emptied, and how; None when only a restart
        can empty it (the engine has no reset and the arm caches prompts)."""
        assert self.engine is not None
        how = self.engine.reset_prefix_cache()
        if how is None and block.arm.engine.prefix_cache:
            return None
        self.source = self.make_source(block, self.engine)
        return self.engine, how or CACHE_OFF

    def send(
        self,
        engine: Engine,
        block: Block,
        jobs: list[Job],
        writer: JsonlWriter,
        schedule: Schedule | None = None,
    ) -> None:
        """Send ``jobs``; raise the engine's crash once every request sent is recorded."""
        trial = jobs[0].phase is Phase.TRIAL
        concurrency = block.concurrency if trial else block.warmup_concurrency
        source = self.source or self.make_source(block, engine)

        def record(job: Job, sent: Sent, obs: Observation) -> None:
            self.record(block, source, concurrency, job, sent, obs, writer)
            if self.crash is None:
                self.crash = crash_after(engine, obs)

        load = run_jobs(
            engine, jobs, concurrency, self.timeout_s, request_for=source.request_for,
            on_result=record, clock=self.seam.clock, anchor=self.anchor,
            should_stop=lambda: self.crash is not None, transport=self.seam.transport,
            schedule=schedule if trial else None, follow=source.follow,
        )  # fmt: skip
        if trial and load is not None:
            write_client_load(self.run, block.arm.name, block.block, load, block.level)
        if self.crash is not None:
            raise self.crash
        engine.check_alive()

    def record(
        self, block: Block, source: RequestSource, concurrency: int, job: Job, sent: Sent,
        obs: Observation, writer: JsonlWriter,
    ) -> None:  # fmt: skip
        """Write the row of one finished request and flush it."""
        session_id, turn = source.session(job)
        ctx = RowContext(
            run_id=self.run.run_id, arm=block.arm.name, block=block.block, phase=job.phase,
            seq=self.seq, prompt_id=source.prompt_id(job), concurrency=concurrency,
            t_send_unix_s=sent.unix_s, request_id=job.request_id,
            rate_rps=block.rate_rps if job.phase is Phase.TRIAL else None,
            t_sched_unix_s=sent.sched_unix_s, lag_s=sent.lag_s, session_id=session_id, turn=turn,
        )  # fmt: skip
        self.seq += 1
        row = build_row(obs, ctx)
        if self.slo_check is not None:
            row = dataclasses.replace(row, slo_met=self.slo_check(row.to_json()))
        writer.write(row)
        if job.phase is Phase.TRIAL and job.request_id:
            self.done.add(job.request_id)
        self.reporter.request_done(row)
