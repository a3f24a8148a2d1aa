"""``servelab run`` / ``servelab resume``: an experiment, block by block, interleaved over arms.

Owns the experiment's path through the shared lifecycle (``runner/lifecycle.py``): load the
spec and its workload once -> resolve every arm once (``ExperimentInputs``) -> confound guard ->
preflight (through the seam) -> KV probe -> for each planned block: (re)start the arm's engine
when the arm changes, warm up, run the block's requests, scrape -> after each round, a
sequential look -> stop -> perplexity. Every request row is appended and flushed as it
completes and carries a stable ``request_id``, so ``resume`` (also after ``kill -9``) runs
exactly the planned requests not yet recorded: no duplicate, none lost.

``run_experiment`` and ``resume_experiment`` take a ``Seam`` (engine factory, transport, clock,
preflight): the real ones by default, the replay engine on a fake clock in the unit tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import ValidationError

from servelab.analysis import look
from servelab.engines.prom import counter_deltas
from servelab.engines.registry import engine_class
from servelab.errors import UsageError
from servelab.runner.block_jobs import BlockWork, trace_work, workload_work
from servelab.runner.drive import RequestParams
from servelab.runner.experiment_inputs import ExperimentInputs, load_spec, validation_message
from servelab.runner.experiment_manifest import ManifestState, new_manifest, resume_entry
from servelab.runner.hardware import profile_for
from servelab.runner.lifecycle import (
    EXPERIMENT_RECORDS,
    ArmRun,
    Block,
    BlockCounters,
    BlockExecutor,
    Lifecycle,
    Seam,
    Stage,
    failure_error,
    failure_status,
    slo_check,
)
from servelab.runner.preflight import ensure_fd_limit, refuse_or_record
from servelab.runner.progress import NullReporter, Reporter
from servelab.spec.experiment import ExperimentSpec
from servelab.spec.limits import DEFAULT_MAX_FAILURE_RATE
from servelab.spec.load import LoadLevel, OpenLoop
from servelab.spec.schedule import BlockPlan, plan_blocks, request_id
from servelab.store import Look, Manifest, RunStatus, read_manifest
from servelab.store.jsonl import JsonlWriter, read_jsonl
from servelab.store.metrics_files import write_block_deltas
from servelab.store.rundir import RunDir, create_run_dir, plan_run_dir
from servelab.workloads import Workload

if TYPE_CHECKING:
    from servelab.runner.distributed.ray_run import RayRun
    from servelab.runner.distributed.spread import Spread

__all__ = [
    "Experiment",
    "ExperimentResult",
    "load_spec",
    "resume_experiment",
    "run_experiment",
    "validation_message",
]


@dataclass
class ExperimentResult:
    run_dir: RunDir
    status: RunStatus
    stopped_early: bool
    looks: list[Look] = field(default_factory=list)
    max_failure_rate: float = DEFAULT_MAX_FAILURE_RATE
    workload: Workload | None = None  # as the run loaded it, for its report (read once)


class Experiment:
    """One experiment's execution over its run directory (a fresh run or a resume)."""

    def __init__(
        self,
        inputs: ExperimentInputs,
        run: RunDir,
        state: ManifestState,
        reporter: Reporter,
        seam: Seam,
        lifecycle: Lifecycle,
        ray: RayRun | None = None,
    ) -> None:
        self.inputs = inputs
        self.ray = ray
        self.spec = inputs.spec
        self.run = run
        self.state = state
        self.reporter = reporter
        self.seam = seam
        self.lifecycle = lifecycle
        rows = read_jsonl(run.requests).rows if run.requests.exists() else []
        done = {str(r.get("request_id")) for r in rows if r.get("phase") == "trial"}
        self.executor = BlockExecutor(
            run, inputs.workload, seam, lifecycle, reporter,
            warmup=self.spec.warmup, timeout_s=self.spec.base.request_timeout_s,
            startup_timeout_s=lambda arm: inputs.arms[arm].engine.startup_timeout_s,
            seq=len(rows), done=done, starts=state.n_starts(), on_start=state.add_start,
            slo_check=slo_check(self.spec.slos),
        )  # fmt: skip
        self.texts: dict[tuple[str, int], str] = {}  # a trace's synthesised prompts

    # -- KV memory as the engine reports it ------------------------------------------------
    def probe_kv(self) -> None:
        """Start each arm whose engine reports its KV memory once, at the configuration that
        makes it log it (llama-server: ``-lv 4``), and record the report; measuring runs stay
        at the default configuration, which costs the engine nothing."""
        for name, arm in self.inputs.arms.items():
            cls = engine_class(arm.engine.kind)
            if not cls.reports_kv or self.state.has_kv_reported(name):
                continue
            log = self.run.kv_probe_log(name)
            engine = self.executor.create(cls.kv_probe_config(arm.engine), log)
            self.reporter.note(f"reading {name}'s KV cache size from {cls.process_name}")
            try:
                engine.launch()
                engine.wait_healthy(arm.engine.startup_timeout_s)
            finally:
                engine.stop()
            text = log.read_text(encoding="utf-8", errors="replace")
            self.state.set_kv_reported(name, cls.read_kv_report(text), log.name)

    # -- plan, blocks and sequential looks --------------------------------------------------
    def sequential(self) -> bool:
        s = self.spec
        return s.max_blocks > s.blocks or s.stop.target_ci_width is not None

    def block(self, bp: BlockPlan) -> Block:
        arm = self.inputs.arms[bp.arm]
        params = self.inputs.params(bp.arm)
        work = self.work(bp, params)
        run = ArmRun(bp.arm, arm.engine, params)
        level = LoadLevel(bp.concurrency, bp.rate_rps).label
        label = f"block {bp.block + 1}/{self.spec.max_blocks} · {bp.arm} · {level}"
        restart = self.spec.restart == "every_block"
        load = self.spec.load
        offsets = work.offsets_s
        if bp.rate_rps is not None and load is not None:
            offsets = schedule_of(load.open_loop(bp.rate_rps), len(work.trials), self.spec.seed,
                                  bp.block)  # fmt: skip
        return Block(
            run, bp.block, bp.concurrency, work.trials, restart, label, rate_rps=bp.rate_rps,
            offsets_s=offsets, max_concurrency=load.max_concurrency if load else None,
            source=work.source,
        )  # fmt: skip

    def work(self, bp: BlockPlan, params: RequestParams) -> BlockWork:
        """The block's trials: the trace's lines, else ``requests_per_block`` prompts or
        conversations."""
        trace, load = self.inputs.trace, self.spec.load
        n = len(trace.requests) if trace is not None else self.spec.requests_per_block
        ids = [request_id(bp.block, bp.arm, bp.concurrency, i, bp.rate_rps) for i in range(n)]
        if trace is not None and load is not None:
            return trace_work(trace, ids, params, seed=self.spec.seed,
                              time_scale=load.time_scale, texts=self.texts)  # fmt: skip
        return workload_work(self.inputs.workload, ids, bp.block, params, params.seed)

    def write_counters(self, bp: BlockPlan, counters: BlockCounters | None) -> None:
        if counters is None or counters.before is None or counters.after is None:
            return
        self.write_deltas(bp, counter_deltas(counters.before, counters.after))

    def write_deltas(self, bp: BlockPlan, deltas: dict[str, float] | None) -> None:
        """A block's counter deltas (None: its engine has no counters) beside its rows."""
        if deltas is not None:
            write_block_deltas(self.run, bp.arm, bp.block, bp.concurrency, deltas, bp.rate_rps)

    def plan(self) -> list[BlockPlan]:
        spec = self.spec
        rates = spec.rate_levels
        levels = (
            (spec.load.max_concurrency or 0,) if spec.load and rates else spec.concurrency_levels
        )
        return plan_blocks(list(self.inputs.arms), spec.max_blocks, levels, spec.schedule,
                           spec.seed, rates)  # fmt: skip

    def execute(self, writer: JsonlWriter) -> bool:
        """Run every planned block not yet complete, round by round (each round's blocks on
        this machine one after another, or spread over Ray nodes at once); return whether a
        look stopped early."""
        plan = self.plan()
        self.state.set_plan(plan)
        rounds: dict[int, list[BlockPlan]] = {}
        for bp in plan:
            rounds.setdefault(bp.block, []).append(bp)
        spread = self.spread() if self.ray is not None else None
        for r, blocks in rounds.items():
            if spread is not None:
                self.reporter.phase(f"round {r + 1}/{self.spec.max_blocks} · "
                                    f"{len(blocks)} blocks over Ray nodes", 0)  # fmt: skip
                spread.run_round(blocks, r, writer)
            else:
                for bp in blocks:
                    self.write_counters(bp, self.executor.run_block(self.block(bp), writer))
            if self.look_after(r):
                return True
        return False

    def look_after(self, r: int) -> bool:
        """The sequential look after round ``r``; True when it stops the run."""
        spec = self.spec
        if r + 1 < spec.blocks or not self.sequential():
            return False
        earlier = self.state.look_after(r)
        if earlier is not None:
            return self.state.last_look_stopped()
        rows = read_jsonl(self.run.requests).rows
        decision = look(self.state.manifest.to_json(), rows, r)
        self.state.add_look(decision)
        self.reporter.note(f"look after block {r + 1}: {decision.reason}")
        return decision.stop and r + 1 < spec.max_blocks

    def spread(self) -> Spread:
        """The driver's side of a run over Ray nodes (``distributed.spread``)."""
        from servelab.runner.distributed.spread import Spread

        assert self.ray is not None
        ex = self.executor

        def lost(label: str, why: str) -> None:
            self.state.update(self.state.manifest.with_node_lost(label, why))

        return Spread(
            self.ray.pool, self.run, self.ray.allowed, self.block, self.state.add_start,
            self.write_deltas,
            ex.done, ex.seq, self.reporter.note, self.reporter.request_done, lost,
        )  # fmt: skip


