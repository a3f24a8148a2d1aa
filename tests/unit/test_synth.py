"""Synthetic models: the catalog's shapes, llama-quantize's type mix, and cloning a tiny GGUF."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import gguf
import numpy as np
import pytest

from servelab.errors import UsageError
from servelab.models import read_gguf_info
from servelab.models.synth import synthesize
from servelab.models.synth_catalog import (
    CATALOG,
    TypeMix,
    arch_metadata,
    catalog_shape,
    swa_flags,
    tensor_shapes,
)
from servelab.models.synth_gguf import read_gguf_raw

# Published parameter counts (Hugging Face model cards / safetensors index totals).
PARAMS = {"llama3-8b": 8_030_261_248, "qwen3-30b-a3b": 30_532_122_624}
MORE_BITS_32 = [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]


def _params(name: str) -> int:
    shape = CATALOG[name]
    return sum(math.prod(ne) for _, ne in tensor_shapes(shape, shape.n_layer))


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_catalog_shapes_have_the_published_parameter_counts(name: str) -> None:
    assert _params(name) == PARAMS[name]


def test_qwen3_moe_layer_has_128_experts_of_768() -> None:
    shapes = dict(tensor_shapes(CATALOG["qwen3-30b-a3b"], 1))
    assert shapes["blk.0.ffn_up_exps.weight"] == (2048, 768, 128)
    assert shapes["blk.0.ffn_down_exps.weight"] == (768, 2048, 128)
    assert shapes["blk.0.ffn_gate_inp.weight"] == (2048, 128)
    assert shapes["blk.0.attn_q.weight"] == (2048, 4096)  # 32 heads of 128, wider than n_embd
    assert shapes["blk.0.attn_k_norm.weight"] == (128,)
    assert "blk.0.ffn_up.weight" not in shapes


def test_gemma3_keeps_five_local_layers_to_one_global() -> None:
    shape = CATALOG["gemma3-4b"]
    meta = arch_metadata(shape, 12)
    assert meta["attention.sliding_window"] == 1024
    assert meta["attention.sliding_window_pattern"] == [True] * 5 + [False] + [True] * 5 + [False]
    assert meta["attention.key_length"] == 256
    assert swa_flags(shape, 2) == [True, True]
    names = {n for n, _ in tensor_shapes(shape, 1)}
    assert "output.weight" not in names  # tied to token_embd, as in the real model
    assert {"blk.0.post_attention_norm.weight", "blk.0.post_ffw_norm.weight"} <= names


def test_drafts_share_their_targets_vocabulary() -> None:
    assert CATALOG["llama3-draft"].vocab == CATALOG["llama3-8b"].vocab
    assert CATALOG["llama3-draft"].n_vocab == CATALOG["llama3-8b"].n_vocab
    assert CATALOG["qwen3-draft"].vocab == CATALOG["qwen3-30b-a3b"].vocab
    assert _params("llama3-draft") < _params("llama3-8b") / 50


def test_unknown_shape_names_the_choices() -> None:
    with pytest.raises(UsageError, match="llama3-8b, qwen3-30b-a3b"):
        catalog_shape("llama4")


def _types(
    quant: str, names: Sequence[tuple[str, tuple[int, ...]]], n_layer: int
) -> dict[str, str]:
    n_v = sum(1 for n, _ in names if "attn_v" in n)
    mix = TypeMix(quant, n_layer, n_v, tied_embeddings="output.weight" not in dict(names))
    return {n: mix.pick(n, ne) for n, ne in names}


def test_q4_k_m_mix_is_llama_quantizes_for_llama3_8b() -> None:
    """llama-quant.cpp: output Q6_K; attn_v and ffn_down Q6_K on use_more_bits layers (the first
    and last eighth, and every third layer between); everything else Q4_K; norms F32."""
    types = _types("Q4_K_M", tensor_shapes(CATALOG["llama3-8b"], 32), 32)
    assert types["output.weight"] == "Q6_K"
    assert types["token_embd.weight"] == "Q4_K"
    assert types["blk.0.attn_norm.weight"] == "F32"
    for il in range(32):
        more = "Q6_K" if il in MORE_BITS_32 else "Q4_K"
        assert types[f"blk.{il}.attn_v.weight"] == more
        assert types[f"blk.{il}.ffn_down.weight"] == more
        assert types[f"blk.{il}.attn_q.weight"] == "Q4_K"
        assert types[f"blk.{il}.ffn_up.weight"] == "Q4_K"


def test_tied_embeddings_take_the_output_type_and_routers_stay_f32() -> None:
    gemma = _types("Q4_K_M", tensor_shapes(CATALOG["gemma3-4b"], 2), 2)
    assert gemma["token_embd.weight"] == "Q6_K"
    qwen = _types("Q4_0", tensor_shapes(CATALOG["qwen3-30b-a3b"], 1), 1)
    assert qwen["blk.0.ffn_gate_inp.weight"] == "F32"
    assert qwen["blk.0.ffn_up_exps.weight"] == "Q4_0"
    assert qwen["output.weight"] == "Q6_K"


def test_other_quants_and_fallbacks() -> None:
    names = [("output.weight", (576, 100)), ("blk.0.attn_q.weight", (576, 576)),
             ("blk.0.ffn_down.weight", (1536, 576)), ("blk.0.attn_v.weight", (576, 192)),
             ("blk.0.odd.weight", (100, 8))]  # fmt: skip
    assert _types("Q8_0", names, 1)["output.weight"] == "Q8_0"
    assert set(_types("F16", names, 1).values()) == {"F16"}
    q4km = _types("Q4_K_M", names, 1)
    assert q4km["output.weight"] == "Q8_0"  # Q6_K needs rows of 256: tensor_type_fallback
    assert q4km["blk.0.attn_q.weight"] == "Q5_0"
    assert q4km["blk.0.ffn_down.weight"] == "Q6_K"
    assert q4km["blk.0.odd.weight"] == "F16"


def _tiny_gguf(path: Path) -> Path:
    """A two-layer llama of 256 wide with a 300-token vocabulary and F32 weights."""
    w = gguf.GGUFWriter(path, "llama")
    w.add_name("tiny")
    for key, value in (("block_count", 2), ("embedding_length", 256), ("context_length", 64),
                       ("feed_forward_length", 512), ("attention.head_count", 4)):  # fmt: skip
        w.add_uint32(f"llama.{key}", value)
    w.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-5)
    w.add_tokenizer_model("gpt2")
    w.add_token_list([f"t{i}" for i in range(300)])
    rng = np.random.default_rng(0)
    w.add_tensor("token_embd.weight", rng.standard_normal((300, 256), dtype=np.float32))
    for il in range(2):
        w.add_tensor(f"blk.{il}.attn_norm.weight", np.full(256, 0.5, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            w.add_tensor(f"blk.{il}.{name}.weight", rng.standard_normal((256, 256), np.float32))
    w.add_tensor("output.weight", rng.standard_normal((300, 256), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_clone_keeps_metadata_tokenizer_names_and_shapes(tmp_path: Path) -> None:
    source = _tiny_gguf(tmp_path / "tiny.gguf")
    out = synthesize(str(source), tmp_path / "clone.gguf", quant="Q8_0", progress=False)
    a, b = gguf.GGUFReader(source), gguf.GGUFReader(out)
    assert b.fields["tokenizer.ggml.tokens"].contents() == [f"t{i}" for i in range(300)]
    assert b.fields["llama.feed_forward_length"].contents() == 512
    assert [(t.name, t.shape.tolist()) for t in a.tensors] == [
        (t.name, t.shape.tolist()) for t in b.tensors
    ]
    types = {t.name: t.tensor_type.name for t in b.tensors}
    assert types["blk.0.attn_q.weight"] == "Q8_0"
    assert types["blk.0.attn_norm.weight"] == "F32"
    norm = next(t for t in b.tensors if t.name == "blk.1.attn_norm.weight")
    assert (norm.data == 0.5).all()  # tensors llama-quantize leaves alone are copied
    q = next(t for t in b.tensors if t.name == "blk.0.attn_q.weight")
    values = gguf.quants.dequantize(q.data, q.tensor_type)
    assert np.isfinite(values).all()
    assert values.std() == pytest.approx(1 / 16, rel=0.1)
    info = read_gguf_info(out)
    assert (info.synthetic, info.synthetic_like, info.name) == (
        True, "tiny.gguf", "servelab synthetic tiny.gguf",
    )  # fmt: skip
    assert info.quantisation == "Q8_0"
    assert read_gguf_info(source).synthetic is False


def test_raw_reader_agrees_with_gguf_py(tmp_path: Path) -> None:
    source = _tiny_gguf(tmp_path / "tiny.gguf")
    raw, stock = read_gguf_raw(source), gguf.GGUFReader(source)
    assert raw.metadata["llama.block_count"].value == 2
    assert raw.metadata["general.name"].value == "tiny"
    assert raw.metadata["tokenizer.ggml.tokens"].value == [f"t{i}" for i in range(300)]
    assert [(t.name, t.data_offset) for t in raw.tensors] == [
        (t.name, t.data_offset) for t in stock.tensors
    ]


def test_refusals_name_the_fix(tmp_path: Path) -> None:
    source = _tiny_gguf(tmp_path / "tiny.gguf")
    with pytest.raises(UsageError, match="--layers applies to catalog shapes only"):
        synthesize(str(source), tmp_path / "a.gguf", layers=1, progress=False)
    with pytest.raises(UsageError, match="pass --force"):
        synthesize(str(source), source, force=False, progress=False)
    with pytest.raises(UsageError, match="give one of Q4_K_M"):
        synthesize(str(source), tmp_path / "a.gguf", quant="Q3_K", progress=False)
    with pytest.raises(UsageError, match="--layers 0 is out of range"):
        synthesize("llama3-draft", tmp_path / "a.gguf", layers=0, progress=False)
    with pytest.raises(
        UsageError, match=r"pass find_vocab=servelab\.engines\.installed\.find_vocab"
    ):
        synthesize("llama3-draft", tmp_path / "a.gguf", progress=False)
    with pytest.raises(UsageError, match="does not exist"):
        synthesize(str(tmp_path / "missing.gguf"), tmp_path / "a.gguf", progress=False)
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"NOPE" + bytes(64))
    with pytest.raises(UsageError, match="not a little-endian GGUF"):
        synthesize(str(bad), tmp_path / "a.gguf", progress=False)
    assert not (tmp_path / "a.gguf").exists()
    assert not list(tmp_path.glob("*.partial"))


def test_long_arrays_stay_encoded_and_copy_byte_for_byte(tmp_path: Path) -> None:
    w = gguf.GGUFWriter(tmp_path / "long.gguf", "llama")
    w.add_token_list([f"token{i}" for i in range(5000)])
    w.add_token_scores([float(i) for i in range(5000)])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    raw = read_gguf_raw(tmp_path / "long.gguf").metadata
    assert raw["tokenizer.ggml.tokens"].value is None
    assert raw["tokenizer.ggml.scores"].value is None
    from servelab.models.synth_gguf import RawGGUFWriter

    copy = RawGGUFWriter(tmp_path / "copy.gguf", "llama")
    copy.add_raw("tokenizer.ggml.tokens", raw["tokenizer.ggml.tokens"])
    copy.add_raw("tokenizer.ggml.scores", raw["tokenizer.ggml.scores"])
    copy.write_header_to_file()
    copy.write_kv_data_to_file()
    copy.write_tensors_to_file()
    copy.close()
    back = gguf.GGUFReader(tmp_path / "copy.gguf")
    assert back.fields["tokenizer.ggml.tokens"].contents()[4999] == "token4999"
    assert back.fields["tokenizer.ggml.scores"].contents()[:3] == [0.0, 1.0, 2.0]
