"""``servelab run`` / ``servelab resume``: an experiment, block by block, interleaved over arms.

Owns the experiment lifecycle: load the spec -> resolve every arm's effective configuration ->
confound guard -> preflight (machine lock, port, CPU, GPU, memory) -> for each planned block:
(re)start the arm's engine when the arm changes, warm up, run the block's requests, scrape ->
after each round, a sequential look -> stop -> report. Every request row is appended and
flushed as it completes and carries a stable ``request_id``, so ``resume`` (also after
``kill -9``) runs exactly the planned requests not yet recorded: no duplicate, none lost.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

import servelab
from servelab.client.clock import MonotonicClock, WallAnchor
from servelab.engines.base import Engine, create_engine
from servelab.engines.prom import counter_deltas
from servelab.errors import EngineCrashedError, EngineError, Interrupted, StoreError, UsageError
from servelab.models import resolve_model
from servelab.records import Observation, Phase
from servelab.report.analyze import look
from servelab.rows import RowContext, build_row
from servelab.runner.drive import RequestParams, build_request, crash_after, run_jobs
from servelab.runner.hardware import resolve_hardware
from servelab.runner.host import host_facts
from servelab.runner.preflight import (
    MachineLock,
    ensure_fd_limit,
    refuse_or_record,
    run_preflight,
)
from servelab.runner.progress import NullReporter, Reporter
from servelab.runner.quality import run_ppl
from servelab.runner.resolve import canonical_names, effective_config
from servelab.spec.confound import check_confounds, config_diff
from servelab.spec.experiment import ArmConfig, ExperimentSpec, resolve_arm
from servelab.spec.limits import DEFAULT_MAX_FAILURE_RATE
from servelab.spec.schedule import BlockPlan, plan_blocks, prompt_index, request_id
from servelab.store import SCHEMA_VERSION
from servelab.store.jsonl import JsonlWriter, read_jsonl, write_json_atomic
from servelab.store.rundir import RunDir, create_run_dir, plan_run_dir, read_manifest
from servelab.theory.kvreport import measured_kv_from_log
from servelab.userfiles import read_yaml
from servelab.workloads import Workload, load_workload

STAGES = ("load", "resolve", "confound_guard", "preflight", "kv_probe", "blocks")


def validation_message(exc: ValidationError, source: str) -> UsageError:
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first["loc"] if not str(p).startswith("function-after"))
    msg = str(first["msg"]).removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown key; check its spelling or where it is nested"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return UsageError(f"{source}: {loc + ': ' if loc else ''}{msg}{more}")


def load_spec(path: Path) -> tuple[ExperimentSpec, dict[str, Any]]:
    raw = read_yaml(path, "spec file")
    if not isinstance(raw, dict):
        raise UsageError(f"{path}: an experiment spec is a YAML mapping (base:, arms: ...)")
    try:
        return ExperimentSpec.model_validate(raw), raw
    except ValidationError as exc:
        raise validation_message(exc, str(path)) from exc


@dataclass(frozen=True, slots=True)
class TrialJob:
    request_id: str
    index: int
    prompt_index: int
    phase: Phase


@dataclass
class ExperimentResult:
    run_dir: RunDir
    status: str
    stopped_early: bool
    looks: list[dict[str, Any]] = field(default_factory=list)
    max_failure_rate: float = DEFAULT_MAX_FAILURE_RATE


class Experiment:
    """One experiment's execution state over its run directory (a fresh run or a resume)."""

    def __init__(
        self,
        spec: ExperimentSpec,
        run: RunDir,
        manifest: dict[str, Any],
        reporter: Reporter,
    ) -> None:
        self.spec = spec
        self.run = run
        self.manifest = manifest
        self.reporter = reporter
        self.workload: Workload = load_workload(spec.base.workload)
        self.arms: dict[str, ArmConfig] = {a.name: resolve_arm(spec, a) for a in spec.expand()}
        self.clock = MonotonicClock()
        self.anchor = WallAnchor.take(self.clock)
        self.crash: EngineCrashedError | None = None
        self.engine: Engine | None = None
        self.engine_arm: str | None = None
        rows = read_jsonl(run.requests).rows if run.requests.exists() else []
        self.done = {str(r.get("request_id")) for r in rows if r.get("phase") == "trial"}
        self.seq = len(rows)
        self.starts = sum(len(a.get("starts", [])) for a in manifest["arms"].values())

    # -- manifest -------------------------------------------------------------------------
    def save(self, status: str | None = None) -> None:
        if status is not None:
            self.manifest["status"] = status
        write_json_atomic(self.run.manifest, self.manifest)

    def stage(self, name: str) -> None:
        self.manifest.setdefault("stages", []).append(name)

    # -- engine ---------------------------------------------------------------------------
    def stop_engine(self) -> None:
        if self.engine is not None:
            self.engine.stop()
            self.engine = None
            self.engine_arm = None

    def start_engine(self, bp: BlockPlan, writer: JsonlWriter) -> Engine:
        self.stop_engine()
        arm = self.arms[bp.arm]
        log = self.run.engine_log(bp.arm)
        engine = create_engine(arm.engine, log)
        self.reporter.note(f"starting {bp.arm} (block {bp.block}; log: {log.name})")
        self.engine, self.engine_arm = engine, bp.arm
        engine.launch()
        engine.wait_healthy(arm.engine.startup_timeout_s)
        describe = engine.describe()
        self.manifest["arms"][bp.arm].setdefault("starts", []).append({
            "block": bp.block, "concurrency": bp.concurrency,
            "t_unix_s": time.time(), "describe": describe,
        })  # fmt: skip
        self.save()
        self.starts += 1
        warm = [
            TrialJob(f"w{self.starts}/{bp.arm}/{i}", i, i % len(self.workload.prompts),
                     Phase.WARMUP)
            for i in range(self.spec.warmup)
        ]  # fmt: skip
        if warm:
            self.reporter.phase(f"{bp.arm}: warm-up", len(warm))
            self.run_requests(engine, bp, warm, writer)
        return engine

    # -- requests -------------------------------------------------------------------------
    def params(self, arm: str) -> RequestParams:
        a = self.arms[arm]
        return RequestParams(a.max_tokens, a.temperature, a.seed, a.ignore_eos)

    def run_requests(
        self, engine: Engine, bp: BlockPlan, jobs: list[TrialJob], writer: JsonlWriter
    ) -> None:
        params = self.params(bp.arm)
        concurrency = bp.concurrency if jobs[0].phase is Phase.TRIAL else 1

        def record(job: TrialJob, sent: float, obs: Observation) -> None:
            item = self.workload.prompts[job.prompt_index]
            ctx = RowContext(
                run_id=self.run.run_id, arm=bp.arm, block=bp.block, phase=job.phase,
                seq=self.seq, prompt_id=item.id, concurrency=concurrency,
                t_send_unix_s=sent, request_id=job.request_id,
            )  # fmt: skip
            self.seq += 1
            row = build_row(obs, ctx)
            writer.write(row)
            if job.phase is Phase.TRIAL:
                self.done.add(job.request_id)
            self.reporter.request_done(row)
            if self.crash is None:
                self.crash = crash_after(engine, obs)

        run_jobs(
            engine, jobs, concurrency, self.spec.base.request_timeout_s,
            request_for=lambda job: build_request(self.workload, job.prompt_index, engine, params),
            on_result=record, clock=self.clock, anchor=self.anchor,
            should_stop=lambda: self.crash is not None,
        )  # fmt: skip
        if self.crash is not None:
            raise self.crash
        engine.check_alive()

    def run_block(self, bp: BlockPlan, writer: JsonlWriter) -> None:
        n = self.spec.requests_per_block
        n_prompts = len(self.workload.prompts)
        todo = [
            TrialJob(rid, i, prompt_index(bp.block, i, n, n_prompts), Phase.TRIAL)
            for i in range(n)
            if (rid := request_id(bp.block, bp.arm, bp.concurrency, i)) not in self.done
        ]
        if not todo:
            return
        fresh = self.engine is None or self.engine_arm != bp.arm
        if fresh or self.spec.restart == "every_block":
            engine = self.start_engine(bp, writer)
        else:
            assert self.engine is not None
            engine = self.engine
        before = engine.scrape_metrics()
        self.reporter.phase(
            f"block {bp.block + 1}/{self.spec.max_blocks} · {bp.arm} · c={bp.concurrency}",
            len(todo),
        )
        self.run_requests(engine, bp, todo, writer)
        after = engine.scrape_metrics()
        if before is not None and after is not None:
            write_json_atomic(
                self.run.block_metrics(bp.arm, bp.block, bp.concurrency),
                {"schema_version": SCHEMA_VERSION, "arm": bp.arm, "block": bp.block,
                 "concurrency": bp.concurrency, "counter_deltas": counter_deltas(before, after)},
            )  # fmt: skip

    # -- KV memory as the engine reports it ------------------------------------------------
    def probe_kv(self) -> None:
        """Start each llama.cpp arm once at ``-lv 4`` (the level at which llama-server prints
        its KV cache sizes) and record what it reports; measuring runs stay at the default
        level, which costs the engine nothing."""
        for name, arm in self.arms.items():
            entry = self.manifest["arms"][name]
            if arm.engine.kind != "llamacpp" or "kv_reported" in entry:
                continue
            log = self.run.kv_probe_log(name)
            config = arm.engine.model_copy(update={"flags": (*arm.engine.flags, "-lv", "4")})
            engine = create_engine(config, log)
            self.reporter.note(f"reading {name}'s KV cache size from llama-server")
            try:
                engine.launch()
                engine.wait_healthy(arm.engine.startup_timeout_s)
            finally:
                engine.stop()
            measured = measured_kv_from_log(log.read_text(encoding="utf-8", errors="replace"))
            entry["kv_reported"] = (
                {"kv_mib": measured.kv_mib, "recurrent_mib": measured.recurrent_mib,
                 "lines": [dataclasses.asdict(x) for x in measured.target], "log": log.name}
                if measured else None
            )  # fmt: skip
            self.save()

    # -- plan and sequential looks ----------------------------------------------------------
    def sequential(self) -> bool:
        s = self.spec
        return s.max_blocks > s.blocks or s.stop.target_ci_width is not None

    def look(self, after_block: int) -> dict[str, Any]:
        rows = read_jsonl(self.run.requests).rows
        decision = look(self.manifest, rows, after_block)
        return {**decision.as_look(), "stop": decision.stop,
                "confidence_level": decision.confidence_level}  # fmt: skip

    def execute(self, writer: JsonlWriter) -> bool:
        """Run every planned block not yet complete; return whether a look stopped early."""
        spec = self.spec
        arm_names = list(self.arms)
        plan = plan_blocks(
            arm_names, spec.max_blocks, spec.concurrency_levels, spec.schedule, spec.seed
        )
        self.manifest["plan"] = [
            {"block": b.block, "arm": b.arm, "concurrency": b.concurrency} for b in plan
        ]
        self.save()
        looks = self.manifest.setdefault("looks", [])
        for i, bp in enumerate(plan):
            self.run_block(bp, writer)
            round_done = i + 1 == len(plan) or plan[i + 1].block != bp.block
            if not round_done or bp.block + 1 < spec.blocks or not self.sequential():
                continue
            if any(lk.get("after_block") == bp.block for lk in looks):
                if looks[-1].get("stop"):
                    return True
                continue
            result = self.look(bp.block)
            looks.append(result)
            self.save()
            self.reporter.note(f"look after block {bp.block + 1}: {result.get('reason', '')}")
            if result.get("stop") and bp.block + 1 < spec.max_blocks:
                return True
        return False