def schedule_of(load: OpenLoop, n: int, seed: int, block: int) -> tuple[float, ...]:
    """An open-loop block's send times: the same for every arm of a round (a paired design),
    drawn afresh each round and rate."""
    key = [seed, block, round(load.rate_rps * 1000)]
    return tuple(load.offsets(n, np.random.default_rng(key)).tolist())


def run_experiment(
    spec_path: Path,
    out: Path | None = None,
    *,
    allow_confound: tuple[str, ...] = (),
    force: bool = False,
    max_foreign_cpu: float = 0.25,
    reporter: Reporter | None = None,
    seam: Seam | None = None,
    inputs: ExperimentInputs | None = None,
) -> ExperimentResult:
    """Run the experiment ``spec_path`` describes into a fresh run directory. ``inputs``: the
    spec already loaded and resolved (``ExperimentInputs.load``), so nothing is read twice."""
    seam = seam or Seam()
    lifecycle = Lifecycle(EXPERIMENT_RECORDS, seam)
    lifecycle.enter(Stage.LOAD)
    spec, raw = (inputs.spec, inputs.raw) if inputs else load_spec(spec_path)
    run = plan_run_dir(spec.name, out)
    reporter = reporter or NullReporter()
    lifecycle.enter(Stage.RESOLVE)
    inputs = inputs or ExperimentInputs.resolve(spec, raw, spec_path)
    ray = _open_ray(inputs, run.run_id, reporter)
    try:
        lifecycle.enter(Stage.CONFOUND_GUARD)
        allowed = inputs.check_confounds(allow_confound)
        lifecycle.enter(Stage.PREFLIGHT)
        ensure_fd_limit(max(spec.concurrency_levels))
        findings, release = seam.preflight.check(inputs.preflight_check(run.root, max_foreign_cpu))
        try:
            refuse_or_record([dict(f) for f in findings], force)
            hardware = inputs.hardware()
            create_run_dir(run)
            # Only now, past every check that can refuse the run: an error must be the first
            # line.
            reporter.note(f"{len(inputs.arms)} arms; results in {run.root}")
            manifest = new_manifest(inputs, run, allowed, findings, force, hardware).with_profile(
                profile_for(hardware)
            )
            if ray is not None:
                manifest = _with_ray(manifest, ray)
            state = ManifestState(run, manifest, lifecycle)
            state.save()
            return _execute(inputs, run, state, reporter, seam, lifecycle, ray)
        finally:
            release()
    finally:
        if ray is not None:
            ray.close()


