"""``manifest.json``: what a run was, on what, and how it ended, as one typed, frozen record.

Owns ``Manifest`` and ``ArmEntry`` (their parts are in ``store.manifest_records``), the format
version (``MANIFEST_SCHEMA_VERSION``, written by ``Manifest.to_json`` only), the upgrade of
older versions (``Manifest.from_json``) and the defaults the analysis reads a run with.

Each fact is stored once. An experiment's decision settings (baseline, seed, metrics,
confidence, stopping rule) live in its ``spec``; runs without a spec (bench, compare, import)
store them at the top level. The properties (``baseline``, ``seed``, ``decision_metrics``,
``confidence``, ``interleaved``, ``stop``, ``arm_names``) answer for every kind and version,
with the defaults of docs/statistics.md. A manifest never changes: the runner derives the next
one with the ``with_*`` methods and writes it with ``store.run.write_manifest``. Pure: no I/O.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from servelab import __version__
from servelab.errors import StoreError, UsageError
from servelab.metrics import decision_statistics
from servelab.store.manifest_records import (
    AllowedConfound,
    CompareSource,
    ConfigValue,
    EffectiveValue,
    EngineStart,
    HardwareRecord,
    Host,
    ImportSource,
    KvReported,
    Look,
    PlannedBlock,
    PreflightFinding,
    Record,
    Resume,
    RunKind,
    RunStatus,
    Scalar,
    StopRule,
    StoredStop,
    WorkloadRef,
)
from servelab.theory.calibration import HardwareProfile

MANIFEST_SCHEMA_VERSION = 2
"""The ``manifest.json`` format this servelab writes; ``Manifest.from_json`` reads 1 and 2."""

DEFAULT_DECISION_METRICS = ("decode_tps", "ttft_s", "e2e_s")
DEFAULT_MIN_EFFECT = 0.03
DEFAULT_CONFIDENCE = 0.95

# Version 1 experiments stored these both at the top level and in ``spec``.
_V1_SPEC_COPIES = (
    "baseline", "interleaved", "schedule", "seed", "decision_metrics", "confidence", "stop",
    "name", "declared",
)  # fmt: skip
_STORED = (
    "stored_baseline", "stored_interleaved", "stored_seed", "stored_decision_metrics",
    "stored_confidence", "stored_stop",
)  # fmt: skip
_IDENTITY = ("schema_version", "servelab_version", "kind", "run_id", "created_utc")


def utc_now() -> str:
    """The wall-clock time as manifests write it (``2026-11-30T10:05:29Z``)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class ArmEntry(Record):
    """One arm of a run. Experiments fill ``overrides`` .. ``kv_reported``; a bench arm has
    ``engine_config`` and ``describe``; a compare arm ``effective``; an import arm what its
    source said about it (``constants``, ``params``, ``source_meta``, ``engine_counters``)."""

    overrides: dict[str, ConfigValue] | None = None
    declared: tuple[str, ...] = ()
    engine_config: dict[str, ConfigValue] | None = None  # the arm's EngineConfig, dumped
    argv: tuple[str, ...] | None = None  # the launch command (port masked)
    # what the confound guard compared: flat keys such as engine.kind, model.path
    effective: dict[str, EffectiveValue] = Field(default_factory=dict)
    starts: tuple[EngineStart, ...] = ()
    describe: dict[str, JsonValue] | None = None  # JSON boundary: bench's engine describe()
    kv_reported: KvReported | None = None  # None once probed: the engine reported nothing
    constants: dict[str, Scalar] | None = None  # import: source columns equal in every row
    params: dict[str, JsonValue] | None = None  # JSON boundary: llama-bench's test parameters
    source_meta: dict[str, JsonValue] | None = None  # JSON boundary: a source file's metadata
    engine_counters: dict[str, JsonValue] | None = None  # JSON boundary: vllm's spec counters

    @property
    def kv_probed(self) -> bool:
        """Whether the KV probe ran for this arm (it may have found no report)."""
        return "kv_reported" in self.model_fields_set

    @property
    def describes(self) -> list[dict[str, JsonValue]]:
        """What the engine said about itself at each start (bench: its one start)."""
        found = [s.describe for s in self.starts if s.describe]
        return found or ([self.describe] if self.describe else [])

    def effective_str(self, key: str) -> str | None:
        """One effective value as text, or None when absent or null."""
        value = self.effective.get(key)
        return None if value is None else str(value)