def _effective(
    spec: ExperimentSpec, log_dir: Path
) -> tuple[dict[str, ArmConfig], dict[str, Any], dict[str, list[str]]]:
    workload = load_workload(spec.base.workload)
    arms = {a.name: resolve_arm(spec, a) for a in spec.expand()}
    effective: dict[str, Any] = {}
    argvs: dict[str, list[str]] = {}
    for name, arm in arms.items():
        effective[name], argvs[name] = effective_config(spec, arm, workload, log_dir)
    return arms, effective, argvs


def _model_bytes(arms: dict[str, ArmConfig]) -> int:
    sizes = [resolve_model(a.engine.model).size_bytes for a in arms.values()
             if a.engine.kind == "llamacpp"]  # fmt: skip
    return max(sizes, default=0)


def new_manifest(
    spec: ExperimentSpec, raw: dict[str, Any], spec_path: Path | None, run: RunDir,
    arms: dict[str, ArmConfig], effective: dict[str, Any], argvs: dict[str, list[str]],
    allowed: list[dict[str, Any]],
    findings: list[dict[str, Any]], forced: bool,
) -> dict[str, Any]:  # fmt: skip
    workload = load_workload(spec.base.workload)
    return {
        "schema_version": SCHEMA_VERSION,
        "servelab_version": servelab.__version__,
        "kind": "experiment",
        "run_id": run.run_id,
        "name": spec.name,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "spec": spec.model_dump(mode="json"),
        "spec_source": raw,
        "spec_path": str(spec_path) if spec_path else None,
        "baseline": spec.baseline_arm,
        "interleaved": True,
        "schedule": spec.schedule,
        "seed": spec.seed,
        "decision_metrics": list(spec.metrics),
        "confidence": spec.confidence,
        "stop": {
            **spec.stop.model_dump(mode="json"),
            "max_blocks": spec.max_blocks,
            "min_blocks": spec.blocks,
        },
        "workload": {
            "name": workload.name,
            "version": workload.version,
            "content_hash": workload.content_hash,
            "prompts": len(workload.prompts),
        },
        "arms": {
            name: {
                "overrides": spec.expand()[i].override.model_dump(mode="json", exclude_none=True),
                "declared": list(arm.declared),
                "engine_config": arm.engine.model_dump(mode="json"),
                "argv": argvs[name],
                "effective": effective[name],
                "starts": [],
            }
            for i, (name, arm) in enumerate(arms.items())
        },
        "config_diff": config_diff(effective),
        "declared": list(spec.declare),
        "allowed_confounds": allowed,
        "host": host_facts(),
        "preflight": findings,
        "forced": forced,
        "status": "starting",
        "stages": [],
        "looks": [],
        "resumes": [],
    }


