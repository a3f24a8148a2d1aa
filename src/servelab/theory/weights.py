"""Weight sizes estimated from shapes, for sources without a tensor table.

Owns the parameter count of a decoder from its architecture: attention projections (Q, K, V,
O), gated FFNs (three matrices), routed and shared experts, the router, the recurrent mixer
(given by the reader, which knows its projections), the embedding table and the output head,
sized at ``bits`` per weight. A GGUF's tensor table gives real bytes instead
(``arch_gguf.weights_from_tensors``); this is for config.json and hand-written YAML. Pure.
"""

from __future__ import annotations

from servelab.theory.arch import Architecture, LayerSpec, Weights


def _attention_params(layer: LayerSpec, n_embd: int) -> int:
    q = n_embd * layer.n_head * layer.head_dim_k
    kv = n_embd * layer.n_head_kv * (layer.head_dim_k + layer.head_dim_v)
    o = layer.n_head * layer.head_dim_v * n_embd
    return q + kv + o


def estimate_weights(
    arch: Architecture,
    *,
    bits: float,
    dense_ffn: int,
    recurrent_mixer_params: int = 0,
    tied_embeddings: bool = False,
) -> Weights:
    """Weights of ``arch`` at ``bits`` per weight. ``dense_ffn`` is the FFN width of layers
    without routed experts; ``recurrent_mixer_params`` the projections of one recurrent layer."""
    n_embd, moe = arch.n_embd, arch.moe
    mixer = sum(
        _attention_params(x, n_embd) if x.kind == "attention" else recurrent_mixer_params
        for x in arch.layers
    )
    moe_layers = moe.moe_layers if moe else 0
    dense_layers = arch.n_layer - moe_layers
    ffn = dense_layers * 3 * n_embd * dense_ffn
    expert = 0
    if moe is not None:
        ffn += moe_layers * (3 * n_embd * moe.shared_expert_ffn + n_embd * moe.n_expert)
        expert = moe_layers * 3 * n_embd * moe.expert_ffn
    vocab = (arch.n_vocab or 0) * n_embd
    non_expert = mixer + ffn

    def size(params: int) -> int:
        return round(params * bits / 8)

    return Weights(
        non_expert_bytes=size(non_expert), expert_bytes=size(expert),
        output_head_bytes=size(vocab), embedding_bytes=size(vocab),
        non_expert_params=non_expert, expert_params=expert, output_head_params=vocab,
        source=f"estimated from shapes at {bits:g} bits/weight"
        + (" (tied embeddings)" if tied_embeddings else ""),
    )  # fmt: skip
