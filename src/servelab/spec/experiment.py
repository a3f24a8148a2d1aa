"""The experiment spec: a base configuration, arms or factors, and how to run and decide.

Owns the YAML input of ``servelab run`` (validated with pydantic; an unknown key is an error that
names its path), the named settings arms and factors may change, the expansion of ``factors``
into arms with stable ids, and each arm's resolved engine configuration. Pure.

A named setting (``threads: 1``, ``spec_type: ngram-simple``, ``kv: q8_0``) *declares* what it
changes; raw ``flags`` and ``env`` in an arm do not, so whatever they change must be listed in
``declare`` (or allowed with ``--allow-confound``). That is what lets the confound guard tell a
difference the user meant from one copied in by accident.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from servelab.metrics import decision_statistics
from servelab.spec.engine import EngineConfig, EngineEnv, EngineFlags
from servelab.spec.gates import GatesSpec
from servelab.spec.limits import (
    DEFAULT_MAX_FAILURE_RATE,
    MaxFailureRate,
    MaxTokens,
    context_problem,
)
from servelab.spec.load import LoadSpec
from servelab.spec.slo import Slo, SloTexts, parse_slos

DEFAULT_DECISION_METRICS = ("decode_tps", "ttft_s", "e2e_s")
_ARM_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=,+-]*$")


@dataclass(frozen=True, slots=True)
class Setting:
    """One named setting: the engine flags it writes (llamacpp) or the field it sets."""

    flags: tuple[str, ...] = ()  # flags written, each followed by the value
    aliases: tuple[str, ...] = ()  # spellings of those flags removed from base flags first
    field: str | None = None  # an EngineConfig or base field set instead of flags
    fields: tuple[str, ...] = ()  # effective-configuration fields this setting declares


def _flag(long: str, *short: str) -> Setting:
    name = long.lstrip("-")
    return Setting(flags=(long,), aliases=(long, *short), fields=(f"llama.{name}",))


SETTINGS: dict[str, Setting] = {
    "spec_type": _flag("--spec-type"),
    "draft_n_max": _flag("--spec-draft-n-max"),
    "draft_n_min": _flag("--spec-draft-n-min"),
    "draft_model": _flag("--spec-draft-model", "-md", "--model-draft"),
    "kv": Setting(
        flags=("--cache-type-k", "--cache-type-v"),
        aliases=("--cache-type-k", "-ctk", "--cache-type-v", "-ctv"),
        fields=("llama.cache-type-k", "llama.cache-type-v"),
    ),
    "kv_k": _flag("--cache-type-k", "-ctk"),
    "kv_v": _flag("--cache-type-v", "-ctv"),
    "flash_attn": _flag("--flash-attn", "-fa"),
    "threads": _flag("--threads", "-t"),
    "threads_batch": _flag("--threads-batch", "-tb"),
    "batch": _flag("--batch-size", "-b"),
    "ubatch": _flag("--ubatch-size", "-ub"),
    "cache_ram": _flag("--cache-ram", "-cram"),
    "n_gpu_layers": _flag("--gpu-layers", "-ngl", "--n-gpu-layers"),
    "model": Setting(field="model", fields=("model.path", "model.sha256", "llama.model")),
    "binary": Setting(
        field="binary", fields=("engine.binary", "engine.binary_sha256", "engine.build")
    ),
    "prefix_cache": Setting(field="prefix_cache", fields=("prefix_cache",)),
    "max_tokens": Setting(field="max_tokens", fields=("max_tokens",)),
    "temperature": Setting(field="temperature", fields=("sampling.temperature",)),
}
_ENGINE_FIELDS = {"model", "binary", "prefix_cache"}


def declared_fields(name: str) -> tuple[str, ...]:
    """The effective-configuration fields a name in ``declare`` or ``--allow-confound`` means:
    a setting name, a llama.cpp option (``cache-ram``, ``--cache-ram``) or a field itself."""
    if name in SETTINGS:
        return SETTINGS[name].fields
    if name.startswith("-"):
        return (f"llama.{name.lstrip('-')}",)
    if "." in name:
        return (name,)
    return (name, f"llama.{name}", f"llama.{name.replace('_', '-')}")


class Override(BaseModel):
    """What one arm (or one level of a factor) changes relative to ``base``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    spec_type: str | None = None
    draft_n_max: int | None = Field(default=None, ge=0)
    draft_n_min: int | None = Field(default=None, ge=0)
    draft_model: str | None = None
    kv: str | None = None
    kv_k: str | None = None
    kv_v: str | None = None
    flash_attn: Literal["on", "off", "auto"] | None = None
    threads: int | None = Field(default=None, ge=1)
    threads_batch: int | None = Field(default=None, ge=1)
    batch: int | None = Field(default=None, ge=1)
    ubatch: int | None = Field(default=None, ge=1)
    cache_ram: int | None = Field(default=None, ge=-1)
    n_gpu_layers: int | None = None
    model: str | None = None
    binary: str | None = None
    prefix_cache: bool | None = None
    max_tokens: MaxTokens | None = None
    temperature: float | None = Field(default=None, ge=0.0)
    flags: EngineFlags = Field(
        default=(), description="raw engine flags appended after base flags (not a declaration)"
    )
    env: EngineEnv = Field(default_factory=dict, description="raw engine env (not declared)")

    @field_validator("flash_attn", mode="before")
    @classmethod
    def _on_off(cls, v: object) -> object:
        """YAML's true/false mean on/off here, as ``flash_attn: on`` does."""
        return _level_text(v) if isinstance(v, bool) else v

    def settings(self) -> dict[str, Scalar]:
        return {k: v for k in SETTINGS if (v := getattr(self, k)) is not None}

    def merged(self, other: Override) -> Override:
        return Override.model_validate({
            **self.settings(), **other.settings(), "flags": (*self.flags, *other.flags),
            "env": {**self.env, **other.env},
        })  # fmt: skip


class SamplingSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float = Field(default=0.0, ge=0.0)
    seed: int = 0


class BaseSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    engine: EngineConfig
    workload: str = "chat-tools"
    max_tokens: MaxTokens = 128
    sampling: SamplingSpec = SamplingSpec()
    length_matched: bool = Field(
        default=False,
        description="every request generates exactly max_tokens (EOS ignored): equal work per arm",
    )
    request_timeout_s: float = Field(default=300.0, gt=0)


class StopSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_blocks: int | None = Field(
        default=None, ge=1, description="sequential: keep adding rounds up to this many blocks"
    )
    target_ci_width: float | None = Field(
        default=None, gt=0, description="sequential: stop once every ratio CI is this narrow"
    )
    min_effect: float = Field(
        default=0.03, gt=0, lt=1, description="smallest relative effect worth detecting"
    )
    spending: Literal["obrien_fleming", "pocock"] = Field(
        default="obrien_fleming",
        description="sequential: how alpha is spent over the looks; obrien_fleming keeps "
        "nearly all for the last look, pocock spends more early (earlier verdicts on large "
        "effects, a wider last look)",
    )


Scalar = str | int | float | bool
MetricsChoice = tuple[str, ...] | dict[str, str | tuple[str, ...]]


class ExperimentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "experiment"
    description: str = ""
    base: BaseSpec
    arms: dict[str, Override] | None = None
    factors: dict[str, list[Scalar] | dict[str, Override]] | None = None
    baseline: str | None = None
    declare: tuple[str, ...] = Field(
        default=(), description="fields arms may differ in beyond their named settings"
    )
    blocks: int = Field(default=4, ge=2, description="blocks per arm (the minimum, sequential)")
    requests_per_block: int = Field(default=8, ge=1)
    warmup: int = Field(default=2, ge=0, description="warm-up requests after every engine start")
    concurrency: int | list[int] = 1
    load: LoadSpec | None = Field(
        default=None,
        description="closed loop {concurrency: C or [C...]}, open loop {rate: R or [R...], "
        "arrival, burstiness, max_concurrency} or a trace {trace: FILE, time_scale}",
    )
    slo: SloTexts = Field(
        default=(), description='per-request SLOs, e.g. ["ttft_s.p90<=0.3", "itl_s.p99<=0.05"]'
    )
    seed: int = 0
    schedule: Literal["interleaved", "randomized"] = "interleaved"
    restart: Literal["arm_change", "every_block"] = Field(
        default="every_block",
        description="every_block: a fresh engine (and warm-up) for every block, so each "
        "block's start-up luck is its own; arm_change: only when the arm changes",
    )
    confidence: float = Field(default=0.95, ge=0.8, le=0.999, description="interval level")
    stop: StopSpec = StopSpec()
    metrics: MetricsChoice = Field(
        default=DEFAULT_DECISION_METRICS,
        description="decision metrics: a list (each on its default statistic: rates pooled, "
        "latencies mean and p90) or {metric: statistic or [statistics]} with statistics "
        "pooled (rates), mean, median, p90, p99",
    )
    prompts: Literal["fixed", "sampled"] = Field(
        default="fixed",
        description="fixed: the verdict is about these prompts (rounds are resampled); "
        "sampled: they stand for a larger traffic (rounds, then prompts, are resampled)",
    )
    gates: GatesSpec = GatesSpec()
    ppl: bool = Field(
        default=False,
        description="after the blocks, measure perplexity and KL divergence per arm "
        "(servelab quality ppl)",
    )
    kv_probe: bool = Field(
        default=True,
        description="llamacpp: start each arm once at -lv 4 to record the KV size it reports",
    )
    max_failure_rate: MaxFailureRate = DEFAULT_MAX_FAILURE_RATE
    hardware: str = Field(
        default="auto",
        description="roofline hardware: a catalog name, auto (local GPU, else this CPU "
        "measured at run start) or none",
    )

    @field_validator("concurrency")
    @classmethod
    def _concurrency(cls, v: int | list[int]) -> int | list[int]:
        levels = [v] if isinstance(v, int) else v
        if not levels or any(c < 1 for c in levels) or len(set(levels)) != len(levels):
            raise ValueError("concurrency must be a positive integer or a list of distinct ones")
        return v

    @property
    def slos(self) -> tuple[Slo, ...]:
        return parse_slos(self.slo)

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, v: MetricsChoice) -> MetricsChoice:
        decision_statistics(v)
        return v

    @model_validator(mode="after")
    def _shape(self) -> ExperimentSpec:
        if self.load is not None and self.concurrency != 1:
            raise ValueError("give concurrency either at the top level or in load:, not both")
        if (self.arms is None) == (self.factors is None):
            raise ValueError("give either arms (named overrides) or factors (a product), not both")
        arms = self.expand()
        if len(arms) < 2:
            raise ValueError("an experiment needs at least two arms")
        names = [a.name for a in arms]
        if self.baseline is not None and self.baseline not in names:
            raise ValueError(f"baseline {self.baseline!r} is not an arm; arms: {', '.join(names)}")
        for required in self.gates.require:
            if required not in names:
                raise ValueError(
                    f"gates.require: {required!r} is not an arm; arms: {', '.join(names)}"
                )
        if self.stop.max_blocks is not None and self.stop.max_blocks < self.blocks:
            raise ValueError(f"stop.max_blocks ({self.stop.max_blocks}) is below blocks")
        for arm in arms:
            if not _ARM_ID.match(arm.name):
                raise ValueError(f"arm name {arm.name!r}: use letters, digits and . _ = , + -")
            if self.base.engine.kind != "llamacpp" and any(
                SETTINGS[s].flags for s in arm.override.settings()
            ):
                raise ValueError(
                    f"arm {arm.name!r} sets llama.cpp flags but the engine kind is "
                    f"{self.base.engine.kind!r}"
                )
            _check_context(self, arm)
        return self

    @property
    def concurrency_levels(self) -> tuple[int, ...]:
        """Closed-loop levels; an open-loop spec has one: its ``max_concurrency`` (1 if none)."""
        if self.load is not None:
            if self.load.concurrency is not None:
                return self.load.concurrency_levels
            return (self.load.max_concurrency or 1,)
        return (self.concurrency,) if isinstance(self.concurrency, int) else tuple(self.concurrency)

    @property
    def rate_levels(self) -> tuple[float, ...]:
        """Open-loop rates in requests/s (empty: closed loop)."""
        return self.load.rates if self.load is not None else ()

    @property
    def baseline_arm(self) -> str:
        return self.baseline or self.expand()[0].name

    @property
    def max_blocks(self) -> int:
        return self.stop.max_blocks or self.blocks

    def expand(self) -> list[Arm]:
        """The arms, in declaration order; factors become their product with ids
        ``factor=level,factor=level`` (stable: they depend only on names and levels)."""
        if self.arms is not None:
            return [Arm(name, o, _declared(o)) for name, o in self.arms.items()]
        assert self.factors is not None
        axes: list[list[tuple[str, Override, tuple[str, ...]]]] = []
        for factor, levels in self.factors.items():
            axes.append(_factor_levels(factor, levels))
        arms = []
        for combo in itertools.product(*axes):
            name = ",".join(label for label, _, _ in combo)
            override = Override()
            declared: set[str] = set()
            for _, o, fields in combo:
                override = override.merged(o)
                declared.update(fields)
            arms.append(Arm(name, override, tuple(sorted(declared))))
        return arms


