"""The shapes synthetic models copy, the tensors each shape has, and the ggml type each tensor
gets at a given quantisation.

Owns the catalog (shapes taken from the models' published configs and checked against
llama.cpp's loaders in ``src/models/{llama,qwen3,qwen3moe,gemma3}.cpp``), the ``{arch}.*``
metadata those loaders read, the tensor list they create, and the per-tensor type mix of
``llama-quantize`` (``src/llama-quant.cpp``: ``llama_tensor_get_type_impl`` and
``tensor_type_fallback``). Pure: no I/O, no random numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from servelab.errors import UsageError
from servelab.models.quant_blocks import FORMATS

QUANTS = ("Q4_K_M", "Q4_0", "Q8_0", "F16")
FILE_TYPE = {"F16": 1, "Q4_0": 2, "Q8_0": 7, "Q4_K_M": 15}  # llama_ftype
_BASE_TYPE = {"Q4_K_M": "Q4_K", "Q4_0": "Q4_0", "Q8_0": "Q8_0", "F16": "F16"}
_FALLBACK = {"Q4_K": "Q5_0", "Q6_K": "Q8_0"}  # tensor_type_fallback for rows not a multiple of 256


@dataclass(frozen=True, slots=True)
class SynthShape:
    """A model shape. ``n_ff_exp`` > 0 makes it a MoE (routed experts replace the dense FFN)."""

    name: str
    arch: str
    vocab: str  # a key of servelab.engines.installed.VOCAB_FILES
    n_vocab: int
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int
    n_ctx_train: int
    rope_theta: float
    rms_eps: float
    tied_embeddings: bool
    qk_norm: bool = False
    n_expert: int = 0
    n_expert_used: int = 0
    n_ff_exp: int = 0
    sliding_window: int = 0
    swa_pattern: int = 0  # every n-th layer is full attention
    post_norms: bool = False
    extra: Mapping[str, float] = field(default_factory=dict)
    about: str = ""


CATALOG: dict[str, SynthShape] = {
    s.name: s
    for s in (
        SynthShape(
            "llama3-8b", "llama", "llama-bpe", 128256, 32, 4096, 32, 8, 128, 14336, 8192,
            500000.0, 1e-5, tied_embeddings=False, about="Meta-Llama-3-8B",
        ),
        SynthShape(
            "qwen3-30b-a3b", "qwen3moe", "qwen2", 151936, 48, 2048, 32, 4, 128, 6144, 40960,
            1000000.0, 1e-6, tied_embeddings=False, qk_norm=True, n_expert=128,
            n_expert_used=8, n_ff_exp=768, about="Qwen3-30B-A3B (128 experts, top 8)",
        ),
        SynthShape(
            "gemma3-4b", "gemma3", "gemma-4", 262144, 34, 2560, 8, 4, 256, 10240, 131072,
            1000000.0, 1e-6, tied_embeddings=True, qk_norm=True, sliding_window=1024,
            swa_pattern=6, post_norms=True, about="Gemma-3-4B (window 1024, 5 local : 1 global)",
            extra={"rope.freq_base_swa": 10000.0, "rope.scaling.factor": 8.0},
        ),
        SynthShape(
            "llama3-draft", "llama", "llama-bpe", 128256, 4, 512, 8, 4, 64, 1536, 8192,
            500000.0, 1e-5, tied_embeddings=True, about="tiny draft for llama3-8b",
        ),
        SynthShape(
            "qwen3-draft", "qwen3", "qwen2", 151936, 4, 512, 8, 4, 64, 1536, 40960,
            1000000.0, 1e-6, tied_embeddings=True, qk_norm=True,
            about="tiny dense draft for qwen3-30b-a3b",
        ),
    )
}  # fmt: skip


def catalog_shape(name: str) -> SynthShape:
    if name not in CATALOG:
        raise UsageError(
            f"unknown synthetic model {name!r}; give one of {', '.join(CATALOG)}, "
            "a .gguf file or a pulled registry model"
        )
    return CATALOG[name]


def swa_flags(shape: SynthShape, n_layer: int) -> list[bool]:
    """llama_hparams::set_swa_pattern(n, dense_first=false): the last of every n layers is
    full attention."""
    n = shape.swa_pattern
    return [il % n < n - 1 for il in range(n_layer)]


def arch_metadata(shape: SynthShape, n_layer: int) -> dict[str, object]:
    """The ``{arch}.*`` keys llama.cpp's loader reads for ``shape`` (values as Python scalars;
    the per-layer sliding-window flags as a list of bools)."""
    meta: dict[str, object] = {
        "context_length": shape.n_ctx_train,
        "embedding_length": shape.n_embd,
        "block_count": n_layer,
        "feed_forward_length": shape.n_ff,
        "attention.head_count": shape.n_head,
        "attention.head_count_kv": shape.n_head_kv,
        "attention.key_length": shape.head_dim,
        "attention.value_length": shape.head_dim,
        "rope.dimension_count": shape.head_dim,
        "rope.freq_base": shape.rope_theta,
        "attention.layer_norm_rms_epsilon": shape.rms_eps,
        "vocab_size": shape.n_vocab,
    }
    if shape.n_expert:
        meta |= {
            "expert_count": shape.n_expert,
            "expert_used_count": shape.n_expert_used,
            "expert_feed_forward_length": shape.n_ff_exp,
        }
    if shape.sliding_window:
        meta["attention.sliding_window"] = shape.sliding_window
        meta["attention.sliding_window_pattern"] = swa_flags(shape, n_layer)
    if "rope.scaling.factor" in shape.extra:
        meta["rope.scaling.type"] = "linear"
    return meta | dict(shape.extra)


def _layer_tensors(s: SynthShape, il: int) -> list[tuple[str, tuple[int, ...]]]:
    q_out, kv_out = s.n_head * s.head_dim, s.n_head_kv * s.head_dim
    p = f"blk.{il}."
    out: list[tuple[str, tuple[int, ...]]] = [
        (p + "attn_norm.weight", (s.n_embd,)),
        (p + "attn_q.weight", (s.n_embd, q_out)),
        (p + "attn_k.weight", (s.n_embd, kv_out)),
        (p + "attn_v.weight", (s.n_embd, kv_out)),
        (p + "attn_output.weight", (q_out, s.n_embd)),
        (p + "ffn_norm.weight", (s.n_embd,)),
    ]
    if s.qk_norm:
        out += [
            (p + "attn_q_norm.weight", (s.head_dim,)),
            (p + "attn_k_norm.weight", (s.head_dim,)),
        ]
    if s.post_norms:
        out += [
            (p + "post_attention_norm.weight", (s.n_embd,)),
            (p + "post_ffw_norm.weight", (s.n_embd,)),
        ]
    if s.n_expert:
        e, f = s.n_expert, s.n_ff_exp
        return [
            *out,
            (p + "ffn_gate_inp.weight", (s.n_embd, e)),
            (p + "ffn_gate_exps.weight", (s.n_embd, f, e)),
            (p + "ffn_up_exps.weight", (s.n_embd, f, e)),
            (p + "ffn_down_exps.weight", (f, s.n_embd, e)),
        ]
    return [
        *out,
        (p + "ffn_gate.weight", (s.n_embd, s.n_ff)),
        (p + "ffn_up.weight", (s.n_embd, s.n_ff)),
        (p + "ffn_down.weight", (s.n_ff, s.n_embd)),
    ]


def tensor_shapes(shape: SynthShape, n_layer: int) -> list[tuple[str, tuple[int, ...]]]:
    """Every tensor of ``shape`` with ``n_layer`` blocks, ``ne`` in ggml order (row first)."""
    out: list[tuple[str, tuple[int, ...]]] = [("token_embd.weight", (shape.n_embd, shape.n_vocab))]
    for il in range(n_layer):
        out += _layer_tensors(shape, il)
    out.append(("output_norm.weight", (shape.n_embd,)))
    if not shape.tied_embeddings:
        out.append(("output.weight", (shape.n_embd, shape.n_vocab)))
    return out


def quantizable(name: str, ne: tuple[int, ...]) -> bool:
    """llama-quantize's tensor_allows_quantization for the tensors synthetic models have."""
    return (
        len(ne) >= 2
        and name.endswith("weight")
        and "_norm.weight" not in name
        and "ffn_gate_inp.weight" not in name
    )


