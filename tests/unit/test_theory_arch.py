"""Architecture readers: GGUF metadata and tensor tables (through a real tiny GGUF file),
Hugging Face config.json fields, and the hand-written YAML schema."""

from __future__ import annotations

import json
from pathlib import Path

import gguf
import numpy as np
import pytest
import yaml

from servelab.errors import UsageError
from servelab.models.arch_files import load_architecture, read_gguf_tables
from servelab.theory.arch import TensorEntry
from servelab.theory.arch_gguf import weights_from_tensors
from servelab.theory.arch_hf import architecture_from_hf_config
from servelab.theory.arch_yaml import architecture_from_yaml

DOCS = Path(__file__).resolve().parents[2] / "docs" / "theory.md"


def write_moe_gguf(path: Path) -> Path:
    """4 layers, 4 experts (2 used), per-layer KV heads, a 5000-token vocabulary array."""
    w = gguf.GGUFWriter(path, "qwen3moe")
    w.add_block_count(4)
    w.add_embedding_length(64)
    w.add_context_length(2048)
    w.add_head_count(4)
    w.add_head_count_kv([2, 2, 1, 1])
    w.add_expert_count(4)
    w.add_expert_used_count(2)
    w.add_expert_feed_forward_length(32)
    w.add_token_list([f"t{i}" for i in range(5000)])
    w.add_tensor("token_embd.weight", np.zeros((100, 64), dtype=np.float16))
    w.add_tensor("output_norm.weight", np.zeros(64, dtype=np.float32))
    for i in range(4):
        w.add_tensor(f"blk.{i}.attn_q.weight", np.zeros((64, 64), dtype=np.float16))
        w.add_tensor(f"blk.{i}.ffn_up_exps.weight", np.zeros((4, 32, 64), dtype=np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_gguf_file_reader_keeps_short_arrays_and_skips_long_ones(tmp_path: Path) -> None:
    meta, tensors = read_gguf_tables(write_moe_gguf(tmp_path / "moe.gguf"))
    assert meta["qwen3moe.attention.head_count_kv"] == [2, 2, 1, 1]
    assert "tokenizer.ggml.tokens" not in meta  # 5000 > the 4096 array limit
    assert {t.name for t in tensors} >= {"token_embd.weight", "blk.3.ffn_up_exps.weight"}


def test_gguf_moe_architecture_and_weights(tmp_path: Path) -> None:
    arch = load_architecture(str(write_moe_gguf(tmp_path / "moe.gguf")))
    assert [x.n_head_kv for x in arch.layers] == [2, 2, 1, 1]
    assert arch.moe is not None and (arch.moe.n_expert, arch.moe.n_expert_used) == (4, 2)
    assert arch.moe.moe_layers == 4 and arch.n_vocab == 100  # from token_embd: no vocab key
    w = arch.weights
    assert w is not None
    # experts: 4 layers x 4 x 32 x 64 x 2 B = 65,536 B over 4 experts -> 16,384 B per expert
    assert w.expert_bytes == 16384 and w.expert_params == 8192
    # non-expert: 4 x 64 x 64 x 2 B + the f32 norm 256 B; the head is the tied embedding
    assert w.non_expert_bytes == 4 * 64 * 64 * 2 + 256
    assert w.output_head_bytes == w.embedding_bytes == 100 * 64 * 2


def test_tensor_split_counts_untied_head_and_mtp_layers() -> None:
    tensors = [
        TensorEntry("token_embd.weight", 1000, 500),
        TensorEntry("output.weight", 800, 400),
        TensorEntry("blk.0.attn_q.weight", 100, 50),
        TensorEntry("blk.0.ffn_gate_exps.weight", 640, 320),
        TensorEntry("blk.0.ffn_up_shexp.weight", 30, 15),
        TensorEntry("blk.1.nextn.eh_proj.weight", 77, 40),
    ]
    w = weights_from_tensors(tensors, n_expert=8, n_layer=1)
    assert (w.output_head_bytes, w.embedding_bytes) == (800, 1000)
    assert (w.non_expert_bytes, w.expert_bytes, w.mtp_bytes) == (130, 80, 77)


def test_not_a_model_file_is_a_usage_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\x00" * 10)
    with pytest.raises(UsageError, match=r"bad\.gguf"):
        load_architecture(str(bad))


def test_hf_mixtral_moe_fields() -> None:
    config = {
        "model_type": "mixtral", "num_hidden_layers": 32, "hidden_size": 4096,
        "num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 14336,
        "num_local_experts": 8, "num_experts_per_tok": 2, "vocab_size": 32000,
        "sliding_window": None, "torch_dtype": "bfloat16",
    }  # fmt: skip
    arch = architecture_from_hf_config(config, name="mixtral")
    assert arch.moe is not None and arch.moe.expert_ffn == 14336 and arch.moe.moe_layers == 32
    assert arch.sliding_window is None and arch.head_dim_k == 128
    w = arch.weights
    assert w is not None  # one expert over 32 layers: 32 x 3 x 4096 x 14336 params, bf16
    assert w.expert_params == 32 * 3 * 4096 * 14336 and w.expert_bytes == 2 * w.expert_params


def test_hf_deepseek_style_dense_lead_and_shared_experts() -> None:
    config = {
        "model_type": "deepseek_v3", "num_hidden_layers": 10, "hidden_size": 1024,
        "num_attention_heads": 8, "n_routed_experts": 64, "num_experts_per_tok": 6,
        "n_shared_experts": 2, "moe_intermediate_size": 256, "first_k_dense_replace": 3,
        "intermediate_size": 4096,
    }  # fmt: skip
    moe = architecture_from_hf_config(config, name="ds").moe
    assert moe is not None
    assert (moe.moe_layers, moe.n_shared_expert, moe.shared_expert_ffn) == (7, 2, 512)


def test_hf_gpt_oss_alternates_and_gemma3_keeps_every_sixth_full() -> None:
    oss = {
        "model_type": "gpt_oss", "num_hidden_layers": 24, "hidden_size": 2880,
        "num_attention_heads": 64, "num_key_value_heads": 8, "head_dim": 64,
        "sliding_window": 128, "num_local_experts": 32, "num_experts_per_tok": 4,
        "intermediate_size": 2880,
    }  # fmt: skip
    arch = architecture_from_hf_config(oss, name="gpt-oss-20b")
    assert arch.sliding_layers == tuple(range(0, 24, 2)) and arch.sliding_window == 128
    gemma = {
        "model_type": "gemma3_text", "num_hidden_layers": 12, "hidden_size": 640,
        "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 256,
        "sliding_window": 512, "sliding_window_pattern": 6,
    }  # fmt: skip
    full = [x.index for x in architecture_from_hf_config(gemma, name="g").layers if not x.sliding]
    assert full == [5, 11]


def test_hf_config_missing_layers_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="num_hidden_layers"):
        architecture_from_hf_config({"hidden_size": 10}, name="broken")


def test_config_json_file_and_folder(tmp_path: Path) -> None:
    config = {"num_hidden_layers": 2, "hidden_size": 64, "num_attention_heads": 4}
    (tmp_path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    assert load_architecture(str(tmp_path)).n_layer == 2
    assert load_architecture(str(tmp_path / "config.json")).n_embd == 64


def _docs_yaml_example() -> str:
    text = DOCS.read_text(encoding="utf-8")
    start = text.index("```yaml\n# architecture file") + len("```yaml\n")
    return text[start : text.index("```", start)]


def test_the_documented_yaml_example_parses() -> None:
    arch = architecture_from_yaml(yaml.safe_load(_docs_yaml_example()), name="doc")
    assert arch.n_layer == 40 and len(arch.recurrent_layers) == 30
    assert arch.moe is not None and arch.moe.n_expert == 256
    assert arch.weights is not None and arch.weights.source == "given in the architecture file"


def test_yaml_unknown_key_names_its_path() -> None:
    doc = {"layers": 2, "embedding": 64, "attention": {"heads": 4, "kv_heads": 4,
           "head_dim": 16, "window": 5}}  # fmt: skip
    with pytest.raises(UsageError, match=r"attention\.window"):
        architecture_from_yaml(doc, name="typo")


def test_yaml_sliding_layers_need_a_window() -> None:
    doc = {"layers": 2, "embedding": 64, "pattern": ["sliding"],
           "attention": {"heads": 4, "kv_heads": 4, "head_dim": 16}}  # fmt: skip
    with pytest.raises(UsageError, match="sliding window"):
        architecture_from_yaml(doc, name="nowindow")
