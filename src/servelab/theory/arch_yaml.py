"""A hand-written architecture: the YAML schema for when neither a GGUF nor a config.json is
at hand, and its reader.

Owns the schema (pydantic, unknown keys are errors that name their path) and its conversion to
an ``Architecture``. docs/theory.md documents it with an example. Pure: it takes the parsed
YAML (a dict), never a file.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from servelab.errors import UsageError
from servelab.theory.arch import (
    Architecture,
    LayerKind,
    LayerSpec,
    MoeSpec,
    RecurrentSpec,
    Weights,
    check_architecture,
)
from servelab.theory.weights import estimate_weights

LayerType = Literal["full", "sliding", "linear", "none"]
_KINDS: dict[str, LayerKind] = {
    "full": "attention",
    "sliding": "attention",
    "linear": "recurrent",
    "none": "none",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AttentionYaml(_Strict):
    heads: int = Field(gt=0)
    kv_heads: int = Field(ge=0)
    head_dim: int = Field(gt=0, description="K head size (and V unless head_dim_v is given)")
    head_dim_v: int | None = Field(default=None, gt=0)
    sliding_window: int | None = Field(default=None, gt=0)


class RecurrentYaml(_Strict):
    conv_elements: int = Field(ge=0, description="f32 rolling state per layer and sequence")
    state_elements: int = Field(ge=0, description="f32 recurrent state per layer and sequence")
    mixer_params: int = Field(default=0, ge=0, description="projection weights of one layer")


class MoeYaml(_Strict):
    experts: int = Field(gt=1)
    active: int = Field(gt=0, description="routed experts used per token")
    shared: int = Field(default=0, ge=0)
    expert_ffn: int = Field(gt=0)
    shared_ffn: int | None = Field(default=None, ge=0)
    dense_leading_layers: int = Field(default=0, ge=0)


class WeightsYaml(_Strict):
    non_expert_bytes: int = Field(ge=0)
    expert_bytes: int = Field(default=0, ge=0, description="one routed expert, all MoE layers")
    output_head_bytes: int = Field(ge=0)
    embedding_bytes: int = Field(default=0, ge=0)


class ArchitectureYaml(_Strict):
    schema_version: Literal[1] = 1
    name: str | None = None
    layers: int = Field(gt=0)
    embedding: int = Field(gt=0)
    vocab: int | None = Field(default=None, gt=0)
    context_train: int | None = Field(default=None, gt=0)
    attention: AttentionYaml
    pattern: tuple[LayerType, ...] = Field(default=("full",), min_length=1)
    shared_kv_layers: int = Field(default=0, ge=0)
    recurrent: RecurrentYaml | None = None
    moe: MoeYaml | None = None
    ffn: int = Field(default=0, ge=0, description="dense FFN width")
    tie_embeddings: bool = False
    weights: WeightsYaml | None = None
    weight_bits: float | None = Field(default=None, gt=0, le=32)


def _layers(y: ArchitectureYaml) -> list[LayerSpec]:
    a = y.attention
    types = [y.pattern[i % len(y.pattern)] for i in range(y.layers)]
    first_shared = y.layers - y.shared_kv_layers
    layers = []
    for i, kind in enumerate(types):
        source = None
        if i >= first_shared and kind in ("full", "sliding"):
            same = [j for j in range(first_shared) if types[j] == kind]
            source = same[-1] if same else None
        layer_kind: LayerKind = _KINDS[kind]
        layers.append(
            LayerSpec(
                i,
                layer_kind,
                a.heads,
                a.kv_heads,
                a.head_dim,
                a.head_dim_v or a.head_dim,
                kind == "sliding",
                source,
            )
        )
    return layers


def _moe(y: ArchitectureYaml) -> MoeSpec | None:
    m = y.moe
    if m is None:
        return None
    shared_ffn = m.shared_ffn if m.shared_ffn is not None else m.expert_ffn * m.shared
    moe_layers = y.layers - m.dense_leading_layers
    return MoeSpec(m.experts, m.active, m.shared, m.expert_ffn, shared_ffn, moe_layers)


def _parse(data: Any, name: str) -> ArchitectureYaml:
    try:
        return ArchitectureYaml.model_validate(data or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        path = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise UsageError(
            f"architecture {name}: {path}: {first['msg']}; see the schema in docs/theory.md"
        ) from exc


def architecture_from_yaml(
    data: Any, *, name: str, weight_bits: float | None = None
) -> Architecture:
    """The architecture a parsed YAML document describes. Without a ``weights`` block the
    weights are estimated from shapes at ``weight_bits`` (flag, else the file's, else 16)."""
    y = _parse(data, name)
    layers = _layers(y)
    arch = Architecture(
        name=y.name or name, source="yaml", arch=None, n_embd=y.embedding, n_vocab=y.vocab,
        n_ctx_train=y.context_train, layers=tuple(layers),
        sliding_window=y.attention.sliding_window if any(x.sliding for x in layers) else None,
        recurrent=RecurrentSpec(y.recurrent.conv_elements, y.recurrent.state_elements)
        if y.recurrent else None,
        moe=_moe(y),
    )  # fmt: skip
    return check_architecture(replace(arch, weights=_weights(y, arch, weight_bits)))


def _weights(y: ArchitectureYaml, arch: Architecture, weight_bits: float | None) -> Weights:
    mixer = y.recurrent.mixer_params if y.recurrent else 0
    estimate = estimate_weights(
        arch, bits=weight_bits or y.weight_bits or 16.0, dense_ffn=y.ffn,
        recurrent_mixer_params=mixer, tied_embeddings=y.tie_embeddings,
    )  # fmt: skip
    if y.weights is None or weight_bits is not None:
        return estimate
    w = y.weights  # bytes as given; parameter counts (for FLOPs) still from the shapes
    return replace(
        estimate, non_expert_bytes=w.non_expert_bytes, expert_bytes=w.expert_bytes,
        output_head_bytes=w.output_head_bytes, embedding_bytes=w.embedding_bytes,
        source="given in the architecture file",
    )  # fmt: skip
