"""The named settings arms and factors may change, and what each one declares.

Owns ``SETTINGS``: for every setting, the engine options it writes (llama.cpp's flags, vLLM's
option) or the engine-config field it sets, and the effective-configuration fields it
declares to the confound guard; the names ``declare`` and ``--allow-confound`` accept
(``declared_fields``, wildcards with ``field_matches``); and how a vLLM option is written. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

Scalar = str | int | float | bool


@dataclass(frozen=True, slots=True)
class Setting:
    """One named setting: the engine flags it writes (llama.cpp's, vLLM's) or the field it
    sets. A setting with flags for one engine only is refused for an arm on the other."""

    flags: tuple[str, ...] = ()  # llama.cpp flags written, each followed by the value
    aliases: tuple[str, ...] = ()  # spellings of those flags removed from base flags first
    field: str | None = None  # an EngineConfig or base field set instead of flags
    fields: tuple[str, ...] = ()  # effective-configuration fields this setting declares
    vllm: str | None = None  # the vLLM option it writes (the value follows; on/off for bools)

    @property
    def vllm_field(self) -> str | None:
        return f"vllm.{self.vllm.lstrip('-').replace('-', '_')}" if self.vllm else None

    @property
    def all_fields(self) -> tuple[str, ...]:
        return (*self.fields, self.vllm_field) if self.vllm_field else self.fields

    def writes_flags(self, kind: str) -> bool:
        return bool(self.vllm if kind == "vllm" else self.flags)

    def applies_to(self, kind: str) -> bool:
        """Whether an arm of engine ``kind`` can take this setting."""
        if self.field is not None:
            return True
        return self.writes_flags(kind) if kind in ("llamacpp", "vllm") else False


def _flag(long: str, *short: str, vllm: str | None = None) -> Setting:
    name = long.lstrip("-")
    return Setting(flags=(long,), aliases=(long, *short), fields=(f"llama.{name}",), vllm=vllm)


def _vllm(option: str) -> Setting:
    return Setting(vllm=option)


# What a cross-engine comparison (the `engine` setting) declares: the engine's identity and its
# own option space. What else necessarily differs between engines (weights format and
# quantisation, chat template, sampler defaults) is *not* declared by it: the guard lists those
# fields so the user declares each one knowingly.
ENGINE_FIELDS = (
    "engine.kind", "engine.binary", "engine.binary_sha256", "engine.build",
    "engine.ignored_env", "model.path", "model.sha256", "llama.*", "vllm.*",
)  # fmt: skip


# What the `model` setting declares: which file is loaded. What else differs between two models
# (quantisation, chat template, a synthetic model's marker) is *not* declared by it: the guard
# lists those fields so the user declares each one knowingly (examples/moe-vs-dense.yaml).
_MODEL_FIELDS = ("model.path", "model.sha256", "llama.model", "model.draft_sha256")
SETTINGS: dict[str, Setting] = {
    "spec_type": _flag("--spec-type"),
    "draft_n_max": _flag("--spec-draft-n-max"),
    "draft_n_min": _flag("--spec-draft-n-min"),
    "draft_model": Setting(
        flags=("--spec-draft-model",),
        aliases=("--spec-draft-model", "-md", "--model-draft"),
        fields=("llama.spec-draft-model", "model.draft_sha256"),
    ),
    "draft_p_min": _flag("--spec-draft-p-min", "--draft-p-min"),
    "draft_gpu_layers": _flag(
        "--spec-draft-ngl", "-ngld", "--gpu-layers-draft", "--n-gpu-layers-draft"
    ),
    # llama.cpp's synthetic acceptance (benchmarking only; needs a real drafter underneath):
    # a mean acceptance length including the target token, or K comma-separated unconditional
    # per-position rates, non-increasing ("0.8,0.64,0.512" is a per-token acceptance of 0.8).
    "spec_synth_len": _flag("--spec-synth-len"),
    "spec_synth_rates": _flag("--spec-synth-rates"),
    "kv": Setting(
        flags=("--cache-type-k", "--cache-type-v"),
        aliases=("--cache-type-k", "-ctk", "--cache-type-v", "-ctv"),
        fields=("llama.cache-type-k", "llama.cache-type-v"),
        vllm="--kv-cache-dtype",
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
    "model": Setting(field="model", fields=_MODEL_FIELDS),
    "binary": Setting(
        field="binary", fields=("engine.binary", "engine.binary_sha256", "engine.build")
    ),
    "prefix_cache": Setting(
        field="prefix_cache", fields=("prefix_cache", "vllm.enable_prefix_caching")
    ),
    "engine": Setting(field="kind", fields=ENGINE_FIELDS),
    # vLLM's options (an arm on llama.cpp refuses them)
    "max_num_seqs": _vllm("--max-num-seqs"),
    "gpu_memory_utilization": _vllm("--gpu-memory-utilization"),
    "enforce_eager": _vllm("--enforce-eager"),
    "max_model_len": _vllm("--max-model-len"),
    "dtype": _vllm("--dtype"),
    "tensor_parallel_size": _vllm("--tensor-parallel-size"),
    "speculative_config": _vllm("--speculative-config"),
    "quantization": _vllm("--quantization"),
    "max_tokens": Setting(field="max_tokens", fields=("max_tokens",)),
    "temperature": Setting(field="temperature", fields=("sampling.temperature",)),
    # One of the workload's named system prompts (its `systems`, or `default`: its own
    # `system`); every engine takes it, as it rides on the requests, not on the engine.
    "system_prompt": Setting(field="system_prompt", fields=("workload.system",)),
}
ENGINE_CONFIG_FIELDS = {"model", "binary", "prefix_cache", "kind"}
# vLLM options that are switches: written as --X or --no-X.
VLLM_SWITCHES = ("--enforce-eager",)


def declared_fields(name: str) -> tuple[str, ...]:
    """The effective-configuration fields a name in ``declare`` or ``--allow-confound`` means:
    a setting name, a llama.cpp option (``cache-ram``, ``--cache-ram``) or a field itself."""
    if name in SETTINGS:
        return SETTINGS[name].all_fields
    if name.startswith("-"):
        bare = name.lstrip("-")
        return (f"llama.{bare}", f"vllm.{bare.replace('-', '_')}")
    if "." in name:
        return (name,)
    return (name, f"llama.{name}", f"llama.{name.replace('_', '-')}",
            f"vllm.{name.replace('-', '_')}")  # fmt: skip


def field_matches(field: str, names: Iterable[str]) -> bool:
    """Whether ``field`` is one of ``names``, or falls under one ending in ``.*``."""
    return any(field == n or (n.endswith(".*") and field.startswith(n[:-1])) for n in names)


def vllm_flag(option: str, value: Scalar) -> tuple[str, ...]:
    """``--enforce-eager`` / ``--no-enforce-eager`` for a switch, else option and value."""
    if option in VLLM_SWITCHES:
        return (option if value else f"--no-{option[2:]}",)
    return (option, level_text(value) if isinstance(value, bool) else str(value))


def level_text(level: Scalar) -> str:
    """A level as text: YAML's true/false as on/off."""
    if isinstance(level, bool):
        return "on" if level else "off"
    return str(level)
