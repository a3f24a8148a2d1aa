"""The experiment spec: a base configuration, arms or factors, and how to run and decide.

Owns the YAML input of ``servelab run`` (validated with pydantic; an unknown key is an error that
names its path), the expansion of ``factors`` into arms with stable ids, and each arm's
resolved engine configuration (the named settings themselves are in ``spec/settings.py``). Pure.

A named setting (``threads: 1``, ``spec_type: ngram-simple``, ``kv: q8_0``) *declares* what it
changes; raw ``flags`` and ``env`` in an arm do not, so whatever they change must be listed in
``declare`` (or allowed with ``--allow-confound``). That is what lets the confound guard tell a
difference the user meant from one copied in by accident.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from servelab.metrics import decision_statistics
from servelab.spec.engine import EngineConfig, EngineEnv, EngineFlags, EngineKind
from servelab.spec.gates import GatesSpec
from servelab.spec.limits import (
    DEFAULT_MAX_FAILURE_RATE,
    MaxFailureRate,
    MaxTokens,
    context_problem,
)
from servelab.spec.load import LoadSpec
from servelab.spec.settings import (
    ENGINE_CONFIG_FIELDS,
    SETTINGS,
    Scalar,
    level_text,
    vllm_flag,
)
from servelab.spec.slo import Slo, SloTexts, parse_slos

DEFAULT_DECISION_METRICS = ("decode_tps", "ttft_s", "e2e_s")
_ARM_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=,+-]*$")


class Override(BaseModel):
    """What one arm (or one level of a factor) changes relative to ``base``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    spec_type: str | None = None
    draft_n_max: int | None = Field(default=None, ge=0)
    draft_n_min: int | None = Field(default=None, ge=0)
    draft_model: str | None = None
    draft_p_min: float | None = Field(default=None, ge=0.0, le=1.0)
    draft_gpu_layers: int | Literal["auto", "all"] | None = None
    spec_synth_len: float | None = Field(
        default=None, ge=1.0, description="llama.cpp synthetic mean acceptance length (+1)"
    )
    spec_synth_rates: str | None = Field(
        default=None,
        description="llama.cpp synthetic per-position acceptance: K non-increasing values in "
        "0..1, a list or comma-separated text",
    )
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
    system_prompt: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9][a-z0-9_-]*$",
        description="one of the workload's named system prompts (its systems, or default)",
    )
    engine: EngineKind | None = Field(
        default=None, description="run this arm on another engine kind (cross-engine A/B)"
    )
    max_num_seqs: int | None = Field(default=None, ge=1)
    gpu_memory_utilization: float | None = Field(default=None, gt=0.0, le=1.0)
    enforce_eager: bool | None = None
    max_model_len: int | None = Field(default=None, ge=16)
    dtype: str | None = None
    tensor_parallel_size: int | None = Field(default=None, ge=1)
    speculative_config: str | None = Field(
        default=None, description="vLLM --speculative-config: a mapping or its JSON text"
    )
    quantization: str | None = None
    flags: EngineFlags = Field(
        default=(), description="raw engine flags appended after base flags (not a declaration)"
    )
    env: EngineEnv = Field(default_factory=dict, description="raw engine env (not declared)")

    @field_validator("speculative_config", mode="before")
    @classmethod
    def _json_text(cls, v: object) -> object:
        """A mapping becomes the compact JSON text vLLM's --speculative-config reads."""
        if isinstance(v, dict):
            return json.dumps(v, sort_keys=True, separators=(",", ":"))
        return v

    @model_validator(mode="after")
    def _rates_per_draft(self) -> Override:
        if self.spec_synth_rates is not None and self.draft_n_max is not None:
            n = self.spec_synth_rates.count(",") + 1
            if n != self.draft_n_max:
                raise ValueError(f"{n} rates for draft_n_max {self.draft_n_max}: llama.cpp "
                                 "wants one synthetic rate per draft position")  # fmt: skip
        return self

    @field_validator("spec_synth_rates", mode="before")
    @classmethod
    def _rates(cls, v: object) -> object:
        """A list or "0.8,0.64" text, checked as llama.cpp checks it, as comma-separated text."""
        if v is None:
            return v
        items = v if isinstance(v, list) else str(v).split(",")
        try:
            rates = [float(x) for x in items]
        except (TypeError, ValueError):
            raise ValueError(f"{v!r} is not a list of numbers such as 0.8,0.64,0.512") from None
        if not rates or any(not 0.0 <= r <= 1.0 for r in rates):
            raise ValueError("each synthetic acceptance rate must be within 0..1")
        if any(b > a for a, b in itertools.pairwise(rates)):
            raise ValueError("synthetic acceptance rates must not increase (P(accepted >= i))")
        return ",".join(f"{r:g}" for r in rates)

    @field_validator("flash_attn", mode="before")
    @classmethod
    def _on_off(cls, v: object) -> object:
        """YAML's true/false mean on/off here, as ``flash_attn: on`` does."""
        return level_text(v) if isinstance(v, bool) else v

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


