"""Promotion: an arm that passed its gates and a role's thresholds becomes that role's
configuration, with its evidence and the artefacts to run it.

Owns ``servelab promote``, ``servelab roles`` and ``servelab verify``, and the promotion record.
A promotion is written beside the registry, in ``promoted/ROLE.json`` (run id and directory, arm,
date, engine build, binary and model sha256, host, the figures with their intervals, the gate
and role outcomes), ``promoted/ROLE.cmd`` (the exact engine command line) and
``promoted/ROLE.service`` (a systemd unit running it). ``verify`` re-runs the promoted
configuration briefly with ``servelab bench`` and compares it with the promoted evidence using
the same statistics.

The rule, on the statistics the summary decides on (docs/promotion.md):

- ``promote`` does not pick a winner: the user names the arm. It is promotable when it passes
  every gate of its run (``summary.gates``) and every rule of the role, both judged by
  ``evaluate_gates``: a request-metric rule without STAT uses the metric's default decision
  statistic (pooled for rates, mean for latencies) and a relative rule the decision's own paired
  ratio interval. The comparisons' verdicts do not block a promotion by themselves (a role may
  trade speed for quality); they travel in the evidence, every statistic of every metric the
  arm was compared on.
- ``verify`` calls it a regression when any comparison of the re-run against the evidence says
  ``worse``: any decision metric and any of its decision statistics (pooled, mean, p90, ...),
  not only the first.
- ``verify`` first checks the role's readiness (``runner/readiness.py``, the same checks as
  ``servelab ready``) and refuses when a finding blocks, unless forced; it holds the machine
  lock while it runs, so no experiment measures beside it.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, field_serializer

from servelab.analysis.gate_outcomes import evaluate_gates
from servelab.analysis.settings import settings
from servelab.engines.registry import find_engine_class
from servelab.errors import EnvironmentProblem, GatesFailed, StoreError, UsageError
from servelab.report.build import build_report
from servelab.report.quality_view import fmt_gate
from servelab.runner.experiment import validation_message
from servelab.spec.roles import Registry
from servelab.store import (
    EffectiveValue,
    HardwareRecord,
    Host,
    WorkloadRef,
    as_json_object,
    read_manifest,
    utc_now,
)
from servelab.store.jsonl import write_json_atomic, write_text_atomic
from servelab.store.manifest_records import ConfigValue
from servelab.store.summary import GateResult, Summary, to_jsonable
from servelab.userfiles import read_yaml
from servelab.workloads.schema import DEFAULT_SYSTEM

if TYPE_CHECKING:
    from servelab.runner.lifecycle import Seam
    from servelab.runner.preflight import MachineLock
    from servelab.runner.readiness import Readiness

DEFAULT_PORT = 8080


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PromotedEngine(_Frozen):
    """The engine a promotion runs: build, binary and model with their sha256, and how to
    start it."""

    kind: str | None = None
    build: str | None = None
    build_info: str | None = None
    binary: str | None = None
    binary_sha256: str | None = None
    model_path: str | None = None
    model_sha256: str | None = None
    argv: tuple[str, ...] = ()
    env: dict[str, str] = Field(default_factory=dict)
    engine_config: dict[str, ConfigValue] | None = None


class Evidence(_Frozen):
    """What earned the role, as ``summary.json`` records it (JSON boundary: the summary's own
    records, written by ``servelab.store.summary``)."""

    metrics: dict[str, JsonValue] | None = None
    comparisons: tuple[dict[str, JsonValue], ...] = ()
    gates: dict[str, JsonValue] = Field(default_factory=dict)
    role_rules: dict[str, JsonValue] = Field(default_factory=dict)
    quality: dict[str, JsonValue] | None = None


class PromotionRecord(_Frozen):
    """``promoted/ROLE.json`` (format version 1)."""

    schema_version: int = 1
    role: str
    arm: str
    promoted_utc: str
    run_id: str | None
    run_dir: str
    workload: WorkloadRef | None
    engine: PromotedEngine
    effective: dict[str, EffectiveValue] | None
    host: Host | None
    hardware: HardwareRecord | None
    evidence: Evidence

    @field_serializer("host")
    def _host_as_recorded(self, host: Host | None) -> dict[str, JsonValue] | None:
        """The host exactly as the run's manifest holds it (no unset field written as null)."""
        return host.to_json() if host is not None else None


