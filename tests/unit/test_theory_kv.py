"""KV-cache memory: known answers computed by hand, and properties that must always hold.

Each expected figure below is worked out in its comment from the llama.cpp sizing rules
(docs/theory.md): cells = pad256(n_ctx / n_seq) per stream; sliding layers
pad256(min(cells, window + n_ubatch)); bytes = layers x cells x streams x row bytes x (K, V).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from servelab.errors import UsageError
from servelab.theory.arch import Architecture
from servelab.theory.arch_gguf import architecture_from_gguf
from servelab.theory.arch_hf import architecture_from_hf_config
from servelab.theory.arch_yaml import architecture_from_yaml
from servelab.theory.kvcache import KvSettings, kv_read_bytes, llama_kv_allocation
from servelab.theory.kvtypes import CACHE_TYPES, cache_type

MIB = 1024 * 1024
F16, Q8 = CACHE_TYPES["f16"], CACHE_TYPES["q8_0"]


def gemma3_270m() -> Architecture:
    meta: dict[str, Any] = {
        "general.architecture": "gemma3",
        "gemma3.block_count": 18,
        "gemma3.embedding_length": 640,
        "gemma3.context_length": 32768,
        "gemma3.attention.head_count": 4,
        "gemma3.attention.head_count_kv": 1,
        "gemma3.attention.key_length": 256,
        "gemma3.attention.value_length": 256,
        "gemma3.attention.sliding_window": 512,
    }
    return architecture_from_gguf(meta, [], name="gemma3-270m")


def smollm2() -> Architecture:
    meta = {
        "general.architecture": "llama",
        "llama.block_count": 30,
        "llama.embedding_length": 576,
        "llama.attention.head_count": 9,
        "llama.attention.head_count_kv": 3,
    }
    return architecture_from_gguf(meta, [], name="smollm2")


def gemma3n_e2b() -> Architecture:
    meta = {
        "general.architecture": "gemma3n",
        "gemma3n.block_count": 30,
        "gemma3n.embedding_length": 2048,
        "gemma3n.attention.head_count": 8,
        "gemma3n.attention.head_count_kv": 2,
        "gemma3n.attention.key_length": 256,
        "gemma3n.attention.value_length": 256,
        "gemma3n.attention.sliding_window": 512,
    }
    return architecture_from_gguf(meta, [], name="gemma3n")


def qwen3_next() -> Architecture:
    meta = {
        "general.architecture": "qwen3next",
        "qwen3next.block_count": 48,
        "qwen3next.embedding_length": 2048,
        "qwen3next.attention.head_count": 16,
        "qwen3next.attention.head_count_kv": 2,
        "qwen3next.attention.key_length": 256,
        "qwen3next.attention.value_length": 256,
        "qwen3next.full_attention_interval": 4,
        "qwen3next.ssm.conv_kernel": 4,
        "qwen3next.ssm.inner_size": 4096,
        "qwen3next.ssm.state_size": 128,
        "qwen3next.ssm.group_count": 16,
        "qwen3next.ssm.time_step_rank": 32,
        "qwen3next.expert_count": 512,
        "qwen3next.expert_used_count": 10,
    }
    return architecture_from_gguf(meta, [], name="qwen3-next")


def test_smollm2_dense_known_answer() -> None:
    # 30 layers x 4096 cells x (3 x 64 = 192) x 2 B = 45 MiB for K, as much for V: 90 MiB
    alloc = llama_kv_allocation(smollm2(), KvSettings(n_ctx=4096))
    assert alloc.kv_bytes == 2 * 30 * 4096 * 192 * 2 == 90 * MIB


def test_smollm2_q8_0_known_answer() -> None:
    # q8_0 row of 192 = 6 blocks x 34 B = 204 B; 30 x 4096 x 204 x 2 = 50,135,040 B
    alloc = llama_kv_allocation(smollm2(), KvSettings(n_ctx=4096, type_k=Q8, type_v=Q8))
    assert alloc.kv_bytes == 30 * 4096 * 204 * 2


def test_sliding_window_known_answer_two_streams() -> None:
    # -c 3000 -np 2: n_ctx = 3072, 1536 cells per stream, 2 streams.
    # full layers 5, 11, 17: 3 x 1536 x 2 x 256 x 2 B x 2 = 9 MiB (llama-server said 9.00)
    # sliding (15 layers): pad256(min(1536, 512 + 512)) = 1024 cells: 15 x 1024 x 2 x 1024 = 30 MiB
    alloc = llama_kv_allocation(gemma3_270m(), KvSettings(n_ctx=3000, n_seq=2))
    full, sliding = alloc.group("full"), alloc.group("sliding")
    assert full is not None and sliding is not None
    assert full.layers == (5, 11, 17) and full.cells == 1536 and full.total_bytes == 9 * MIB
    assert len(sliding.layers) == 15 and sliding.cells == 1024
    assert sliding.total_bytes == 30 * MIB


def test_sliding_window_small_context_shrinks_the_ubatch_margin() -> None:
    # -c 256: n_batch = min(256, 2048), n_ubatch = 256 -> pad256(min(256, 512 + 256)) = 256
    alloc = llama_kv_allocation(gemma3_270m(), KvSettings(n_ctx=256))
    sliding = alloc.group("sliding")
    assert sliding is not None and sliding.cells == 256


def test_sliding_window_is_not_linear_in_context() -> None:
    # A linear extrapolation of the 4k figure to 32k is 8x; the real growth is far smaller.
    small = llama_kv_allocation(gemma3_270m(), KvSettings(n_ctx=4096)).kv_bytes
    large = llama_kv_allocation(gemma3_270m(), KvSettings(n_ctx=32768)).kv_bytes
    # 4k: 3 x 4096 x 1024 + 15 x 1024 x 1024 = 27 MiB; 32k: 3 x 32768 x 1024 + 15 MiB = 111 MiB
    assert (small, large) == (27 * MIB, 111 * MIB)
    assert large / small < 4.2


def test_unified_cache_sizes_the_window_per_sequence() -> None:
    # --kv-unified -np 4 -c 8192: one stream of 8192; window 512 x 4 + 512 = 2560 cells
    alloc = llama_kv_allocation(gemma3_270m(), KvSettings(n_ctx=8192, n_seq=4, unified=True))
    sliding = alloc.group("sliding")
    assert sliding is not None and (sliding.cells, sliding.streams) == (2560, 1)


def test_swa_full_gives_sliding_layers_the_whole_context() -> None:
    alloc = llama_kv_allocation(gemma3_270m(), KvSettings(n_ctx=8192, swa_full=True))
    assert alloc.kv_bytes == 18 * 8192 * 1024


def test_shared_kv_known_answer() -> None:
    # Gemma 3n E2B: layers 20..29 reuse KV; of 0..19, layers 4, 9, 14, 19 are full.
    # full: 4 x 4096 x (2 x 256) x 2 B x 2 = 32 MiB; sliding: 16 x 1024 x 512 x 4 = 32 MiB
    arch = gemma3n_e2b()
    assert arch.shared_kv_layers == tuple(range(20, 30))
    assert {arch.layers[i].kv_source for i in range(20, 30)} == {18, 19}
    assert arch.layers[24].kv_source == 19 and arch.layers[20].kv_source == 18
    alloc = llama_kv_allocation(arch, KvSettings(n_ctx=4096))
    full, sliding = alloc.group("full"), alloc.group("sliding")
    assert full is not None and sliding is not None
    assert full.layers == (4, 9, 14, 19) and full.total_bytes == 32 * MIB
    assert sliding.total_bytes == 32 * MIB and alloc.kv_bytes == 64 * MIB


def test_shared_kv_from_hf_config_matches_gguf() -> None:
    types = ["sliding_attention"] * 4 + ["full_attention"]
    config = {
        "model_type": "gemma3n_text", "num_hidden_layers": 30, "hidden_size": 2048,
        "num_attention_heads": 8, "num_key_value_heads": 2, "head_dim": 256,
        "sliding_window": 512, "layer_types": types * 6, "num_kv_shared_layers": 10,
        "vocab_size": 262400, "intermediate_size": 8192,
    }  # fmt: skip
    arch = architecture_from_hf_config({"text_config": config}, name="gemma-3n-E2B")
    settings = KvSettings(n_ctx=4096)
    assert arch.shared_kv_layers == tuple(range(20, 30))
    assert llama_kv_allocation(arch, settings) == llama_kv_allocation(gemma3n_e2b(), settings)


def test_hybrid_recurrent_known_answer() -> None:
    # Qwen3-Next: every 4th layer attends (12 of 48); 36 Gated DeltaNet layers.
    # KV: 12 x 4096 x (2 x 256) x 2 B x 2 = 96 MiB.
    # r: (4 - 1) x (4096 + 2 x 16 x 128) = 24,576 f32; s: 128 x 4096 = 524,288 f32 per layer
    # per sequence: 36 x (24,576 + 524,288) x 4 B = 79,036,416 B per sequence.
    arch = qwen3_next()
    assert arch.recurrent is not None
    assert (arch.recurrent.conv_elements, arch.recurrent.state_elements) == (24576, 524288)
    assert len(arch.recurrent_layers) == 36 and arch.layers[3].kind == "attention"
    one = llama_kv_allocation(arch, KvSettings(n_ctx=4096))
    assert one.kv_bytes == 96 * MIB and one.recurrent_bytes == 79_036_416
    two = llama_kv_allocation(arch, KvSettings(n_ctx=8192, n_seq=2))
    assert two.kv_bytes == 2 * 96 * MIB and two.recurrent_bytes == 2 * 79_036_416
    rollback = llama_kv_allocation(arch, KvSettings(n_ctx=4096, n_rs_seq=3))
    assert rollback.recurrent_bytes == 4 * 79_036_416


def test_hybrid_from_hf_config_matches_gguf() -> None:
    config = {
        "model_type": "qwen3_next", "num_hidden_layers": 48, "hidden_size": 2048,
        "num_attention_heads": 16, "num_key_value_heads": 2, "head_dim": 256,
        "full_attention_interval": 4, "linear_conv_kernel_dim": 4, "linear_key_head_dim": 128,
        "linear_value_head_dim": 128, "linear_num_key_heads": 16, "linear_num_value_heads": 32,
        "num_experts": 512, "num_experts_per_tok": 10, "moe_intermediate_size": 512,
        "shared_expert_intermediate_size": 512, "vocab_size": 151936,
    }  # fmt: skip
    arch = architecture_from_hf_config(config, name="qwen3-next")
    settings = KvSettings(n_ctx=4096, n_seq=2)
    assert llama_kv_allocation(arch, settings) == llama_kv_allocation(qwen3_next(), settings)
    assert arch.moe is not None and (arch.moe.n_expert, arch.moe.n_expert_used) == (512, 10)


def test_custom_bits_per_element() -> None:
    # a fork's 3.5-bit cache: row of 192 = ceil(192 x 3.5 / 8) = 84 B
    t = cache_type("turbo3=3.5")
    assert (t.name, t.row_bytes(192)) == ("turbo3", 84)
    assert cache_type("4").row_bytes(192) == 96


def test_block_type_refuses_rows_it_cannot_pack() -> None:
    with pytest.raises(UsageError, match="packs 32 values"):
        Q8.row_bytes(100)


def test_unknown_cache_type_names_the_choices() -> None:
    with pytest.raises(UsageError, match="q8_0"):
        cache_type("q3_k")


def test_kv_read_bytes_sliding_stops_at_window() -> None:
    arch = gemma3_270m()
    # at 4096: full 3 x 4096 x 1024 B + sliding 15 x 512 x 1024 B
    assert kv_read_bytes(arch, 4096, F16, F16) == (3 * 4096 + 15 * 512) * 1024


# --- properties ------------------------------------------------------------------------------

contexts = st.integers(min_value=1, max_value=200_000)


@given(a=contexts, b=contexts, n_seq=st.integers(1, 8))
def test_allocation_never_shrinks_with_context(a: int, b: int, n_seq: int) -> None:
    lo, hi = sorted((a, b))
    arch = gemma3_270m()
    small = llama_kv_allocation(arch, KvSettings(n_ctx=lo, n_seq=n_seq)).kv_bytes
    assert small <= llama_kv_allocation(arch, KvSettings(n_ctx=hi, n_seq=n_seq)).kv_bytes


def all_sliding() -> Architecture:
    doc = {
        "layers": 8, "embedding": 512, "pattern": ["sliding"],
        "attention": {"heads": 8, "kv_heads": 2, "head_dim": 64, "sliding_window": 1000},
    }  # fmt: skip
    return architecture_from_yaml(doc, name="all-sliding")


@given(a=contexts, b=contexts)
def test_kv_read_grows_with_context_until_the_window(a: int, b: int) -> None:
    lo, hi = sorted((a, b))
    arch = all_sliding()
    read_lo, read_hi = (kv_read_bytes(arch, n, F16, F16) for n in (lo, hi))
    assert read_lo <= read_hi
    if lo < hi <= 1000:
        assert read_lo < read_hi
    if lo >= 1000:
        assert read_lo == read_hi == kv_read_bytes(arch, 1000, F16, F16)


@given(ctx=st.integers(1, 100_000), n_seq=st.integers(1, 8))
def test_sliding_cells_never_exceed_window_plus_margin(ctx: int, n_seq: int) -> None:
    alloc = llama_kv_allocation(gemma3_270m(), KvSettings(n_ctx=ctx, n_seq=n_seq))
    sliding = alloc.group("sliding")
    assert sliding is not None and sliding.cells <= 1024  # pad256(512 + 512)


@given(ctx=st.integers(1, 100_000), n_seq=st.integers(1, 8))
def test_q8_0_is_smaller_than_f16(ctx: int, n_seq: int) -> None:
    for arch in (smollm2(), gemma3_270m(), qwen3_next()):
        f16 = llama_kv_allocation(arch, KvSettings(n_ctx=ctx, n_seq=n_seq)).kv_bytes
        q8 = llama_kv_allocation(
            arch, KvSettings(n_ctx=ctx, n_seq=n_seq, type_k=Q8, type_v=Q8)
        ).kv_bytes
        assert q8 < f16
