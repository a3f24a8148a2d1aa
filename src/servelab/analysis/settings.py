"""What the analysis reads from a manifest, with defaults for imports and older runs.

Owns the one conversion from a run's manifest to what ``servelab.analysis`` works from:
``settings(manifest, rows)`` gives the arms (baseline first), decision metrics, confidence,
smallest effect, stopping rule and seed (the defaults docs/statistics.md names), and
``run_facts(manifest)`` the recorded facts the warnings, theory, quality and gates need (engine
starts, bind addresses, preflight findings, looks, hardware, effective configurations, and the
gates of an experiment's spec or of an import's source). Nothing else in ``analysis/`` reads
the manifest. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from servelab.analysis.engine_facts import identity_engine, is_managed
from servelab.analysis.row_selection import Row
from servelab.spec.engine import LOOPBACK
from servelab.stats.paired import PromptMode
from servelab.stats.sequential import LookPlan, Spending, plan_looks
from servelab.store import (
    DEFAULT_CONFIDENCE,
    DEFAULT_DECISION_METRICS,
    DEFAULT_MIN_EFFECT,
    ArmEntry,
    EngineStart,
    Manifest,
)
from servelab.store.manifest import compared_pairs
from servelab.store.summary import Confound, HardwareRecord

DEFAULT_RESAMPLES = 2000

Scalar = str | int | float | bool | None


@dataclass(frozen=True, slots=True)
class Settings:
    """What the analysis needs from a manifest, with defaults for imports and older runs."""

    kind: str
    run_id: str
    arms: tuple[str, ...]  # baseline first
    decision_metrics: tuple[str, ...]
    interleaved: bool
    confidence: float
    min_effect: float
    min_blocks: int
    max_blocks: int | None
    target_ci_width: float | None
    seed: int
    length_matched: bool
    decision: tuple[tuple[str, str], ...] = ()  # (metric, statistic), in spec order
    prompts: PromptMode = "fixed"
    references: Mapping[str, str] = field(default_factory=dict)  # candidate -> its reference
    spending: Spending = "obrien_fleming"
    slos: tuple[str, ...] = ()  # per-request SLO texts (spec ``slo``, bench ``--slo``)

    @property
    def baseline(self) -> str:
        return self.arms[0]

    def reference_of(self, arm: str) -> str:
        """The arm a candidate is compared with: the source's own reference, else the
        baseline."""
        return self.references.get(arm, self.baseline)

    def candidates(self) -> tuple[str, ...]:
        """Arms compared with a reference (``store.manifest.compared_pairs``)."""
        return tuple(c for _, c in compared_pairs(self.arms, self.baseline, self.references))

    def plan(self) -> LookPlan:
        """The look plan; a fixed-size run (or an import) has one look at the full level."""
        alpha = round(1 - self.confidence, 12)
        if not self.interleaved or self.max_blocks is None or self.max_blocks <= self.min_blocks:
            return plan_looks(1, 1, alpha=alpha)
        return plan_looks(self.min_blocks, self.max_blocks, alpha=alpha, spending=self.spending)


@dataclass(frozen=True, slots=True)
class StartFacts:
    """One recorded engine start: where in the plan, and what the engine described."""

    block: int | None
    concurrency: int
    build_info: str | None = None
    binary_sha256: str | None = None
    model_sha256: str | None = None


@dataclass(frozen=True, slots=True)
class ArmFacts:
    """What the manifest recorded about one arm."""

    starts: tuple[StartFacts, ...] = ()
    bind: str | None = None  # the managed engine's listen address; None for remote engines
    effective: Mapping[str, Scalar] = field(default_factory=dict)
    kv_mib_reported: float | None = None  # from the arm's KV probe start, when it ran
    identity_engine: str | None = None  # an endpoint's engine, as identified at its start


@dataclass(frozen=True, slots=True)
class Finding:
    """A preflight finding the run went ahead with (``--force``)."""

    detail: str
    advice: str | None = None


@dataclass(frozen=True, slots=True)
class RunFacts:
    """The recorded facts of a run that the analysis beyond the statistics reads."""

    arms: Mapping[str, ArmFacts] = field(default_factory=dict)
    findings: tuple[Finding, ...] = ()
    confounds: tuple[Confound, ...] = ()
    config_diff: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    n_looks: int = 0
    last_look_reason: str | None = None
    status: str | None = None
    hardware: HardwareRecord | None = None
    gate_rules: tuple[str, ...] = ()
    gate_require: tuple[str, ...] = ()
    workload_name: str | None = None
    workload_hash: str | None = None
    max_tokens: int | None = None

    def arm(self, name: str) -> ArmFacts:
        return self.arms.get(name) or ArmFacts()


# ------------------------------------------------------------------------------ from a manifest

ManifestLike = Manifest | Mapping[str, Any]


def as_manifest(manifest: ManifestLike) -> Manifest:
    """The typed manifest; a dict (a test's synthetic manifest, an older caller) is read as
    ``manifest.json`` content would be, older schema versions upgraded."""
    return manifest if isinstance(manifest, Manifest) else Manifest.from_json(manifest)


def settings(manifest: ManifestLike, rows: Sequence[Row] = ()) -> Settings:
    m = as_manifest(manifest)
    seen = list(dict.fromkeys(str(r.get("arm")) for r in rows if r.get("arm") is not None))
    baseline = m.baseline or (seen[0] if seen else "")
    stop = m.stop
    return Settings(
        kind=m.kind,
        run_id=m.run_id,
        arms=tuple(dict.fromkeys([baseline, *m.arm_names, *seen])),
        decision_metrics=m.decision_metrics,
        interleaved=m.interleaved,
        confidence=m.confidence,
        min_effect=stop.min_effect,
        min_blocks=stop.min_blocks,
        max_blocks=stop.max_blocks,
        target_ci_width=stop.target_ci_width,
        seed=m.seed,
        length_matched=m.length_matched,
        decision=m.decision,
        prompts=m.prompts,
        references=dict(m.references),
        spending=stop.spending,
        slos=_slos(m.spec, m.config),
    )


def _slos(
    spec: Mapping[str, object] | None, config: Mapping[str, object] | None
) -> tuple[str, ...]:
    """The SLO texts a run was given: an experiment's ``spec.slo``, a bench's ``config.slos``."""
    given = (spec or {}).get("slo") or (config or {}).get("slos") or ()
    return tuple(str(t) for t in given) if isinstance(given, list | tuple) else ()


def _str(value: object) -> str | None:
    return None if value is None else str(value)


def _start(s: EngineStart) -> StartFacts:
    d = s.describe
    return StartFacts(
        block=s.block,
        concurrency=s.concurrency or 1,
        build_info=_str(d.get("build_info")),
        binary_sha256=_str(d.get("binary_sha256")),
        model_sha256=_str(d.get("model_sha256")),
    )


def _bind(entry: ArmEntry) -> str | None:
    """The listen address of a managed engine (``host`` is ``bind``'s name before the rename)."""
    cfg = entry.engine_config
    if cfg is None or not is_managed(cfg.get("kind")):
        return None
    return str(cfg.get("bind") or cfg.get("host") or LOOPBACK)


def _arm_facts(entry: ArmEntry) -> ArmFacts:
    kv = entry.kv_reported.kv_mib if entry.kv_reported is not None else None
    effective = {k: v for k, v in entry.effective.items() if not isinstance(v, dict)}
    return ArmFacts(
        starts=tuple(_start(s) for s in entry.starts),
        bind=_bind(entry),
        effective=effective,
        kv_mib_reported=float(kv) if kv is not None else None,
        identity_engine=identity_engine(entry.describes),
    )


def _hardware(m: Manifest) -> HardwareRecord | None:
    return m.hardware


def _strings(value: object) -> tuple[str, ...]:
    return tuple(str(v) for v in value) if isinstance(value, list | tuple) else ()


def _gates(m: Manifest) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The gate rules and the arms that must pass them besides the baseline: an experiment's
    ``spec.gates``, else an import's ``source.gates`` (``servelab import --gate``)."""
    gates = (m.spec or {}).get("gates")
    if isinstance(gates, Mapping):
        return _strings(gates.get("rules")), _strings(gates.get("require"))
    if m.source is not None:
        return m.source.gates, m.source.gates_require
    return (), ()


def run_facts(manifest: ManifestLike) -> RunFacts:
    m = as_manifest(manifest)
    rules, require = _gates(m)
    return RunFacts(
        arms={name: _arm_facts(entry) for name, entry in m.arms.items()},
        findings=tuple(Finding(f.detail or f.kind, f.advice or None) for f in m.preflight),
        confounds=tuple(Confound(c.field, dict(c.values)) for c in m.allowed_confounds),
        config_diff={k: dict(v) for k, v in m.config_diff.items()},
        n_looks=len(m.looks),
        last_look_reason=m.looks[-1].reason if m.looks else None,
        status=m.status,
        hardware=_hardware(m),
        gate_rules=rules,
        gate_require=require,
        workload_name=m.workload.name if m.workload else None,
        workload_hash=m.workload.content_hash if m.workload else None,
        max_tokens=m.max_tokens,
    )


__all__ = [
    "DEFAULT_CONFIDENCE",
    "DEFAULT_DECISION_METRICS",
    "DEFAULT_MIN_EFFECT",
    "DEFAULT_RESAMPLES",
    "ArmFacts",
    "Finding",
    "ManifestLike",
    "RunFacts",
    "Settings",
    "StartFacts",
    "as_manifest",
    "run_facts",
    "settings",
]