MetricsChoice = tuple[str, ...] | dict[str, str | tuple[str, ...]]


class RaySpec(BaseModel):
    """Where blocks run when they are spread over a Ray cluster (docs/distributed.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    address: str = Field(
        description="local:N (N worker nodes started on this machine for the run) or the "
        "address of a running Ray cluster (HOST:PORT, auto)"
    )

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        from servelab.errors import UsageError
        from servelab.spec.ray import parse_target

        try:
            return parse_target(v).text
        except UsageError as exc:
            raise ValueError(str(exc).removeprefix("--ray ")) from None


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
    ray: RaySpec | None = Field(
        default=None, description="spread the blocks over a Ray cluster (or --ray ADDRESS)"
    )
    placement: dict[str, tuple[str, ...]] = Field(
        default_factory=dict,
        description="Ray: the nodes (labels or Ray resource names) each arm may run on; an "
        "arm not named may run on any node",
    )
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
        for arm_name, where in self.placement.items():
            if arm_name not in names:
                raise ValueError(f"placement: {arm_name!r} is not an arm; arms: {', '.join(names)}")
            if not where:
                raise ValueError(f"placement: {arm_name!r} lists no node; name one or drop it")
        if self.stop.max_blocks is not None and self.stop.max_blocks < self.blocks:
            raise ValueError(f"stop.max_blocks ({self.stop.max_blocks}) is below blocks")
        for arm in arms:
            if not _ARM_ID.match(arm.name):
                raise ValueError(f"arm name {arm.name!r}: use letters, digits and . _ = , + -")
            kind = arm.override.engine or self.base.engine.kind
            for name in arm.override.settings():
                if not SETTINGS[name].applies_to(kind):
                    owner = "a vLLM option" if SETTINGS[name].vllm else "a llama.cpp option"
                    raise ValueError(
                        f"arm {arm.name!r} sets {name}, {owner}, but its engine kind is "
                        f"{kind!r}; drop it, or give the arm `engine:` of the right kind"
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
    return tuple(sorted({f for s in o.settings() for f in SETTINGS[s].all_fields}))


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
        result.append((f"{factor}={level_text(level)}", o, SETTINGS[factor].all_fields))
    return result


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
    system_prompt: str | None = None  # the workload's system prompt variant (None: its own)


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
    kind = o.engine or base.engine.kind
    # Another engine kind does not inherit the base engine's own flags or binary.
    same_kind = kind == base.engine.kind
    flags = base.engine.flags if same_kind else ()
    engine_updates: dict[str, Scalar | None] = {} if same_kind else {"binary": None}
    for name, value in o.settings().items():
        setting = SETTINGS[name]
        if setting.field in ENGINE_CONFIG_FIELDS:
            engine_updates[setting.field] = value
        elif kind == "vllm" and setting.vllm:
            flags = (*_strip_flags(flags, (setting.vllm, f"--no-{setting.vllm[2:]}")),
                     *vllm_flag(setting.vllm, value))  # fmt: skip
        elif setting.flags:
            flags = _strip_flags(flags, setting.aliases)
            text = level_text(value) if isinstance(value, bool) else str(value)
            for flag in setting.flags:
                flags = (*flags, flag, text)
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
        system_prompt=o.system_prompt,
    )