def use_more_bits(i_layer: int, n_layers: int) -> bool:
    return (
        i_layer < n_layers // 8
        or i_layer >= 7 * n_layers // 8
        or (i_layer - n_layers // 8) % 3 == 2
    )


@dataclass
class TypeMix:
    """llama-quantize's choice of ggml type per tensor at ``quant``; call ``pick`` on the tensors
    in file order (attn_v counts in order, as llama-quantize's ``i_attention_wv`` does)."""

    quant: str
    n_layer: int
    n_attn_v: int
    tied_embeddings: bool
    _i_attn_v: int = 0

    def pick(self, name: str, ne: tuple[int, ...], keep: str = "F32") -> str:
        """The type of tensor ``name``; ``keep`` is its type when it is not quantized."""
        if not quantizable(name, ne):
            return keep
        base = _BASE_TYPE[self.quant]
        if base == "F16":
            return "F16"
        chosen = self._rule(name, base)
        return self._fit(chosen, ne[0])

    def _rule(self, name: str, base: str) -> str:
        output = name == "output.weight" or (self.tied_embeddings and name == "token_embd.weight")
        if output:
            return base if base == "Q8_0" else "Q6_K"
        if self.quant != "Q4_K_M":
            return base
        if "attn_v.weight" in name:
            self._i_attn_v += 1
            return "Q6_K" if use_more_bits(self._i_attn_v - 1, self.n_attn_v) else base
        if "ffn_down" in name and name.startswith("blk."):
            i_layer = int(name.split(".")[1])
            return "Q6_K" if use_more_bits(i_layer, self.n_layer) else base
        return base

    @staticmethod
    def _fit(chosen: str, n_per_row: int) -> str:
        if n_per_row % FORMATS[chosen].block_size == 0:
            return chosen
        fallback = _FALLBACK.get(chosen, chosen)
        return fallback if n_per_row % FORMATS[fallback].block_size == 0 else "F16"
