"""An experiment's manifest as the run loop writes it: created once, then evolved and saved.

Owns building a new experiment's manifest from its ``ExperimentInputs`` and the one object the
run loop changes it through (``ManifestState``): status, stages, engine starts, the KV report,
the plan, looks and resumes. Every change is written at once (atomically), so a crash or a
``kill -9`` leaves a manifest that says how far the run got.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from servelab.analysis import StopDecision
from servelab.runner.experiment_inputs import ExperimentInputs
from servelab.runner.host import host_facts
from servelab.runner.lifecycle import EngineStarted, Finding, Lifecycle
from servelab.spec.confound import config_diff
from servelab.spec.schedule import BlockPlan
from servelab.store import (
    AllowedConfound,
    ArmEntry,
    EngineStart,
    KvReported,
    Look,
    Manifest,
    PlannedBlock,
    PreflightFinding,
    Resume,
    RunStatus,
    WorkloadRef,
    as_json_object,
    utc_now,
    write_manifest,
)
from servelab.store import (
    EffectiveValue as StoredValue,
)
from servelab.store.rundir import RunDir
from servelab.theory.hardware import Hardware
from servelab.theory.kvreport import MeasuredKv


def findings_record(findings: Sequence[Finding]) -> tuple[PreflightFinding, ...]:
    return tuple(PreflightFinding.model_validate(dict(f)) for f in findings)


def new_manifest(
    inputs: ExperimentInputs,
    run: RunDir,
    allowed: Sequence[Mapping[str, object]],
    findings: Sequence[Finding],
    forced: bool,
    hardware: Hardware | None,
) -> Manifest:
    """A new experiment's manifest; its decision settings live in ``spec`` only."""
    spec, workload = inputs.spec, inputs.workload
    diff: dict[str, dict[str, StoredValue]] = {
        key: dict(values) for key, values in config_diff(inputs.effective).items()
    }
    arms = {
        arm.name: ArmEntry(
            overrides=arm.override.model_dump(mode="json", exclude_none=True),
            declared=inputs.arms[arm.name].declared,
            engine_config=inputs.arms[arm.name].engine.model_dump(mode="json"),
            argv=tuple(inputs.argvs[arm.name]),
            effective=dict(inputs.effective[arm.name]),
            starts=(),
        )
        for arm in inputs.expanded
    }
    return Manifest(
        kind="experiment",
        run_id=run.run_id,
        spec=spec.model_dump(mode="json"),
        spec_source=as_json_object(inputs.raw),
        spec_path=str(inputs.spec_path) if inputs.spec_path else None,
        workload=WorkloadRef(name=workload.name, version=workload.version,
                             content_hash=workload.content_hash, prompts=len(workload.prompts)),
        arms=arms,
        config_diff=diff,
        allowed_confounds=tuple(AllowedConfound.model_validate(a) for a in allowed),
        host=host_facts(),
        preflight=findings_record(findings),
        forced=forced,
        status="starting",
        stages=(),
        looks=(),
        resumes=(),
        hardware=hardware,
    )  # fmt: skip


def resume_entry(manifest: Manifest, findings: Sequence[Finding]) -> Resume:
    return Resume(t_utc=utc_now(), previous_status=manifest.status,
                  preflight=findings_record(findings))  # fmt: skip


class ManifestState:
    """The manifest of a run in progress; every change is saved at once."""

    def __init__(self, run: RunDir, manifest: Manifest, lifecycle: Lifecycle) -> None:
        self.run = run
        self.manifest = manifest
        self.lifecycle = lifecycle

    def update(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self.save()

    def save(self, status: RunStatus | None = None) -> None:
        m = self.manifest if status is None else self.manifest.with_status(status)
        self.manifest = m.model_copy(update={"stages": tuple(self.lifecycle.stages)})
        write_manifest(self.run, self.manifest)

    def started_effective(self) -> dict[str, Mapping[str, object]]:
        return {name: entry.effective for name, entry in self.manifest.arms.items()}

    def n_starts(self) -> int:
        return sum(len(a.starts) for a in self.manifest.arms.values())

    def add_start(self, start: EngineStarted) -> None:
        record = EngineStart(
            block=start.block, concurrency=start.concurrency, t_unix_s=start.t_unix_s,
            describe=as_json_object(start.describe),
        )  # fmt: skip
        self.update(self.manifest.with_start(start.arm, record))

    def has_kv_reported(self, arm: str) -> bool:
        return self.manifest.arm(arm).kv_probed

    def set_kv_reported(self, arm: str, measured: MeasuredKv | None, log_name: str) -> None:
        kv = (
            KvReported(kv_mib=measured.kv_mib, recurrent_mib=measured.recurrent_mib,
                       lines=measured.target, log=log_name)
            if measured else None
        )  # fmt: skip
        self.update(self.manifest.with_arm_kv(arm, kv))

    def set_plan(self, plan: Sequence[BlockPlan]) -> None:
        planned = [_planned(b) for b in plan]
        self.update(self.manifest.with_plan(planned))

    def looks(self) -> list[Look]:
        return list(self.manifest.looks)

    def look_after(self, block: int) -> Look | None:
        return next((lk for lk in self.manifest.looks if lk.after_block == block), None)

    def last_look_stopped(self) -> bool:
        return bool(self.manifest.looks and self.manifest.looks[-1].stop)

    def add_look(self, decision: StopDecision) -> None:
        look = Look(after_block=decision.after_block, decided=decision.decided,
                    reason=decision.reason, stop=decision.stop,
                    confidence_level=decision.confidence_level)  # fmt: skip
        self.update(self.manifest.with_look(look))

    def add_resume(self, entry: Resume, *, forced: bool) -> None:
        m = self.manifest.with_resume(entry)
        self.manifest = m.with_forced() if forced else m


def _planned(b: BlockPlan) -> PlannedBlock:
    """A closed-loop block is written as before; an open-loop one adds its rate."""
    rate = {"rate_rps": b.rate_rps} if b.rate_rps is not None else {}
    return PlannedBlock(block=b.block, arm=b.arm, concurrency=b.concurrency, **rate)
