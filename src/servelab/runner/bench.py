"""``servelab bench``: one configuration, one workload, measured end to end.

Owns the bench lifecycle, in this order (``LIFECYCLE``, tested): preflight -> launch ->
healthy -> describe -> warmup -> measure -> scrape -> stop -> summarize. Every request row is
written and flushed as it completes; the engine is stopped on every exit path, including
Ctrl-C and a crash of the engine itself, which ends the run with ``EngineCrashedError`` after
every request already sent has been recorded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import servelab
from servelab.client.clock import MonotonicClock, WallAnchor
from servelab.engines.base import Engine, create_engine
from servelab.engines.prom import MetricsSnapshot, counter_deltas
from servelab.errors import EngineCrashedError, EngineError, Interrupted
from servelab.records import Observation, Phase
from servelab.rows import RowContext, build_row
from servelab.runner.drive import RequestParams, build_request, crash_after, run_jobs
from servelab.runner.host import foreign_engines, host_facts
from servelab.runner.preflight import ensure_fd_limit
from servelab.runner.progress import NullReporter, Reporter
from servelab.runner.summary import summarize_rows
from servelab.spec.bench import BenchConfig
from servelab.store import SCHEMA_VERSION
from servelab.store.jsonl import JsonlWriter, read_jsonl, write_json_atomic
from servelab.store.rundir import RunDir, create_run_dir, plan_run_dir
from servelab.workloads import Workload, load_workload

LIFECYCLE = (
    "preflight", "launch", "healthy", "describe", "warmup", "measure", "scrape", "stop",
    "summarize",
)  # fmt: skip
ARM = "bench"


@dataclass(frozen=True, slots=True)
class Job:
    seq: int
    phase: Phase
    prompt_index: int


@dataclass(frozen=True, slots=True)
class BenchResult:
    run_dir: RunDir
    summary: dict[str, Any]


def preflight(config: BenchConfig) -> list[dict[str, Any]]:
    """Findings about the machine that could distort the numbers; recorded, not fatal."""
    findings: list[dict[str, Any]] = []
    others = foreign_engines()
    if others and config.engine.kind == "llamacpp":
        findings.append({
            "kind": "foreign_engine",
            "detail": f"{len(others)} other engine process(es) running: "
            + ", ".join(f"{o['name']} (pid {o['pid']})" for o in others),
            "advice": "stop them: engines on the same cores slow each other down many-fold",
        })  # fmt: skip
    facts = host_facts()
    load1 = facts["loadavg"][0]
    cores = facts["cpu_count_logical"] or 1
    if load1 > 0.5 * cores:
        findings.append({
            "kind": "busy_machine",
            "detail": f"1-minute load average {load1:.2f} on {cores} cores",
            "advice": "wait for the machine to go idle; the run's numbers will be noisy",
        })  # fmt: skip
    return findings


class _Bench:
    def __init__(self, config: BenchConfig, run: RunDir, reporter: Reporter) -> None:
        self.config = config
        self.run = run
        self.reporter = reporter
        self.workload: Workload = load_workload(config.workload)
        self.clock = MonotonicClock()
        self.anchor = WallAnchor.take(self.clock)
        # Built before the run directory exists, so a wrong model or binary leaves no debris.
        self.engine: Engine = create_engine(self.engine_config(), run.engine_log(ARM))
        self.crash: EngineCrashedError | None = None
        self.stages: list[str] = []
        self.manifest: dict[str, Any] = {}

    def stage(self, name: str) -> None:
        self.stages.append(name)

    def write_manifest(self, status: str, **extra: Any) -> None:
        self.manifest.update(status=status, stages=list(self.stages), **extra)
        write_json_atomic(self.run.manifest, self.manifest)

    def engine_config(self) -> Any:
        c = self.config.engine
        if c.kind == "llamacpp" and c.parallel < self.config.concurrency:
            return c.model_copy(update={"parallel": self.config.concurrency})
        return c

    def start_manifest(self, findings: list[dict[str, Any]]) -> None:
        self.manifest = {
            "schema_version": SCHEMA_VERSION,
            "servelab_version": servelab.__version__,
            "kind": "bench",
            "run_id": self.run.run_id,
            "created_unix_s": self.anchor.wall_unix_s,
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "config": self.config.model_dump(mode="json"),
            "arms": {ARM: {"engine_config": self.engine_config().model_dump(mode="json")}},
            "workload": {
                "name": self.workload.name,
                "version": self.workload.version,
                "content_hash": self.workload.content_hash,
                "prompts": len(self.workload.prompts),
            },
            "host": host_facts(),
            "preflight": findings,
        }
        self.write_manifest("starting")

    def jobs(self) -> list[Job]:
        n_prompts = len(self.workload.prompts)
        warm = [Job(i, Phase.WARMUP, i % n_prompts) for i in range(self.config.warmup)]
        base = len(warm)
        trial = [Job(base + i, Phase.TRIAL, i % n_prompts) for i in range(self.config.requests)]
        return warm + trial

    def params(self) -> RequestParams:
        cfg = self.config
        return RequestParams(cfg.max_tokens, cfg.temperature, cfg.seed, cfg.ignore_eos)

    def record(
        self, job: Job, sent: float, obs: Observation, writer: JsonlWriter, engine: Engine
    ) -> None:
        item = self.workload.prompts[job.prompt_index]
        ctx = RowContext(
            run_id=self.run.run_id, arm=ARM, block=0, phase=job.phase, seq=job.seq,
            prompt_id=item.id, concurrency=self.config.concurrency, t_send_unix_s=sent,
        )  # fmt: skip
        row = build_row(obs, ctx)
        writer.write(row)
        self.reporter.request_done(row)
        if self.crash is None:
            self.crash = crash_after(engine, obs)

    def phase(self, engine: Engine, name: Phase, jobs: list[Job], writer: JsonlWriter) -> None:
        if not jobs:
            return
        self.reporter.phase(f"{name} ({self.config.concurrency} in flight)", len(jobs))
        params = self.params()
        run_jobs(
            engine, jobs, self.config.concurrency, self.config.request_timeout_s,
            request_for=lambda job: build_request(self.workload, job.prompt_index, engine, params),
            on_result=lambda job, sent, obs: self.record(job, sent, obs, writer, engine),
            clock=self.clock, anchor=self.anchor, should_stop=lambda: self.crash is not None,
        )  # fmt: skip
        if self.crash is None:
            engine.check_alive()

    def snapshot(self, engine: Engine, label: str) -> MetricsSnapshot | None:
        snap = engine.scrape_metrics()
        if snap is not None:
            write_json_atomic(
                self.run.metrics_dir / f"{ARM}-{label}.json",
                {"schema_version": SCHEMA_VERSION, "samples": snap.samples, "kinds": snap.kinds},
            )
        return snap

    def measure(self, engine: Engine) -> dict[str, float] | None:
        jobs = self.jobs()
        with JsonlWriter(self.run.requests) as writer:
            self.stage("warmup")
            self.phase(engine, Phase.WARMUP, [j for j in jobs if j.phase is Phase.WARMUP], writer)
            before = self.snapshot(engine, "before") if self.crash is None else None
            self.stage("measure")
            self.phase(engine, Phase.TRIAL, [j for j in jobs if j.phase is Phase.TRIAL], writer)
        self.stage("scrape")
        after = self.snapshot(engine, "after") if self.crash is None else None
        if before is None or after is None:
            return None
        deltas = counter_deltas(before, after)
        write_json_atomic(
            self.run.metrics_dir / f"{ARM}-deltas.json",
            {"schema_version": SCHEMA_VERSION, "counter_deltas": deltas},
        )
        return deltas

    def execute(self) -> dict[str, Any]:
        self.stage("preflight")
        self.start_manifest(preflight(self.config))
        engine = self.engine
        deltas: dict[str, float] | None = None
        status = "failed"
        try:
            self.stage("launch")
            if engine.kind == "llamacpp":
                self.reporter.note(f"starting llama-server (log: {self.run.engine_log(ARM)})")
            else:
                self.reporter.note(f"connecting to {engine.base_url}")
            engine.launch()
            engine.wait_healthy(self.config.engine.startup_timeout_s)
            self.stage("healthy")
            self.stage("describe")
            self.manifest["arms"][ARM]["describe"] = engine.describe()
            self.write_manifest("running")
            deltas = self.measure(engine)
            status = "crashed" if self.crash else "complete"
        except (KeyboardInterrupt, SystemExit):
            status = "interrupted"
            raise
        except EngineError:
            status = "engine_error"
            raise
        finally:
            self.stage("stop")
            engine.stop()
            self.reporter.close()
            self.stage("summarize")
            summary = self.summarize(deltas)
            self.write_manifest(status)
        if self.crash is not None:
            raise self.crash
        return summary

    def summarize(self, deltas: dict[str, float] | None) -> dict[str, Any]:
        rows = read_jsonl(self.run.requests).rows if self.run.requests.exists() else []
        summary = summarize_rows(rows, deltas)
        write_json_atomic(self.run.summary, summary)
        return summary


def run_bench(
    config: BenchConfig, out: Path | None = None, reporter: Reporter | None = None
) -> BenchResult:
    """Run one bench and return where its results are and their summary."""
    bench_reporter = reporter or NullReporter()
    ensure_fd_limit(config.concurrency)
    run = plan_run_dir(config.name, out)
    bench = _Bench(config, run, bench_reporter)
    create_run_dir(run)
    try:
        summary = bench.execute()
    except KeyboardInterrupt as exc:
        raise Interrupted(f"interrupted; requests recorded so far are in {run.root}") from exc
    except EngineCrashedError as exc:
        raise EngineCrashedError(f"{exc}; requests recorded so far are in {run.root}") from exc
    return BenchResult(run_dir=run, summary=summary)