def _lock_and_preflight(
    run: RunDir, ports: list[tuple[str, int]], arms: dict[str, ArmConfig], max_foreign_cpu: float
) -> tuple[MachineLock, list[dict[str, Any]]]:
    """Take the machine lock (or note who holds it) and run the preflight checks."""
    lock = MachineLock()
    holder = lock.acquire(run.root)
    findings = run_preflight(ports=ports, model_bytes=_model_bytes(arms),
                             max_foreign_cpu=max_foreign_cpu)  # fmt: skip
    if holder is not None:
        findings.insert(0, {
            "kind": "machine_locked", "blocking": True,
            "detail": f"another servelab experiment holds the machine ({holder})",
            "advice": "wait for it to finish",
        })  # fmt: skip
    return lock, findings


def run_experiment(
    spec_path: Path,
    out: Path | None = None,
    *,
    allow_confound: tuple[str, ...] = (),
    force: bool = False,
    max_foreign_cpu: float = 0.25,
    reporter: Reporter | None = None,
) -> ExperimentResult:
    spec, raw = load_spec(spec_path)
    run = plan_run_dir(spec.name, out)
    reporter = reporter or NullReporter()
    arms, effective, argvs = _effective(spec, run.root)
    declared = {name: arm.declared for name, arm in arms.items()}
    allowed = check_confounds(
        effective, declared, spec.baseline_arm, canonical_names(spec.declare, arms),
        canonical_names(allow_confound, arms),
    )  # fmt: skip
    ports = [(a.engine.bind, a.engine.port) for a in arms.values() if a.engine.port]
    ensure_fd_limit(max(spec.concurrency_levels))
    lock, findings = _lock_and_preflight(run, ports, arms, max_foreign_cpu)
    try:
        refuse_or_record(findings, force)
        hardware = resolve_hardware(spec.hardware, measure_cpu=True)
        create_run_dir(run)
        # Only now, past every check that can refuse the run: an error must be the first line.
        reporter.note(f"{len(arms)} arms; results in {run.root}")
        manifest = new_manifest(spec, raw, spec_path, run, arms, effective, argvs, allowed,
                                findings, force)  # fmt: skip
        manifest["stages"] = list(STAGES[:4])
        manifest["hardware"] = dataclasses.asdict(hardware) if hardware else None
        write_json_atomic(run.manifest, manifest)
        return _execute(spec, run, manifest, reporter)
    finally:
        lock.release()