def _open_ray(inputs: ExperimentInputs, run_id: str, reporter: Reporter) -> RayRun | None:
    """The run's Ray cluster and node workers when the spec spreads it (``ray:``)."""
    if inputs.spec.ray is None:
        return None
    from servelab.runner.distributed.cluster import parse_target
    from servelab.runner.distributed.ray_run import RayRun

    return RayRun.open(parse_target(inputs.spec.ray.address), inputs, run_id, reporter.note)


def _with_ray(manifest: Manifest, ray: RayRun) -> Manifest:
    from servelab.runner.distributed.ray_run import spread_note

    record = ray.record()
    if manifest.ray is not None:  # a resume: the nodes it had before, then this cluster's
        record = record.model_copy(update={"nodes": {**manifest.ray.nodes, **record.nodes}})
    note = spread_note(record)
    notes = manifest.notes if note in manifest.notes else (*manifest.notes, note)
    return manifest.with_ray(record).model_copy(update={"notes": notes})


def _execute(
    inputs: ExperimentInputs,
    run: RunDir,
    state: ManifestState,
    reporter: Reporter,
    seam: Seam,
    lifecycle: Lifecycle,
    ray: RayRun | None = None,
) -> ExperimentResult:
    spec = inputs.spec
    exp = Experiment(inputs, run, state, reporter, seam, lifecycle, ray)
    status: RunStatus = "failed"
    stopped_early = False
    try:
        state.save("running")
        if spec.kv_probe:
            lifecycle.enter(Stage.KV_PROBE)
            state.save()
            exp.probe_kv()
        lifecycle.enter(Stage.BLOCKS)
        state.save()
        with JsonlWriter(run.requests) as writer:
            stopped_early = exp.execute(writer)
        lifecycle.enter(Stage.STOP)
        exp.executor.stop()
        if spec.ppl:
            lifecycle.enter(Stage.PPL)
            state.save()
            reporter.note("measuring perplexity and KL divergence per arm")
            from servelab.runner.quality import run_ppl

            run_ppl(run.root)
        status = "stopped_early" if stopped_early else "complete"
    except BaseException as exc:
        status = failure_status(exc)
        if ray is not None:
            ray.interrupted = True  # nodes may be mid-block: stop them at once
        replacement = failure_error(exc, run.root, resumable=True)
        if replacement is None:
            raise
        raise replacement from exc
    finally:
        exp.executor.stop()
        reporter.close()
        state.save(status)
    return ExperimentResult(
        run, status, stopped_early, state.looks(), spec.max_failure_rate, inputs.workload
    )