def _check_context(spec: ExperimentSpec, arm: Arm) -> None:
    resolved = resolve_arm(spec, arm)
    problem = context_problem(resolved.max_tokens, resolved.engine.slot_context())
    if problem is None:
        return
    where = f"arm {arm.name!r}: max_tokens" if arm.override.max_tokens else "base.max_tokens"
    raise ValueError(f"{where}: {problem}; lower max_tokens, or raise base.engine.ctx_per_slot")


def _declared(o: Override) -> tuple[str, ...]:
    return tuple(sorted({f for s in o.settings() for f in SETTINGS[s].fields}))


def _factor_levels(
    factor: str, levels: list[Scalar] | dict[str, Override]
) -> list[tuple[str, Override, tuple[str, ...]]]:
    if not levels:
        raise ValueError(f"factors.{factor}: give at least one level")
    if isinstance(levels, dict):
        out = [(f"{factor}={k}", o, _declared(o)) for k, o in levels.items()]
        # A custom factor declares every field its levels' settings touch; raw flags still need
        # `declare`, as in arms.
        fields = tuple(sorted({f for _, _, fs in out for f in fs}))
        return [(label, o, fields) for label, o, _ in out]
    if factor not in SETTINGS:
        raise ValueError(
            f"factors.{factor}: not a named setting ({', '.join(SETTINGS)}); "
            "give its levels as a mapping of level name to overrides instead"
        )
    result = []
    for level in levels:
        o = Override.model_validate({factor: level})
        result.append((f"{factor}={_level_text(level)}", o, SETTINGS[factor].fields))
    return result