def registry_path(path: Path | None) -> Path:
    if path is not None:
        return path
    env = os.environ.get("SERVELAB_REGISTRY")
    return Path(env) if env else Path("roles.yaml")


def load_registry(path: Path) -> Registry:
    if not path.exists():
        raise UsageError(
            f"roles registry {path} does not exist; write one (docs/promotion.md) or pass "
            "--registry PATH"
        )
    raw = read_yaml(path, "roles registry")
    try:
        return Registry.model_validate(raw)
    except ValidationError as exc:
        raise validation_message(exc, str(path)) from exc


def promoted_dir(registry: Path) -> Path:
    return registry.parent / "promoted"


def systemd_unit(role: str, argv: list[str], env: Mapping[str, str], description: str) -> str:
    def quote(arg: str) -> str:
        if arg and all(c.isalnum() or c in "-_./:=,+@" for c in arg):
            return arg
        return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = [
        "[Unit]",
        f"Description=servelab role {role}: {description or 'promoted llama-server'}",
        "After=network.target",
        "",
        "[Service]",
        "Type=simple",
        *(f'Environment="{k}={v}"' for k, v in sorted(env.items())),
        "ExecStart=" + " ".join(quote(a) for a in argv),
        "Restart=on-failure",
        "RestartSec=5",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ]
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class Promotion:
    role: str
    record: Path
    command: Path | None
    unit: Path | None


def _results(results: Mapping[str, GateResult]) -> dict[str, JsonValue]:
    return as_json_object({rule: res.to_json() for rule, res in results.items()})


def _evidence(summary: Summary, arm: str, own: Mapping[str, GateResult],
              outcome: Mapping[str, GateResult]) -> Evidence:  # fmt: skip
    figures = summary.arms.get(arm)
    quality = (summary.quality.arms or {}).get(arm) if summary.quality else None
    return Evidence(
        metrics=as_json_object({k: to_jsonable(m) for k, m in figures.metrics.items()})
        if figures else None,
        comparisons=tuple(as_json_object(c.to_json()) for c in summary.comparisons
                          if arm in (c.candidate, c.baseline)),
        gates=_results(own),
        role_rules=_results(outcome),
        quality=as_json_object(quality.to_json()) if quality else None,
    )  # fmt: skip


def _check_role(summary: Summary, rows_outcome: Mapping[str, GateResult], arm: str,
                role: str) -> None:  # fmt: skip
    own = (summary.gates or {}).get(arm) or {}
    failed = [r for r, res in own.items() if not res.passed]
    if failed:
        raise GatesFailed(f"arm {arm!r} fails its run's gate {failed[0]!r}; it cannot be promoted")
    missed = [r for r, res in rows_outcome.items() if not res.passed]
    if missed:
        res = rows_outcome[missed[0]]
        lo, hi = res.interval
        raise GatesFailed(
            f"arm {arm!r} does not meet role {role!r}: {missed[0]} (value {fmt_gate(res.value)}, "
            f"interval [{fmt_gate(lo)}, {fmt_gate(hi)}], threshold {fmt_gate(res.threshold)}); "
            "a rule holds only when its whole interval clears the threshold: measure more "
            "blocks, or promote another arm"
        )