def _execute(
    spec: ExperimentSpec, run: RunDir, manifest: dict[str, Any], reporter: Reporter
) -> ExperimentResult:
    exp = Experiment(spec, run, manifest, reporter)
    status = "failed"
    stopped_early = False
    try:
        exp.save("running")
        if spec.kv_probe:
            exp.stage("kv_probe")
            exp.probe_kv()
        exp.stage("blocks")
        exp.save()
        with JsonlWriter(run.requests) as writer:
            stopped_early = exp.execute(writer)
        exp.stop_engine()
        if spec.ppl:
            exp.stage("ppl")
            exp.save()
            reporter.note("measuring perplexity and KL divergence per arm")
            run_ppl(run.root)
        status = "stopped_early" if stopped_early else "complete"
    except KeyboardInterrupt as exc:
        status = "interrupted"
        raise Interrupted(
            f"interrupted; requests so far are in {run.root}; continue with "
            f"`servelab resume {run.root}`"
        ) from exc
    except EngineCrashedError as exc:
        status = "crashed"
        raise EngineCrashedError(
            f"{exc}; requests so far are in {run.root}; after fixing the cause, continue with "
            f"`servelab resume {run.root}`"
        ) from exc
    except EngineError:
        status = "engine_error"
        raise
    except StoreError as exc:  # rows written before it are kept: resume runs only the rest
        raise StoreError(
            f"{exc}; after fixing it, continue with `servelab resume {run.root}`"
        ) from exc
    finally:
        exp.stop_engine()
        reporter.close()
        exp.save(status)
    return ExperimentResult(
        run, status, stopped_early, manifest.get("looks", []), spec.max_failure_rate
    )


