"""The architecture of a model, as far as serving arithmetic needs it.

Owns the frozen records every prediction starts from: ``Architecture`` (layers, heads, head
sizes, sliding window, shared-KV and recurrent layers, MoE shape, vocabulary) and ``Weights``
(bytes and parameters of the non-expert weights, of one routed expert and of the output head).
The readers that build them live beside it (``arch_gguf``, ``arch_hf``, ``arch_yaml``); none of
them reads a file: callers hand them parsed dictionaries and tensor tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from servelab.errors import UsageError

LayerKind = Literal["attention", "recurrent", "none"]


@dataclass(frozen=True, slots=True)
class TensorEntry:
    """One row of a GGUF tensor table: name, bytes on disk, elements."""

    name: str
    n_bytes: int
    n_elements: int


@dataclass(frozen=True, slots=True)
class LayerSpec:
    """One block. ``kv_source`` is the index of the layer whose K/V this one reads (shared KV,
    as in Gemma 3n), or None when it stores its own. ``sliding`` layers keep only the window."""

    index: int
    kind: LayerKind
    n_head: int
    n_head_kv: int
    head_dim_k: int
    head_dim_v: int
    sliding: bool = False
    kv_source: int | None = None

    @property
    def k_elements(self) -> int:
        """K elements stored per token (all KV heads)."""
        return self.n_head_kv * self.head_dim_k

    @property
    def v_elements(self) -> int:
        return self.n_head_kv * self.head_dim_v

    @property
    def owns_kv(self) -> bool:
        return self.kind == "attention" and self.kv_source is None and self.n_head_kv > 0


@dataclass(frozen=True, slots=True)
class RecurrentSpec:
    """Per recurrent layer and per sequence: f32 elements of the rolling (conv / token-shift)
    state ``r`` and of the recurrent state ``s``; llama.cpp's ``n_embd_r()`` / ``n_embd_s()``."""

    conv_elements: int
    state_elements: int


@dataclass(frozen=True, slots=True)
class MoeSpec:
    """Routed experts per MoE layer, experts used per token, always-on shared experts and the
    FFN widths; ``moe_layers`` counts the layers that route (leading dense layers do not)."""

    n_expert: int
    n_expert_used: int
    n_shared_expert: int
    expert_ffn: int
    shared_expert_ffn: int
    moe_layers: int


@dataclass(frozen=True, slots=True)
class Weights:
    """What decoding one token reads, in bytes and parameters.

    ``non_expert`` is every weight read for each token except routed experts, the embedding
    table (a lookup reads one row) and the output head; ``expert`` is ONE routed expert summed
    over all MoE layers; ``output_head`` is the unembedding matrix (the embedding table itself
    when tied). ``mtp_bytes`` are next-token-prediction layers the trunk does not run.
    ``source`` says whether the numbers come from a tensor table or an estimate from shapes."""

    non_expert_bytes: int
    expert_bytes: int
    output_head_bytes: int
    embedding_bytes: int
    non_expert_params: int
    expert_params: int
    output_head_params: int
    mtp_bytes: int = 0
    source: str = "gguf tensor table"

    @property
    def total_bytes(self) -> int:
        return self.non_expert_bytes + self.output_head_bytes + self.embedding_bytes


@dataclass(frozen=True, slots=True)
class Architecture:
    """A model's shape. ``layers`` are the trunk blocks (MTP / next-n layers excluded); the
    scalar head fields describe a typical full-attention layer for display."""

    name: str
    source: str
    arch: str | None
    n_embd: int
    n_vocab: int | None
    n_ctx_train: int | None
    layers: tuple[LayerSpec, ...]
    sliding_window: int | None = None
    recurrent: RecurrentSpec | None = None
    moe: MoeSpec | None = None
    weights: Weights | None = None
    n_mtp_layers: int = 0

    @property
    def n_layer(self) -> int:
        return len(self.layers)

    def _first_attention(self) -> LayerSpec | None:
        attn = [x for x in self.layers if x.kind == "attention"]
        full = [x for x in attn if not x.sliding]
        if full:
            return full[0]
        return attn[0] if attn else None

    @property
    def n_head(self) -> int:
        first = self._first_attention()
        return first.n_head if first else 0

    @property
    def n_head_kv(self) -> int:
        first = self._first_attention()
        return first.n_head_kv if first else 0

    @property
    def head_dim_k(self) -> int:
        first = self._first_attention()
        return first.head_dim_k if first else 0

    @property
    def head_dim_v(self) -> int:
        first = self._first_attention()
        return first.head_dim_v if first else 0

    @property
    def sliding_layers(self) -> tuple[int, ...]:
        return tuple(x.index for x in self.layers if x.kind == "attention" and x.sliding)

    @property
    def shared_kv_layers(self) -> tuple[int, ...]:
        return tuple(x.index for x in self.layers if x.kv_source is not None)

    @property
    def recurrent_layers(self) -> tuple[int, ...]:
        return tuple(x.index for x in self.layers if x.kind == "recurrent")


def check_architecture(arch: Architecture) -> Architecture:
    """Reject shapes no model has, naming the field: a reader's last step."""
    where = f"architecture {arch.name!r} ({arch.source})"
    if not arch.layers:
        raise UsageError(f"{where}: no layers; give the layer count")
    if arch.n_embd <= 0:
        raise UsageError(f"{where}: embedding size must be positive; give the embedding size")
    if arch.sliding_layers and not arch.sliding_window:
        raise UsageError(f"{where}: sliding layers but no sliding window; give the window size")
    for layer in arch.layers:
        _check_layer(layer, arch, where)
    if arch.recurrent_layers and arch.recurrent is None:
        raise UsageError(f"{where}: recurrent layers but no recurrent state size; give it")
    if arch.moe is not None:
        _check_moe(arch.moe, where)
    return arch


def _check_layer(layer: LayerSpec, arch: Architecture, where: str) -> None:
    if layer.kind == "attention" and (layer.n_head_kv < 0 or layer.head_dim_k <= 0):
        raise UsageError(f"{where}: layer {layer.index} has no KV head size; give head_dim")
    source = layer.kv_source
    if source is not None and not (0 <= source < arch.n_layer and arch.layers[source].owns_kv):
        raise UsageError(
            f"{where}: layer {layer.index} shares the KV of layer {source}, which stores none; "
            "point shared layers at an earlier attention layer"
        )


def _check_moe(moe: MoeSpec, where: str) -> None:
    if moe.n_expert <= 0 or not 0 < moe.n_expert_used <= moe.n_expert:
        raise UsageError(
            f"{where}: MoE needs 0 < experts used ({moe.n_expert_used}) <= experts "
            f"({moe.n_expert}); fix the expert counts"
        )