def promote(run_root: Path, arm: str, role: str, *, registry: Path, port: int = DEFAULT_PORT
            ) -> Promotion:  # fmt: skip
    reg = load_registry(registry)
    if role not in reg.roles:
        raise UsageError(f"no role {role!r} in {registry}; roles: {', '.join(reg.roles)}")
    report = build_report(run_root)
    manifest, rows, summary = read_manifest(run_root), report.rows, report.summary
    if arm not in manifest.arms:
        raise UsageError(f"{run_root} has no arm {arm!r}; arms: {', '.join(manifest.arms)}")
    outcome = evaluate_gates(reg.roles[role].rules, summary, rows, interleaved=manifest.interleaved,
                             seed=manifest.seed, cfg=settings(manifest, rows))[arm]  # fmt: skip
    _check_role(summary, outcome, arm, role)
    entry = manifest.arms[arm]
    describe = entry.starts[0].describe if entry.starts else {}
    build_info = describe.get("build_info")
    engine = find_engine_class(entry.effective_str("engine.kind") or "")
    argv = engine.launch_command(entry.argv or (), port) if engine else []
    env_value = (entry.engine_config or {}).get("env")
    env = dict(env_value) if isinstance(env_value, dict) else {}
    record = PromotionRecord(
        role=role, arm=arm, promoted_utc=utc_now(), run_id=manifest.run_id or None,
        run_dir=str(run_root.resolve()), workload=manifest.workload,
        engine=PromotedEngine(
            kind=entry.effective_str("engine.kind"), build=entry.effective_str("engine.build"),
            build_info=build_info if isinstance(build_info, str) else None,
            binary=entry.effective_str("engine.binary"),
            binary_sha256=entry.effective_str("engine.binary_sha256"),
            model_path=entry.effective_str("model.path"),
            model_sha256=entry.effective_str("model.sha256"),
            argv=tuple(argv), env=env, engine_config=entry.engine_config,
        ),
        effective=entry.effective if "effective" in entry.model_fields_set else None,
        host=manifest.host, hardware=manifest.hardware,
        evidence=_evidence(summary, arm, (summary.gates or {}).get(arm) or {}, outcome),
    )  # fmt: skip
    out = promoted_dir(registry)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{role}.json"
    write_json_atomic(path, record.model_dump(mode="json"))
    command = unit = None
    if argv and engine is not None:
        command = out / f"{role}.cmd"
        prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(env.items()))
        write_text_atomic(command, (prefix + " " if prefix else "") + shlex.join(argv) + "\n")
        unit = out / f"servelab-{role}.service"
        description = reg.roles[role].description or f"promoted {engine.process_name}"
        write_text_atomic(unit, systemd_unit(role, argv, env, description))
    return Promotion(role, path, command, unit)


@dataclass(frozen=True, slots=True)
class RoleHolder:
    """A role of the registry and the promotion that holds it (None: not promoted yet)."""

    role: str
    description: str
    rules: tuple[str, ...]
    holder: PromotionRecord | None


def list_roles(registry: Path) -> list[RoleHolder]:
    reg = load_registry(registry)
    out = []
    for name, role in reg.roles.items():
        path = promoted_dir(registry) / f"{name}.json"
        holder = _read_promotion(path) if path.exists() else None
        out.append(RoleHolder(name, role.description, tuple(role.rules), holder))
    return out


def _read_promotion(path: Path) -> PromotionRecord:
    try:
        return PromotionRecord.model_validate_json(path.read_bytes())
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror}") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise StoreError(
            f"cannot read {path}: {loc + ': ' if loc else ''}{first['msg']}; promote the role again"
        ) from exc


def load_promotion(registry: Path, role: str) -> PromotionRecord:
    path = promoted_dir(registry) / f"{role}.json"
    if not path.exists():
        raise UsageError(f"role {role!r} has no promoted configuration yet; run servelab promote")
    return _read_promotion(path)


@dataclass(frozen=True, slots=True)
class Verification:
    role: str
    bench_dir: Path
    compare_dir: Path
    summary: Summary
    regressions: list[str]
    notes: list[str]
    readiness: Readiness | None = None  # what the machine looked like before the re-run


def _number(value: EffectiveValue) -> float | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


VERIFY_BLOCKS = 3


def verify(registry: Path, role: str, *, requests: int = 12, blocks: int = VERIFY_BLOCKS,
           warmup: int = 2, out: Path | None = None, seam: Seam | None = None,
           force: bool = False, lock: MachineLock | None = None) -> Verification:  # fmt: skip
    """Run the promoted configuration briefly and compare it with the promoted evidence
    (``seam``: the bench's engine factory, clock and preflight; tests pass the replay one).
    The re-run is a bench of ``requests`` split over ``blocks`` fresh engine starts: the
    comparison resamples each run's blocks, so one block could never decide anything.

    Checks readiness first and raises ``EnvironmentProblem`` when a finding blocks, unless
    ``force`` (the findings are then recorded in the bench run's preflight); holds the machine
    ``lock`` (default: the cache's) until it returns."""
    from servelab.runner.preflight import MachineLock
    from servelab.runner.readiness import check_readiness

    if requests < 1 or blocks < 1:
        raise UsageError(f"verify: --requests ({requests}) and --blocks ({blocks}) must be 1 or "
                         "more; use 2 or more blocks for a verdict")  # fmt: skip
    record = load_promotion(registry, role)
    machine = lock or MachineLock()
    holder = out.absolute() if out else Path(f"servelab verify {role}")
    try:
        readiness = check_readiness(record, lock=machine, hold=True, holder=holder)
        if not readiness.ready and not force:
            raise EnvironmentProblem(_not_ready(role, readiness))
        return _verify(record, role, requests=requests, blocks=blocks, warmup=warmup, out=out,
                       seam=seam, readiness=readiness)  # fmt: skip
    finally:
        machine.release()