def _level_text(level: Scalar) -> str:
    if isinstance(level, bool):
        return "on" if level else "off"
    return str(level)


@dataclass(frozen=True, slots=True)
class Arm:
    name: str
    override: Override
    declared: tuple[str, ...]  # effective-configuration fields its named settings change


@dataclass(frozen=True, slots=True)
class ArmConfig:
    """One arm, resolved: the engine to launch and the request parameters."""

    name: str
    engine: EngineConfig
    max_tokens: int
    temperature: float
    seed: int
    ignore_eos: bool
    declared: tuple[str, ...]


def _strip_flags(flags: tuple[str, ...], aliases: tuple[str, ...]) -> tuple[str, ...]:
    """Drop every occurrence of these flags (and the value after each) from a flag list."""
    out: list[str] = []
    skip = False
    for token in flags:
        if skip:
            skip = False
            continue
        name, eq, _ = token.partition("=")
        if name in aliases:
            skip = not eq
            continue
        out.append(token)
    return tuple(out)


def resolve_arm(spec: ExperimentSpec, arm: Arm) -> ArmConfig:
    """Base + the arm's override -> what to launch. Named settings replace any spelling of
    their flags in the base flags; raw flags are appended last."""
    base = spec.base
    o = arm.override
    flags = base.engine.flags
    engine_updates: dict[str, Scalar] = {}
    for name, value in o.settings().items():
        setting = SETTINGS[name]
        if setting.flags:
            flags = _strip_flags(flags, setting.aliases)
            text = _level_text(value) if isinstance(value, bool) else str(value)
            for flag in setting.flags:
                flags = (*flags, flag, text)
        elif setting.field in _ENGINE_FIELDS:
            engine_updates[setting.field] = value
    parallel = max(base.engine.parallel, *spec.concurrency_levels)
    engine = base.engine.model_copy(
        update={
            **engine_updates,
            "flags": (*flags, *o.flags),
            "env": {**base.engine.env, **o.env},
            "parallel": parallel,
        }
    )
    return ArmConfig(
        name=arm.name,
        engine=EngineConfig.model_validate(engine.model_dump()),
        max_tokens=o.max_tokens or base.max_tokens,
        temperature=o.temperature if o.temperature is not None else base.sampling.temperature,
        seed=base.sampling.seed,
        ignore_eos=base.length_matched,
        declared=arm.declared,
    )