def resume_experiment(
    run_root: Path,
    *,
    ray: str | None = None,
    force: bool = False,
    max_foreign_cpu: float = 0.25,
    reporter: Reporter | None = None,
    seam: Seam | None = None,
) -> ExperimentResult:
    """Run the planned requests of ``run_root`` not yet recorded."""
    seam = seam or Seam()
    run = RunDir(run_root)
    manifest = read_manifest(run)
    if manifest.kind != "experiment":
        raise UsageError(f"{run_root} is not an experiment run (kind {manifest.kind!r})")
    if manifest.status in ("complete", "stopped_early"):
        raise UsageError(f"{run_root} is already complete; `servelab report {run_root}` reports it")
    stored = dict(manifest.spec or {})
    if ray is not None:  # --ray: the cluster to continue on (a spread run's recorded one else)
        stored["ray"] = {"address": ray}
    try:
        spec = ExperimentSpec.model_validate(stored)
    except ValidationError as exc:
        raise validation_message(exc, f"{run.manifest} spec") from exc
    # A resume records the stages it runs again; load .. preflight were recorded at the start.
    records = EXPERIMENT_RECORDS - {Stage.LOAD, Stage.RESOLVE, Stage.CONFOUND_GUARD,
                                    Stage.PREFLIGHT}  # fmt: skip
    lifecycle = Lifecycle(records, seam, done=manifest.stages)
    reporter = reporter or NullReporter()
    lifecycle.enter(Stage.RESOLVE)
    inputs = ExperimentInputs.resolve(spec, manifest.spec_source or {}, None)
    state = ManifestState(run, manifest, lifecycle)
    # before a cluster is joined: everything but node.hardware, which only the nodes tell
    inputs.refuse_changed(state.started_effective(), skip=("node.hardware",))
    spread = _open_ray(inputs, run.run_id, reporter)
    try:
        inputs.refuse_changed(state.started_effective())
        lifecycle.enter(Stage.PREFLIGHT)
        ensure_fd_limit(max(spec.concurrency_levels))
        check = inputs.preflight_check(run.root, max_foreign_cpu, ports=False)
        findings, release = seam.preflight.check(check)
        try:
            refuse_or_record([dict(f) for f in findings], force)
            state.add_resume(resume_entry(manifest, findings), forced=force)
            if spread is not None:
                state.update(_with_ray(state.manifest, spread))
            return _execute(inputs, run, state, reporter, seam, lifecycle, spread)
        finally:
            release()
    finally:
        if spread is not None:
            spread.close()
