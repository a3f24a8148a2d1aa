"""Architecture from GGUF metadata and tensor table, read the way llama.cpp reads them.

Owns the mapping from ``{arch}.*`` keys to an ``Architecture``: per-layer head counts (scalar
or array), K/V head sizes (``key_length``, ``value_length``, their ``_swa`` variants), the
sliding window and its layer pattern (an array in the file, else llama.cpp's per-architecture
default such as every 6th layer full for Gemma 3), shared-KV layers (Gemma 3n / Gemma 4),
recurrent layers and their state sizes (Qwen3-Next / Qwen3.5 linear attention, Mamba, RWKV,
hybrids that mark recurrent layers with zero KV heads), MoE counts, and from the tensor table
the bytes of non-expert weights, of one routed expert and of the output head. Pure: callers
pass the metadata as a dict of plain values (large arrays may be left out) and the tensors.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from servelab.errors import UsageError
from servelab.theory.arch import (
    Architecture,
    LayerKind,
    LayerSpec,
    MoeSpec,
    RecurrentSpec,
    TensorEntry,
    Weights,
    check_architecture,
)

# llama.cpp's load_swa_pattern(n, dense_first) defaults when the file has no pattern key,
# and the window it assumes when the file has none (0: the key is required).
SWA_DEFAULTS: dict[str, tuple[int, bool, int]] = {
    "gemma2": (2, False, 4096),
    "gemma3": (6, False, 0),
    "gemma3n": (5, False, 0),
    "gemma-embedding": (6, False, 0),
    "gpt-oss": (2, False, 0),
    "cohere2": (4, False, 0),
    "cohere2moe": (4, True, 0),
    "afmoe": (4, False, 0),
    "exaone4": (4, False, 0),
    "exaone-moe": (4, False, 0),
    "llama4": (4, False, 0),
    "olmo2": (4, False, 0),
    "plamo3": (8, False, 0),
    "smallthinker": (4, True, 0),
    "mellum": (4, False, 0),
    "muse-glimmer": (4, False, 0),
    "phi3": (1, False, 0),
}
# Gemma 3n: llama.cpp fixes n_layer_kv_from_start = 20 rather than reading the key.
SHARED_KV_FROM_START = {"gemma3n": 20}
SHARED_KV_KEYED = ("gemma4", "gemma4-assistant")
INTERVAL_HYBRIDS = ("qwen3next", "qwen35", "qwen35moe", "qwen4exp")
ALL_RECURRENT = ("mamba", "mamba2", "rwkv6", "rwkv6qwen2", "rwkv7", "arwkv7")
_BLOCK = re.compile(r"^blk\.(\d+)\.")


class _Meta:
    """Typed access to ``{arch}.key`` values, scalar or per-layer array."""

    def __init__(self, meta: Mapping[str, Any], arch: str, n_layer_all: int) -> None:
        self.meta, self.arch, self.n_layer_all = meta, arch, n_layer_all

    def raw(self, key: str) -> Any:
        return self.meta.get(f"{self.arch}.{key}")

    def num(self, key: str, default: int = 0) -> int:
        value = self.raw(key)
        if isinstance(value, list):
            return int(value[0]) if value else default
        return default if value is None else int(value)

    def per_layer(self, key: str, default: int) -> list[int]:
        value = self.raw(key)
        if value is None:
            return [default] * self.n_layer_all
        if isinstance(value, list):
            if len(value) < self.n_layer_all:
                raise UsageError(
                    f"GGUF key {self.arch}.{key} has {len(value)} entries for "
                    f"{self.n_layer_all} layers; the file is inconsistent, re-convert it"
                )
            return [int(v) for v in value]
        return [int(value)] * self.n_layer_all

    def flags(self, key: str) -> list[bool] | None:
        value = self.raw(key)
        if isinstance(value, list) and len(value) >= self.n_layer_all:
            return [bool(v) for v in value]
        return None


def _pattern(n_pattern: int, dense_first: bool, n_layer: int) -> list[bool]:
    """llama_hparams::set_swa_pattern: which of ``n_layer`` layers use the window."""
    if n_pattern == 0:
        return [True] * n_layer
    if dense_first:
        return [il % n_pattern != 0 for il in range(n_layer)]
    return [il % n_pattern < n_pattern - 1 for il in range(n_layer)]


def _sliding(m: _Meta, n_layer: int) -> tuple[list[bool], int | None]:
    default = SWA_DEFAULTS.get(m.arch)
    window = m.num("attention.sliding_window", default[2] if default else 0)
    flags = m.flags("attention.sliding_window_pattern")
    if flags is not None and window > 0:
        return flags[:n_layer], window
    if default is None or window <= 0:
        return [False] * n_layer, None
    n_pattern = m.num("attention.sliding_window_pattern", default[0])
    return _pattern(n_pattern, default[1], n_layer), window


def _recurrent_flags(m: _Meta, n_layer: int, kv_heads: list[int]) -> list[bool]:
    if m.arch in ALL_RECURRENT:
        return [True] * n_layer
    flags = m.flags("attention.recurrent_layers")
    if flags is not None:
        return flags[:n_layer]
    if m.arch in INTERVAL_HYBRIDS:
        interval = m.num("full_attention_interval", 4)
        return [(il + 1) % interval != 0 for il in range(n_layer)]
    has_state = m.raw("ssm.state_size") is not None or m.raw("shortconv.l_cache") is not None
    return [has_state and kv_heads[il] == 0 for il in range(n_layer)]


def _recurrent_spec(m: _Meta, n_embd: int) -> RecurrentSpec:
    """llama_hparams::n_embd_r() and n_embd_s() for Mamba-style, RWKV and short-conv layers."""
    wkv = m.num("wkv.head_size")
    if wkv:
        return RecurrentSpec(m.num("token_shift_count", 2) * n_embd, n_embd * wkv)
    l_cache = m.num("shortconv.l_cache")
    d_state, d_inner = m.num("ssm.state_size"), m.num("ssm.inner_size")
    if l_cache:
        return RecurrentSpec(n_embd * (l_cache - 1), d_state * d_inner)
    d_conv, n_group = m.num("ssm.conv_kernel"), m.num("ssm.group_count")
    conv = (d_conv - 1) * (d_inner + 2 * n_group * d_state) if d_conv > 0 else 0
    return RecurrentSpec(conv, d_state * d_inner)


def _shared_from(m: _Meta, n_layer_all: int) -> int | None:
    if m.arch in SHARED_KV_FROM_START:
        return SHARED_KV_FROM_START[m.arch]
    shared = m.num("attention.shared_kv_layers")
    return n_layer_all - shared if m.arch in SHARED_KV_KEYED and shared else None


def _layers(m: _Meta, n_layer: int, n_embd: int) -> tuple[list[LayerSpec], int | None]:
    heads = m.per_layer("attention.head_count", 0)
    kv_given = m.raw("attention.head_count_kv") is not None
    kv_heads = m.per_layer("attention.head_count_kv", 0) if kv_given else heads
    hd_k = m.num("attention.key_length", n_embd // heads[0] if heads[0] else 0)
    hd_v = m.num("attention.value_length", n_embd // heads[0] if heads[0] else 0)
    mla = m.num("attention.kv_lora_rank")
    if mla:  # MLA caches the compressed latent plus the rope part as K and no V
        hd_k, hd_v = mla + m.num("rope.dimension_count"), 0
    hd_k_swa, hd_v_swa = (
        m.num("attention.key_length_swa", hd_k),
        m.num("attention.value_length_swa", hd_v),
    )
    sliding, window = _sliding(m, n_layer)
    recurrent = _recurrent_flags(m, n_layer, kv_heads)
    from_start = _shared_from(m, m.n_layer_all)
    layers = []
    for il in range(n_layer):
        swa = sliding[il] and not recurrent[il]
        kind: LayerKind = (
            "recurrent" if recurrent[il] else ("attention" if kv_heads[il] > 0 else "none")
        )
        source = None
        if kind == "attention" and from_start is not None and il >= from_start:
            source = from_start - (2 if swa else 1)
        layers.append(
            LayerSpec(
                il,
                kind,
                heads[il],
                1 if mla and kind == "attention" else kv_heads[il],
                hd_k_swa if swa else hd_k,
                hd_v_swa if swa else hd_v,
                swa,
                source,
            )
        )
    return layers, window if any(x.sliding for x in layers) else None


def _moe(m: _Meta, n_layer: int, tensors: Sequence[TensorEntry]) -> MoeSpec | None:
    n_expert = m.num("expert_count")
    if n_expert <= 1:
        return None
    used = max(m.per_layer("expert_used_count", 0)[:n_layer] or [0])
    expert_ffn = max(m.per_layer("expert_feed_forward_length", 0)[:n_layer] or [0])
    shared_ffn = m.num("expert_shared_feed_forward_length")
    n_shared = m.num("expert_shared_count", 1 if shared_ffn else 0)
    if not n_shared and any("_shexp." in t.name for t in tensors):
        n_shared = 1
    moe_layers = len(_expert_layers(tensors, n_layer)) or n_layer - m.num(
        "leading_dense_block_count"
    )
    shared_ffn = shared_ffn or expert_ffn * n_shared
    return MoeSpec(n_expert, used, n_shared, expert_ffn, shared_ffn, moe_layers)


def _block(name: str) -> int | None:
    match = _BLOCK.match(name)
    return int(match.group(1)) if match else None


def _expert_layers(tensors: Sequence[TensorEntry], n_layer: int) -> set[int]:
    found = {_block(t.name) for t in tensors if "_exps." in t.name}
    return {b for b in found if b is not None and b < n_layer}


def weights_from_tensors(tensors: Sequence[TensorEntry], n_expert: int, n_layer: int) -> Weights:
    """Split a tensor table into what one decoded token reads (see ``Weights``)."""
    sums = {k: [0, 0] for k in ("embd", "output", "expert", "mtp", "other")}
    for t in tensors:
        block = _block(t.name)
        if block is not None and block >= n_layer:
            kind = "mtp"
        elif t.name.startswith("token_embd.") or "per_layer_token_embd" in t.name:
            kind = "embd"
        elif t.name.startswith("output.weight"):
            kind = "output"
        else:
            kind = "expert" if "_exps." in t.name else "other"
        sums[kind][0] += t.n_bytes
        sums[kind][1] += t.n_elements
    output = sums["output"] if sums["output"][0] else _tied_output(tensors)
    per = max(n_expert, 1)
    return Weights(
        non_expert_bytes=sums["other"][0], expert_bytes=sums["expert"][0] // per,
        output_head_bytes=output[0], embedding_bytes=sums["embd"][0],
        non_expert_params=sums["other"][1], expert_params=sums["expert"][1] // per,
        output_head_params=output[1], mtp_bytes=sums["mtp"][0],
    )  # fmt: skip


def _tied_output(tensors: Sequence[TensorEntry]) -> list[int]:
    embd = next((t for t in tensors if t.name == "token_embd.weight"), None)
    return [embd.n_bytes, embd.n_elements] if embd else [0, 0]


def architecture_from_gguf(
    meta: Mapping[str, Any], tensors: Sequence[TensorEntry], *, name: str
) -> Architecture:
    """The architecture a GGUF file describes; ``name`` labels it in messages."""
    arch = meta.get("general.architecture")
    if not isinstance(arch, str):
        raise UsageError(f"{name}: GGUF has no general.architecture; it is not a model file")
    n_layer_all = int(meta.get(f"{arch}.block_count") or 0)
    n_embd = int(meta.get(f"{arch}.embedding_length") or 0)
    if n_layer_all <= 0 or n_embd <= 0:
        raise UsageError(f"{name}: GGUF lacks {arch}.block_count or embedding_length")
    m = _Meta(meta, arch, n_layer_all)
    n_mtp = m.num("nextn_predict_layers")
    n_layer = n_layer_all - n_mtp if n_layer_all > n_mtp else n_layer_all
    layers, window = _layers(m, n_layer, n_embd)
    has_recurrent = any(x.kind == "recurrent" for x in layers)
    moe = _moe(m, n_layer, tensors)
    weights = weights_from_tensors(tensors, moe.n_expert if moe else 0, n_layer)
    return check_architecture(
        Architecture(
            name=name,
            source="gguf",
            arch=arch,
            n_embd=n_embd,
            n_vocab=_vocab(m, tensors, n_embd),
            n_ctx_train=m.num("context_length") or None,
            layers=tuple(layers),
            sliding_window=window,
            recurrent=_recurrent_spec(m, n_embd) if has_recurrent else None,
            moe=moe,
            weights=weights if tensors else None,
            n_mtp_layers=n_mtp,
        )
    )


def _vocab(m: _Meta, tensors: Sequence[TensorEntry], n_embd: int) -> int | None:
    if vocab := m.num("vocab_size"):
        return vocab
    embd = next((t for t in tensors if t.name == "token_embd.weight"), None)
    return embd.n_elements // n_embd if embd else None