def _not_ready(role: str, readiness: Readiness) -> str:
    first, more = readiness.blocking[0], len(readiness.blocking) - 1
    also = f" (and {more} more blocking finding(s))" if more else ""
    return (
        f"role {role!r} is not ready to verify: {first.detail}{also}; {first.advice}; "
        f"`servelab ready {role}` lists every finding, or verify anyway with --force"
    )


def _verify(record: PromotionRecord, role: str, *, requests: int, blocks: int, warmup: int,
            out: Path | None, seam: Seam | None, readiness: Readiness) -> Verification:  # fmt: skip
    from dataclasses import replace

    from servelab.runner.bench import run_bench
    from servelab.runner.compare import compare_runs
    from servelab.runner.lifecycle import Seam
    from servelab.runner.readiness import WithReadiness
    from servelab.spec.bench import BenchConfig
    from servelab.spec.engine import EngineConfig

    source = Path(record.run_dir)
    if not (source / "requests.jsonl").exists():
        raise UsageError(
            f"the run that earned role {role!r} ({source}) is gone; verify compares against its "
            "requests, so promote again from a run that exists"
        )
    manifest = read_manifest(source)
    base_tokens = (
        manifest.spec_facts.base.max_tokens if manifest.spec and manifest.spec_facts else None
    )
    effective = record.effective or {}
    engine_cfg = {**(record.engine.engine_config or {}), "port": None}
    try:
        config = BenchConfig(
            engine=EngineConfig.model_validate(engine_cfg),
            workload=(record.workload.name if record.workload else None) or "chat-tools",
            system_prompt=_system_variant(effective.get("workload.system")),
            requests=-(-requests // blocks), blocks=blocks, warmup=warmup,
            max_tokens=int(_number(effective.get("max_tokens")) or base_tokens or 128),
            temperature=float(_number(effective.get("sampling.temperature")) or 0.0),
            ignore_eos=bool(effective.get("ignore_eos")), name=f"verify-{role}",
        )  # fmt: skip
    except ValidationError as exc:
        raise validation_message(exc, f"promoted configuration of {role!r}") from exc
    if readiness.blocking:  # forced past them: the bench run records them as its preflight
        base = seam or Seam()
        seam = replace(base, preflight=WithReadiness(base.preflight, readiness.blocking))
    bench = run_bench(config, out=out / "bench" if out else None, seam=seam)
    compare_dir = compare_runs(source, bench.run_dir.root, arm_a=record.arm, arm_b="bench",
                               out=out / "compare" if out else None)  # fmt: skip
    report = build_report(compare_dir.root)
    describes = read_manifest(bench.run_dir).arm("bench").describes
    describe = describes[0] if describes else {}
    notes = []
    for key in ("binary_sha256", "model_sha256", "build_info"):
        promoted = getattr(record.engine, key)
        if promoted and describe.get(key) != promoted:
            notes.append(f"{key} changed since the promotion: {promoted} -> {describe.get(key)}")
    return Verification(role, bench.run_dir.root, compare_dir.root, report.summary,
                        regressions_of(report.summary), notes, readiness)  # fmt: skip


def _system_variant(label: EffectiveValue) -> str | None:
    """The named system prompt a promoted arm ran with (its ``workload.system``,
    ``stub sha256:...``); None for the workload's own."""
    if not isinstance(label, str) or not label.strip():
        return None
    name = label.split()[0]
    return None if name == DEFAULT_SYSTEM else name


def regressions_of(summary: Summary) -> list[str]:
    """One line per comparison that says ``worse``: every decision statistic of every metric
    counts (a pooled rate may fall while the median holds)."""
    return [c.summary or f"{c.metric}.{c.statistic} worse" for c in summary.comparisons
            if c.verdict == "worse"]  # fmt: skip