def resume_experiment(
    run_root: Path, *, force: bool = False, max_foreign_cpu: float = 0.25,
    reporter: Reporter | None = None,
) -> ExperimentResult:  # fmt: skip
    run = RunDir(run_root)
    manifest = read_manifest(run)
    if manifest.get("kind") != "experiment":
        raise UsageError(f"{run_root} is not an experiment run (kind {manifest.get('kind')!r})")
    if manifest.get("status") in ("complete", "stopped_early"):
        raise UsageError(f"{run_root} is already complete; `servelab report {run_root}` reports it")
    try:
        spec = ExperimentSpec.model_validate(manifest["spec"])
    except ValidationError as exc:
        raise validation_message(exc, f"{run.manifest} spec") from exc
    reporter = reporter or NullReporter()
    arms, effective, _ = _effective(spec, run.root)
    for name, eff in effective.items():
        before = manifest["arms"].get(name, {}).get("effective", {})
        changed = [k for k in sorted(set(eff) | set(before)) if eff.get(k) != before.get(k)]
        if changed:
            k = changed[0]
            raise UsageError(
                f"arm {name!r} no longer resolves to the configuration it started with "
                f"({k}: {before.get(k)} -> {eff.get(k)}); resume needs the same engine build, "
                "model and flags; start a new run instead"
            )
    ensure_fd_limit(max(spec.concurrency_levels))
    lock, findings = _lock_and_preflight(run, [], arms, max_foreign_cpu)
    try:
        refuse_or_record(findings, force)
        manifest.setdefault("resumes", []).append({
            "t_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "previous_status": manifest.get("status"), "preflight": findings,
        })  # fmt: skip
        if force:
            manifest["forced"] = True
        return _execute(spec, run, manifest, reporter)
    finally:
        lock.release()