class _SpecStop(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")
    max_blocks: int | None = None
    target_ci_width: float | None = None
    min_effect: float | None = None
    spending: Literal["obrien_fleming", "pocock"] | None = None


class _SpecBase(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")
    length_matched: bool | None = None
    max_tokens: int | str | None = None
    workload: str | None = None


def compared_pairs(
    arms: Sequence[str], baseline: str, references: Mapping[str, str]
) -> list[tuple[str, str]]:
    """(reference, candidate) for every arm the analysis compares: each arm but the baseline
    with its reference (``references``), else with the baseline; an arm that is others'
    reference without one of its own is not compared."""
    refs = set(references.values())
    return [
        (references.get(arm, baseline), arm)
        for arm in arms
        if arm != baseline and (arm in references or arm not in refs)
    ]


class SpecFacts(BaseModel):
    """The decision settings read from a stored spec; lenient, since specs of older versions
    hold keys this servelab no longer knows."""

    model_config = ConfigDict(frozen=True, extra="ignore")
    name: str | None = None
    baseline: str | None = None
    declare: tuple[str, ...] = ()
    blocks: int | None = None
    seed: int | None = None
    confidence: float | None = None
    stop: _SpecStop = _SpecStop()
    metrics: tuple[str, ...] | dict[str, str | tuple[str, ...]] | None = None
    decision_metrics: tuple[str, ...] | None = None
    prompts: Literal["fixed", "sampled"] | None = None
    length_matched: bool | None = None
    base: _SpecBase = _SpecBase()
    max_tokens: int | str | None = None  # bench configs keep it at the top


class RayNodeRecord(Record):
    """One Ray worker node of a spread run: where it is, what it is, what it ran."""

    node_id: str
    ip: str
    hardware: str | None = None  # ``node.hardware``: a catalog name, or ``cpu: <model> xN``
    host: Host | None = None
    # JSON boundary: the node's roofline hardware (theory.hardware.Hardware's fields)
    roofline: dict[str, JsonValue] | None = None
    builds: dict[str, str | None] = Field(default_factory=dict)  # arm -> engine.build there
    lost: str | None = None  # why the driver lost it mid-run (None: it stayed)


class RayRecord(Record):
    """A run spread over a Ray cluster: the cluster as given and its worker nodes by label."""

    address: str
    nodes: dict[str, RayNodeRecord] = Field(default_factory=dict)


class LoadWorkerRecord(Record):
    """One client worker of a bench whose load came from Ray nodes (``bench --ray``): where it
    ran, its wall clock's offset to the driver's (worker minus driver, NTP-style: the round
    trip with the shortest time; the offset is known to within half of ``rtt_s``) before and
    after the measured requests, and how many measured requests it sent."""

    node_id: str
    ip: str
    offset_s: float
    rtt_s: float
    offset_after_s: float | None = None
    rtt_after_s: float | None = None
    requests: int = 0


class Manifest(Record):
    """A run directory's ``manifest.json`` (format version 2). See docs/run-directory.md."""

    schema_version: int = MANIFEST_SCHEMA_VERSION
    servelab_version: str = __version__
    kind: RunKind = "experiment"
    run_id: str = ""
    created_unix_s: float | None = None
    created_utc: str = Field(default_factory=utc_now)
    # the input: an experiment's spec, a bench's config (JSON boundary: the dumped pydantic
    # input of the servelab version that wrote the run, whose keys may since have changed)
    spec: dict[str, JsonValue] | None = None
    spec_source: dict[str, JsonValue] | None = None  # JSON boundary: the user's raw spec file
    spec_path: str | None = None
    config: dict[str, JsonValue] | None = None  # JSON boundary: bench's BenchConfig, dumped
    sources: tuple[CompareSource, ...] = ()
    source: ImportSource | None = None
    # decision settings of runs without a spec; an experiment's are in ``spec``
    stored_baseline: str | None = Field(default=None, alias="baseline")
    stored_interleaved: bool | None = Field(default=None, alias="interleaved")
    stored_seed: int | None = Field(default=None, alias="seed")
    stored_decision_metrics: tuple[str, ...] = Field(default=(), alias="decision_metrics")
    stored_confidence: float | None = Field(default=None, alias="confidence")
    stored_stop: StoredStop | None = Field(default=None, alias="stop")
    workload: WorkloadRef | None = None
    arms: dict[str, ArmEntry] = Field(default_factory=dict)
    config_diff: dict[str, dict[str, EffectiveValue]] = Field(default_factory=dict)
    allowed_confounds: tuple[AllowedConfound, ...] = ()
    # import: candidate -> the arm the source compares it with (arms that are their own
    # reference are left out; every other arm is compared with the baseline)
    references: dict[str, str] = Field(default_factory=dict)
    host: Host | None = None
    hosts: dict[str, Host | None] | None = None  # compare: each side's machine
    hardware: HardwareRecord | None = None
    # JSON boundary: the hardware profile (theory.calibration, its own schema_version) in use
    # at run start; absent when the machine was never calibrated
    profile: dict[str, JsonValue] | None = None
    preflight: tuple[PreflightFinding, ...] = ()
    forced: bool = False
    notes: tuple[str, ...] = ()
    status: RunStatus | None = None
    stages: tuple[str, ...] = ()
    plan: tuple[PlannedBlock, ...] = ()
    looks: tuple[Look, ...] = ()
    resumes: tuple[Resume, ...] = ()
    ray: RayRecord | None = None  # spread over a Ray cluster (docs/distributed.md)
    # bench --ray: the client workers by node label (docs/distributed.md)
    load_workers: dict[str, LoadWorkerRecord] | None = None

    @field_validator("schema_version")
    @classmethod
    def _version(cls, value: int) -> int:
        if value != MANIFEST_SCHEMA_VERSION:
            raise ValueError(f"schema_version {value}: Manifest holds version 2; use from_json")
        return value

    @model_validator(mode="after")
    def _once(self) -> Manifest:
        """An experiment's decision settings are in its spec only (each fact stored once)."""
        if self.spec is not None:
            copies = [name for name in _STORED if name in self.model_fields_set]
            if copies:
                key = Manifest.model_fields[copies[0]].alias or copies[0]
                raise ValueError(f"{key}: an experiment keeps it in spec, not at the top level")
        return self

    @model_validator(mode="after")
    def _references(self) -> Manifest:
        """Every candidate and reference named in ``references`` is an arm of the run."""
        for candidate, reference in self.references.items():
            for name in (candidate, reference):
                if name not in self.arms:
                    arms = ", ".join(self.arms) or "(none)"
                    raise ValueError(f"references: {name!r} is not an arm; arms: {arms}")
            if candidate == reference:
                raise ValueError(f"references: {candidate!r} is its own reference; leave it out")
        return self

    # -- reading and writing ----------------------------------------------------------------
    @classmethod
    def from_json(cls, data: Mapping[str, object], where: str = "manifest.json") -> Manifest:
        """A manifest of any known version, upgraded to this one. A newer version, or one
        that does not validate, is a one-line ``StoreError`` naming ``where``."""
        upgraded = upgrade(data, where)
        try:
            return cls.model_validate(upgraded)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            msg = str(first["msg"]).removeprefix("Value error, ")
            if first["type"] == "extra_forbidden":
                msg = "unknown key"
            raise StoreError(
                f"{where}: {loc + ': ' if loc else ''}{msg}; the run directory is damaged or was "
                "not written by servelab"
            ) from exc

    def to_json(self) -> dict[str, JsonValue]:
        """The manifest as written: identity first, then every field it was given."""
        data = super().to_json()
        head: dict[str, JsonValue] = {
            "schema_version": MANIFEST_SCHEMA_VERSION,
            "servelab_version": self.servelab_version,
            "kind": self.kind,
            "run_id": self.run_id,
            "created_utc": self.created_utc,
        }
        return {**head, **{k: v for k, v in data.items() if k not in _IDENTITY}}

    # -- facts, with the defaults the analysis uses ---------------------------------------
    @cached_property
    def spec_facts(self) -> SpecFacts | None:
        """The decision settings of the stored spec (or bench config); None without one.
        Cached (the analysis reads them per row); ``model_copy`` drops the cache."""
        source = self.spec if self.spec is not None else self.config
        return None if source is None else SpecFacts.model_validate(source)

    def model_copy(self, *, update: Mapping[str, object] | None = None, deep: bool = False) -> Self:
        copied = super().model_copy(update=update, deep=deep)
        copied.__dict__.pop("spec_facts", None)  # the cache of the manifest it was copied from
        return copied

    @property
    def name(self) -> str:
        facts = self.spec_facts
        return (facts.name if facts and facts.name else None) or self.run_id

    @property
    def baseline(self) -> str:
        """The baseline arm: the spec's, the stored one, else the first arm ("" if none)."""
        spec = self.spec_facts.baseline if self.spec is not None and self.spec_facts else None
        return spec or self.stored_baseline or next(iter(self.arms), "")

    @property
    def arm_names(self) -> tuple[str, ...]:
        """The arms of the manifest, baseline first."""
        names = [self.baseline, *self.arms] if self.baseline else list(self.arms)
        return tuple(dict.fromkeys(names))

    @property
    def decision(self) -> tuple[tuple[str, str], ...]:
        """(metric, statistic) pairs the verdicts are on: the spec's ``metrics`` (a list, each
        on its default statistics, or a mapping), else the stored metric names'."""
        facts = self.spec_facts if self.spec is not None else None
        spec = (facts.decision_metrics or facts.metrics) if facts else None
        chosen = self.stored_decision_metrics or spec or DEFAULT_DECISION_METRICS
        return decision_statistics(chosen)

    @property
    def decision_metrics(self) -> tuple[str, ...]:
        """The decision metrics' names, in order."""
        return tuple(dict.fromkeys(metric for metric, _ in self.decision))

    @property
    def prompts(self) -> Literal["fixed", "sampled"]:
        """Whether the verdicts hold the prompts fixed (default) or sample them."""
        facts = self.spec_facts if self.spec is not None else None
        return (facts.prompts if facts else None) or "fixed"

    @property
    def confidence(self) -> float:
        facts = self.spec_facts if self.spec is not None else None
        spec = facts.confidence if facts else None
        return float(self.stored_confidence or spec or DEFAULT_CONFIDENCE)

    @property
    def interleaved(self) -> bool:
        """Whether arms alternated in time; imports default to not, every other kind to so."""
        if self.stored_interleaved is not None:
            return self.stored_interleaved
        return self.kind != "import"

    @property
    def seed(self) -> int:
        facts = self.spec_facts if self.spec is not None else None
        return int(self.stored_seed or (facts.seed if facts else None) or 0)

    @property
    def declared(self) -> tuple[str, ...]:
        """Settings the spec declared as differing between arms."""
        return self.spec_facts.declare if self.spec is not None and self.spec_facts else ()

    @property
    def length_matched(self) -> bool:
        facts = self.spec_facts if self.spec is not None else None
        return bool(facts and (facts.length_matched or facts.base.length_matched))

    @property
    def max_tokens(self) -> int | None:
        """The requested reply length (experiment base or bench config), when a number."""
        facts = self.spec_facts
        value = (facts.base.max_tokens or facts.max_tokens) if facts else None
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def stop(self) -> StopRule:
        """The stopping rule; ``min_blocks`` is the spec's ``blocks`` (1 without a spec)."""
        facts = self.spec_facts if self.spec is not None else None
        if facts is not None:
            max_blocks = facts.stop.max_blocks or facts.blocks
            return StopRule(
                max_blocks=max_blocks or None,
                min_blocks=facts.blocks or 1,
                target_ci_width=facts.stop.target_ci_width,
                min_effect=facts.stop.min_effect or DEFAULT_MIN_EFFECT,
                spending=facts.stop.spending or "obrien_fleming",
            )
        stored = self.stored_stop or StoredStop()
        return StopRule(
            max_blocks=stored.max_blocks or None,
            min_blocks=1,
            target_ci_width=stored.target_ci_width,
            min_effect=stored.min_effect or DEFAULT_MIN_EFFECT,
        )

    def arm(self, name: str) -> ArmEntry:
        """The arm's entry; an empty one for an arm the manifest does not list."""
        return self.arms.get(name) or ArmEntry()

    # -- the next manifest ----------------------------------------------------------------
    def with_status(self, status: RunStatus) -> Manifest:
        return self.model_copy(update={"status": status})

    def with_stage(self, name: str) -> Manifest:
        return self.model_copy(update={"stages": (*self.stages, name)})

    def with_plan(self, plan: Sequence[PlannedBlock]) -> Manifest:
        return self.model_copy(update={"plan": tuple(plan)})

    def with_look(self, look: Look) -> Manifest:
        return self.model_copy(update={"looks": (*self.looks, look)})

    def with_resume(self, resume: Resume) -> Manifest:
        return self.model_copy(update={"resumes": (*self.resumes, resume)})

    def with_forced(self) -> Manifest:
        return self.model_copy(update={"forced": True})

    def with_hardware(self, hardware: HardwareRecord | None) -> Manifest:
        return self.model_copy(update={"hardware": hardware})

    def with_profile(self, profile: HardwareProfile | None) -> Manifest:
        """Record the hardware profile the run's theory uses (None: leave the key out)."""
        if profile is None:
            return self
        data = TypeAdapter(dict[str, JsonValue]).validate_python(profile.to_json())
        return self.model_copy(update={"profile": data})

    @property
    def hardware_profile(self) -> HardwareProfile | None:
        """The recorded hardware profile, or None (none recorded, or one this servelab cannot
        read: the theory then falls back to datasheet bandwidth)."""
        if self.profile is None:
            return None
        try:
            return HardwareProfile.from_json(self.profile, "manifest.json: profile")
        except UsageError:
            return None

    def with_arm(self, name: str, entry: ArmEntry) -> Manifest:
        """The manifest with arm ``name`` replaced (or added at the end)."""
        return self.model_copy(update={"arms": {**self.arms, name: entry}})

    def with_start(self, arm: str, start: EngineStart) -> Manifest:
        entry = self.arm(arm)
        return self.with_arm(arm, entry.model_copy(update={"starts": (*entry.starts, start)}))

    def with_arm_kv(self, arm: str, kv: KvReported | None) -> Manifest:
        """Record the KV probe's result (None: the engine reported no KV size)."""
        return self.with_arm(arm, self.arm(arm).model_copy(update={"kv_reported": kv}))

    def with_ray(self, ray: RayRecord) -> Manifest:
        return self.model_copy(update={"ray": ray})

    def with_node_lost(self, label: str, why: str) -> Manifest:
        if self.ray is None or label not in self.ray.nodes:
            return self
        node = self.ray.nodes[label].model_copy(update={"lost": why})
        nodes = {**self.ray.nodes, label: node}
        return self.with_ray(self.ray.model_copy(update={"nodes": nodes}))

    def with_arm_describe(self, arm: str, describe: Mapping[str, JsonValue]) -> Manifest:
        entry = self.arm(arm).model_copy(update={"describe": dict(describe)})
        return self.with_arm(arm, entry)


def upgrade(data: Mapping[str, object], where: str = "manifest.json") -> dict[str, object]:
    """A manifest's JSON in the current format (version 1 -> 2: the top-level copies of the
    spec's settings are dropped). A newer version is a one-line ``StoreError``."""
    version = data.get("schema_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise StoreError(f"{where}: schema_version {version!r} is not a format version")
    if version > MANIFEST_SCHEMA_VERSION:
        wrote = data.get("servelab_version")
        by = f"servelab {wrote}" if isinstance(wrote, str) and wrote else "a newer servelab"
        raise StoreError(
            f"{where}: manifest format {version} was written by {by}; this servelab "
            f"({__version__}) reads formats up to {MANIFEST_SCHEMA_VERSION}: upgrade servelab "
            f"to {wrote if isinstance(wrote, str) and wrote else 'a newer release'} or later"
        )
    out = dict(data)
    if version == 1:
        has_spec = out.get("kind", "experiment") == "experiment" and isinstance(
            out.get("spec"), dict
        )
        dropped = _V1_SPEC_COPIES if has_spec else ("schedule", "name", "declared")
        for key in dropped:
            out.pop(key, None)
        out["schema_version"] = MANIFEST_SCHEMA_VERSION
    return out
