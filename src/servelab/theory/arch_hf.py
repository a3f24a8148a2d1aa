"""Architecture from a Hugging Face ``config.json``.

Owns the mapping of transformers' config fields: ``num_hidden_layers``, ``hidden_size``,
``num_attention_heads``, ``num_key_value_heads``, ``head_dim``; which layers use the sliding
window (``layer_types``, else the model family's pattern: Gemma 2 and gpt-oss alternate,
Gemma 3 keeps every ``sliding_window_pattern``-th layer full, Mistral windows every layer);
``num_kv_shared_layers`` (Gemma 3n: the last layers reuse the KV of the last earlier layer of
the same type); linear-attention layers (``layer_types`` or ``full_attention_interval`` with
``linear_*`` sizes, as Qwen3-Next and Qwen3.5) and Mamba states; MoE fields under their
several names (``num_local_experts``/``num_experts``/``n_routed_experts``,
``num_experts_per_tok``, ``moe_intermediate_size``, shared experts). Multimodal configs are
read through their ``text_config``. Weights are estimated from shapes. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from servelab.errors import UsageError
from servelab.theory.arch import (
    Architecture,
    LayerKind,
    LayerSpec,
    MoeSpec,
    RecurrentSpec,
    check_architecture,
)
from servelab.theory.weights import estimate_weights

SLIDING_TYPES = ("sliding_attention", "chunked_attention", "local_attention", "sliding")
RECURRENT_TYPES = ("linear_attention", "mamba", "recurrent", "conv", "linear")
ALL_SLIDING_FAMILIES = ("mistral", "mixtral", "starcoder2", "phi3")
MAMBA_FAMILIES = ("mamba", "mamba2", "falcon_mamba")
_DTYPE_BITS = {"float32": 32.0, "float16": 16.0, "bfloat16": 16.0, "float8_e4m3fn": 8.0}


def _first(c: Mapping[str, Any], *keys: str, default: Any = None) -> Any:
    for key in keys:
        if c.get(key) is not None:
            return c[key]
    return default


def _int(c: Mapping[str, Any], *keys: str, default: int = 0) -> int:
    value = _first(c, *keys, default=default)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise UsageError(f"config field {keys[0]} must be an integer, got {value!r}") from None


def _types(c: Mapping[str, Any], n_layer: int, family: str) -> list[str]:
    """'full', 'sliding' or 'recurrent' for each layer."""
    given = c.get("layer_types")
    if isinstance(given, list) and len(given) >= n_layer:
        return [_kind(str(t)) for t in given[:n_layer]]
    if c.get("full_attention_interval"):
        step = int(c["full_attention_interval"])
        return ["full" if (i + 1) % step == 0 else "recurrent" for i in range(n_layer)]
    if family in MAMBA_FAMILIES:
        return ["recurrent"] * n_layer
    window = c.get("sliding_window")
    if not window or c.get("use_sliding_window") is False:
        return ["full"] * n_layer
    return [_family_pattern(c, family, i) for i in range(n_layer)]


def _kind(name: str) -> str:
    if name in SLIDING_TYPES:
        return "sliding"
    return "recurrent" if name in RECURRENT_TYPES else "full"


def _family_pattern(c: Mapping[str, Any], family: str, i: int) -> str:
    if family in ("gemma2", "gpt_oss"):
        return "sliding" if i % 2 == 0 else "full"
    if family.startswith(("gemma3", "cohere2")):
        step = _int(c, "sliding_window_pattern", default=6 if "gemma" in family else 4)
        return "full" if (i + 1) % step == 0 else "sliding"
    if family in ALL_SLIDING_FAMILIES:
        return "sliding"
    if c.get("use_sliding_window"):
        return "sliding" if i >= _int(c, "max_window_layers") else "full"
    return "full"


def _layers(c: Mapping[str, Any], n_layer: int, n_embd: int, family: str) -> list[LayerSpec]:
    n_head = _int(c, "num_attention_heads", "n_head")
    n_kv = _int(c, "num_key_value_heads", "n_head_kv", default=n_head)
    head_dim = _int(c, "head_dim", default=n_embd // n_head if n_head else 0)
    full_dim = _int(c, "global_head_dim", default=head_dim)
    full_kv = _int(c, "num_global_key_value_heads", default=n_kv)
    types = _types(c, n_layer, family)
    shared = _int(c, "num_kv_shared_layers")
    first_shared = n_layer - shared if shared else n_layer
    layers = []
    for i, kind in enumerate(types):
        full = kind == "full"
        source = None
        if i >= first_shared and kind != "recurrent":
            same = [j for j in range(first_shared) if types[j] == kind]
            source = same[-1] if same else None
        dim, kv = (full_dim, full_kv) if full else (head_dim, n_kv)
        layer_kind: LayerKind = "recurrent" if kind == "recurrent" else "attention"
        layers.append(LayerSpec(i, layer_kind, n_head, kv, dim, dim, kind == "sliding", source))
    return layers


def _recurrent(c: Mapping[str, Any], n_embd: int) -> tuple[RecurrentSpec, int]:
    """State sizes and mixer projection parameters of one recurrent layer."""
    if c.get("linear_num_value_heads"):  # Gated DeltaNet (Qwen3-Next, Qwen3.5)
        nk, dk = _int(c, "linear_num_key_heads"), _int(c, "linear_key_head_dim")
        nv, dv = _int(c, "linear_num_value_heads"), _int(c, "linear_value_head_dim")
        conv = (_int(c, "linear_conv_kernel_dim", default=4) - 1) * (2 * nk * dk + nv * dv)
        mixer = n_embd * (2 * nk * dk + 2 * nv * dv + 2 * nv) + nv * dv * n_embd
        return RecurrentSpec(conv, nv * dk * dv), mixer
    d_inner = _int(c, "intermediate_size", "mamba_d_inner", default=2 * n_embd)
    d_state = _int(c, "state_size", "mamba_d_state", "ssm_state_size", default=16)
    d_conv = _int(c, "conv_kernel", "mamba_d_conv", default=4)
    groups = _int(c, "n_groups", "mamba_n_groups")
    conv = (d_conv - 1) * (d_inner + 2 * groups * d_state)
    mixer = n_embd * (2 * d_inner + 2 * groups * d_state) + d_inner * n_embd
    return RecurrentSpec(conv, d_state * d_inner), mixer


def _moe(c: Mapping[str, Any], n_layer: int) -> MoeSpec | None:
    n_expert = _int(c, "num_local_experts", "num_experts", "n_routed_experts")
    if n_expert <= 1:
        return None
    used = _int(c, "num_experts_per_tok", "experts_per_token", "moe_topk", "top_k")
    expert_ffn = _int(c, "moe_intermediate_size", "intermediate_size")
    shared_ffn = _int(c, "shared_expert_intermediate_size")
    n_shared = _int(c, "n_shared_experts", "num_shared_experts", default=1 if shared_ffn else 0)
    return MoeSpec(
        n_expert, used, n_shared, expert_ffn, shared_ffn or expert_ffn * n_shared,
        _moe_layers(c, n_layer),
    )  # fmt: skip


def _moe_layers(c: Mapping[str, Any], n_layer: int) -> int:
    dense = set(c.get("mlp_only_layers") or [])
    step = _int(c, "decoder_sparse_step", default=1) or 1
    lead = _int(c, "first_k_dense_replace")
    return sum(1 for i in range(lead, n_layer) if (i + 1) % step == 0 and i not in dense)


def _bits(c: Mapping[str, Any], weight_bits: float | None) -> float:
    if weight_bits is not None:
        return weight_bits
    return _DTYPE_BITS.get(str(_first(c, "torch_dtype", "dtype", default="")), 16.0)


def architecture_from_hf_config(
    config: Mapping[str, Any], *, name: str, weight_bits: float | None = None
) -> Architecture:
    """The architecture a ``config.json`` describes; weights estimated at ``weight_bits``
    (default: the config's dtype)."""
    c: dict[str, object] = {**config, **(config.get("text_config") or {})}
    family = str(c.get("model_type") or "")
    n_layer = _int(c, "num_hidden_layers", "n_layer", "num_layers")
    n_embd = _int(c, "hidden_size", "d_model", "n_embd")
    if n_layer <= 0 or n_embd <= 0:
        raise UsageError(f"{name}: config.json lacks num_hidden_layers or hidden_size")
    layers = _layers(c, n_layer, n_embd, family)
    has_recurrent = any(x.kind == "recurrent" for x in layers)
    recurrent, mixer = _recurrent(c, n_embd) if has_recurrent else (None, 0)
    sliding = any(x.sliding for x in layers)
    arch = Architecture(
        name=name, source="hf-config", arch=family or None, n_embd=n_embd,
        n_vocab=_int(c, "vocab_size") or None,
        n_ctx_train=_int(c, "max_position_embeddings") or None, layers=tuple(layers),
        sliding_window=_int(c, "sliding_window", "attention_chunk_size") if sliding else None,
        recurrent=recurrent, moe=_moe(c, n_layer),
    )  # fmt: skip
    weights = estimate_weights(
        arch, bits=_bits(c, weight_bits), dense_ffn=_int(c, "intermediate_size"),
        recurrent_mixer_params=mixer, tied_embeddings=bool(c.get("tie_word_embeddings")),
    )  # fmt: skip
    return check_architecture(replace(arch, weights=weights))
