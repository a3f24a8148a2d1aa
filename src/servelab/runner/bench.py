"""``servelab bench``: one configuration, one workload, measured end to end.

A bench is a one-arm experiment of one block (``blocks`` > 1: that many, each on a fresh
engine start, for comparisons that resample blocks, as ``servelab verify``'s): it goes through
the same lifecycle, block executor, error mapping and seam as ``servelab run``
(``runner/lifecycle.py``), and its manifest
lists the stages it passed (``LIFECYCLE``, tested): preflight -> launch -> healthy -> describe
-> warmup -> measure -> scrape -> stop -> summarize. Every request row is written and flushed
as it completes; the engine is stopped on every exit path, including Ctrl-C and a crash of the
engine itself, which ends the run with ``EngineCrashedError`` after every request already sent
has been recorded. What is its own: the manifest of kind ``bench``, the counter snapshots
around the measured requests (``metrics/bench-before.json``, ``-after.json``, ``-deltas.json``)
and ``summary.json``, written on every exit path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np

from servelab.analysis import bench_summary
from servelab.analysis.engine_facts import counter_names, identity_engine
from servelab.engines.base import Engine
from servelab.engines.prom import MetricsSnapshot, counter_deltas
from servelab.engines.registry import engine_class
from servelab.errors import UsageError
from servelab.records import Phase
from servelab.runner.block_jobs import BlockWork, trace_work, workload_work
from servelab.runner.drive import MAX_READERS, RequestParams
from servelab.runner.host import host_facts
from servelab.runner.lifecycle import (
    BENCH_RECORDS,
    ArmRun,
    Block,
    BlockCounters,
    BlockExecutor,
    EngineStarted,
    Finding,
    Lifecycle,
    PreflightCheck,
    Seam,
    Stage,
    failure_error,
    failure_status,
    slo_check,
)
from servelab.runner.preflight import ensure_fd_limit
from servelab.runner.progress import NullReporter, Reporter
from servelab.spec.bench import BenchConfig
from servelab.store import (
    ArmEntry,
    EngineStart,
    Manifest,
    PreflightFinding,
    RunStatus,
    WorkloadRef,
    as_json_object,
    write_manifest,
)
from servelab.store.jsonl import JsonlWriter, read_jsonl, write_json_atomic
from servelab.store.metrics_files import (
    read_block_caches,
    write_counter_deltas,
    write_counter_snapshot,
)
from servelab.store.rundir import RunDir, create_run_dir, plan_run_dir
from servelab.store.summary import BenchSummary
from servelab.workloads import Workload, load_trace, load_workload
from servelab.workloads.trace import Trace

if TYPE_CHECKING:
    from servelab.runner.distributed.load import LoadExecutor

LIFECYCLE = tuple(str(s) for s in Stage if s in BENCH_RECORDS)
ARM = "bench"


@dataclass(frozen=True, slots=True)
class BenchResult:
    run_dir: RunDir
    summary: BenchSummary


class _Bench:
    def __init__(self, config: BenchConfig, run: RunDir, reporter: Reporter, seam: Seam) -> None:
        self.config = config
        self.run = run
        self.reporter = reporter
        self.seam = seam
        self.lifecycle = Lifecycle(BENCH_RECORDS, seam)
        self.lifecycle.enter(Stage.LOAD)
        self.workload: Workload = with_variant(load_workload(config.workload),
                                               config.system_prompt)  # fmt: skip
        self.trace: Trace | None = load_trace(config.trace) if config.trace else None
        self.lifecycle.enter(Stage.RESOLVE)
        self.cls = engine_class(config.engine.kind)
        self.engine_config = self.cls.config_for_concurrency(config.engine, config.slots)
        self.load: LoadExecutor | None = None
        executor = BlockExecutor
        if config.ray is not None:
            from servelab.runner.distributed.load import LoadExecutor

            if self.workload.sessions:
                raise UsageError("bench --ray: a conversation's turns follow its replies and are "
                                 "not split over workers; give a single-turn workload")  # fmt: skip
            executor = LoadExecutor
        self.executor = executor(
            run, self.workload, seam, self.lifecycle, reporter, warmup=config.warmup,
            timeout_s=config.request_timeout_s,
            startup_timeout_s=lambda arm: config.engine.startup_timeout_s,
            on_start=self.described,
            request_ids=False, slo_check=slo_check(config.parsed_slos),
        )  # fmt: skip
        if config.ray is not None:
            self.load = cast("LoadExecutor", self.executor)
        # Built before the run directory exists, so a wrong model or binary leaves no debris.
        self.engine: Engine = self.executor.create(self.engine_config, run.engine_log(ARM))
        if self.load is not None and (self.engine.transport() or seam.transport) is not None:
            raise UsageError(f"bench --ray: engine {config.engine.kind} is not reached over the "
                             "network; drive a llamacpp or openai engine")  # fmt: skip
        self.manifest = Manifest(kind="bench")

    def write_manifest(self, status: RunStatus) -> None:
        stages = tuple(self.lifecycle.stages)
        self.manifest = self.manifest.with_status(status).model_copy(update={"stages": stages})
        write_manifest(self.run, self.manifest)

    def described(self, start: EngineStarted) -> None:
        """The engine's own description: ``describe`` is the first start's; with ``blocks``
        > 1 every start is also listed under ``starts``, as an experiment lists them."""
        m, describe = self.manifest, as_json_object(start.describe)
        if self.config.blocks > 1:
            m = m.with_start(ARM, EngineStart(
                block=start.block, concurrency=start.concurrency, t_unix_s=start.t_unix_s,
                describe=describe,
            ))  # fmt: skip
        if start.block == 0:
            m = m.with_arm_describe(ARM, describe)
        self.manifest = m
        self.write_manifest("running")

    def start_manifest(self, findings: list[Finding]) -> None:
        w = self.workload
        self.manifest = Manifest(
            kind="bench",
            run_id=self.run.run_id,
            created_unix_s=self.executor.anchor.wall_unix_s,
            config=self.config.model_dump(mode="json"),
            arms={ARM: ArmEntry(engine_config=self.engine_config.model_dump(mode="json"))},
            workload=WorkloadRef(name=w.name, version=w.version, content_hash=w.content_hash,
                                 prompts=len(w.prompts)),
            host=host_facts(),
            preflight=tuple(PreflightFinding.model_validate(dict(f)) for f in findings),
        )  # fmt: skip
        self.write_manifest("starting")

    def block(self, index: int = 0) -> Block:
        """Block ``index`` (``blocks`` > 1: each on a fresh engine start, the prompts rotated
        as an experiment's rounds rotate them)."""
        cfg = self.config
        params = RequestParams(cfg.max_tokens, cfg.temperature, cfg.seed, cfg.ignore_eos)
        work = self.work(params, index)
        trials = work.trials
        load = cfg.open_loop
        offsets = work.offsets_s
        if load is not None:
            offsets = tuple(load.offsets(len(trials), np.random.default_rng(cfg.seed)).tolist())
        in_flight = f"({cfg.concurrency} in flight)"
        of = f" block {index + 1}/{cfg.blocks}" if cfg.blocks > 1 else ""
        return Block(
            ArmRun(ARM, self.engine_config, params),
            index,
            cfg.concurrency if offsets is None else cfg.max_concurrency or 0,  # open: 0 = no cap
            trials,
            restart=True,
            label=f"{Phase.TRIAL}{of} {load_label(cfg) or in_flight}",
            warmup_label=f"{Phase.WARMUP} {in_flight}",
            warmup_concurrency=cfg.concurrency,  # every slot warms up, as before
            rate_rps=cfg.rate,
            offsets_s=offsets,
            max_concurrency=cfg.max_concurrency,
            source=work.source,
        )

    def work(self, params: RequestParams, block: int = 0) -> BlockWork:
        """The trace's lines, else ``requests`` prompts or conversations."""
        cfg = self.config
        if self.trace is not None:
            ids = [""] * len(self.trace.requests)
            return trace_work(self.trace, ids, params, seed=cfg.seed, time_scale=cfg.time_scale,
                              texts={})  # fmt: skip
        return workload_work(self.workload, [""] * cfg.requests, block, params, cfg.seed)

    def snapshot(self, snap: MetricsSnapshot | None, label: str) -> None:
        if snap is not None:
            write_counter_snapshot(self.run, ARM, label, snap.samples, snap.kinds)

    def deltas(self, blocks: list[BlockCounters | None]) -> dict[str, float] | None:
        """The counters' deltas over the measured requests: one block's, or the sum over
        ``blocks`` engine starts (each start counts from zero; its snapshots are kept as
        ``bench-b{i}-before.json`` / ``-after.json``)."""
        total: dict[str, float] = {}
        for i, counters in enumerate(blocks):
            if counters is None:
                return None
            tag = f"b{i}-" if len(blocks) > 1 else ""
            self.snapshot(counters.before, f"{tag}before")
            self.snapshot(counters.after, f"{tag}after")
            if counters.before is None or counters.after is None:
                return None
            for k, v in counter_deltas(counters.before, counters.after).items():
                total[k] = total.get(k, 0.0) + v
        if not blocks:
            return None
        write_counter_deltas(self.run, ARM, total)
        return total

    def execute(self) -> BenchSummary:
        self.lifecycle.enter(Stage.PREFLIGHT)
        check = PreflightCheck(self.run.root, thorough=False, managed=self.cls.managed)
        findings, release = self.seam.preflight.check(check)
        release()
        self.start_manifest(findings)
        deltas: dict[str, float] | None = None
        status: RunStatus = "failed"
        try:
            what = "starting " + self.cls.process_name if self.cls.managed else "connecting to"
            where = (
                f"(log: {self.run.engine_log(ARM)})" if self.cls.managed else self.engine.base_url
            )
            self.reporter.note(f"{what} {where}")
            self.open_workers()
            blocks: list[BlockCounters | None] = []
            with JsonlWriter(self.run.requests) as writer:
                for i in range(self.config.blocks):  # the first start uses the engine built
                    engine = self.engine if i == 0 else None  # up front; later ones, fresh
                    blocks.append(self.executor.run_block(self.block(i), writer, engine))
            deltas = self.deltas(blocks)
            status = "complete"
        except BaseException as exc:
            status = failure_status(exc)
            raise
        finally:
            self.lifecycle.enter(Stage.STOP)
            if self.executor.engine is None:  # never launched (or stopped already)
                self.engine.stop()
            self.executor.stop()
            self.close_workers()
            self.reporter.close()
            self.lifecycle.enter(Stage.SUMMARIZE)
            summary = self.summarize(deltas)
            self.write_manifest(status)
        return summary

    def open_workers(self) -> None:
        """``--ray``: the cluster and a client worker on each node used."""
        if self.load is None or self.config.ray is None:
            return
        from servelab.runner.distributed.cluster import parse_target
        from servelab.runner.distributed.load import LoadPool

        self.load.pool = LoadPool.open(parse_target(self.config.ray), self.config.workers,
                                       self.reporter.note)  # fmt: skip
        labels = ", ".join(n.label for n in self.load.pool.nodes)
        note = (f"measured requests sent by Ray load workers {labels} ({self.config.ray}); "
                "warm-up from the driver; wall-clock times on the driver's clock")  # fmt: skip
        self.manifest = self.manifest.model_copy(update={"notes": (*self.manifest.notes, note)})

    def close_workers(self) -> None:
        """Record the workers' clock offsets and requests; stop them and the cluster."""
        pool = self.load.pool if self.load is not None else None
        if pool is None:
            return
        try:
            self.manifest = self.manifest.model_copy(update={"load_workers": pool.records()})
        finally:
            pool.close()

    def summarize(self, deltas: dict[str, float] | None) -> BenchSummary:
        rows = read_jsonl(self.run.requests).rows if self.run.requests.exists() else []
        describe = self.manifest.arms[ARM].describe if ARM in self.manifest.arms else None
        names = counter_names(self.cls.kind, identity_engine([describe] if describe else []))
        summary = bench_summary(
            rows, deltas, names, self.config.slos,
            caching=self.engine_config.prefix_cache, caches=read_block_caches(self.run),
        )  # fmt: skip
        write_json_atomic(self.run.summary, summary.to_json())
        return summary


def with_variant(workload: Workload, variant: str | None) -> Workload:
    """``workload`` with its named system prompt ``variant`` (``--system-prompt``) in place of
    its own; a one-line error names the variants it has."""
    if variant is None:
        return workload
    try:
        return workload.with_system(workload.system_for(variant))
    except ValueError as exc:
        raise UsageError(f"bench: --system-prompt: {exc}") from None


def load_label(config: BenchConfig) -> str:
    """An open loop's progress label: ``(2 req/s poisson, <= 4 in flight)``; "" closed loop."""
    if config.trace is not None:
        return f"(trace {Path(config.trace).name} x{config.time_scale:g})"
    if config.rate is None:
        return ""
    shape = config.arrival if config.arrival != "gamma" else f"gamma {config.burstiness:g}"
    cap = f", <= {config.max_concurrency} in flight" if config.max_concurrency else ""
    return f"({config.rate:g} req/s {shape}{cap})"


def run_bench(
    config: BenchConfig,
    out: Path | None = None,
    reporter: Reporter | None = None,
    *,
    seam: Seam | None = None,
) -> BenchResult:
    """Run one bench and return where its results are and their summary."""
    open_cap = config.rate is not None and config.max_concurrency is None
    ensure_fd_limit(min(config.requests, MAX_READERS) if open_cap else config.slots)
    run = plan_run_dir(config.name, out)
    bench = _Bench(config, run, reporter or NullReporter(), seam or Seam())
    create_run_dir(run)
    try:
        summary = bench.execute()
    except BaseException as exc:
        replacement = failure_error(exc, run.root, resumable=False)
        if replacement is None:
            raise
        raise replacement from exc
    return BenchResult(run_dir=run, summary=summary)
