"""Synthetic models in the real llama-server: each catalog shape (kept small with --layers) loads
and generates finite tokens, servelab reads back the shape it was given, a draft and its target
run speculative decoding together, the Q4_K_M mix equals llama-quantize's, and a clone of a
listed model loads too.

Models are synthesized here (tests/models.txt lists only the pulled ones this test clones).
One llama-server at a time; run the module under ``flock /tmp/servelab-engine.lock``.
"""

from __future__ import annotations

import math
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from gguf import GGMLQuantizationType

from servelab.engines.base import Engine
from servelab.engines.install import find_llama_binary
from servelab.engines.installed import find_vocab
from servelab.engines.registry import create_engine
from servelab.models import read_gguf_info, resolve_model
from servelab.models.arch_files import load_architecture
from servelab.models.synth import plan_clone, synthesize
from servelab.models.synth_catalog import CATALOG
from servelab.models.synth_gguf import read_gguf_raw
from servelab.spec.engine import EngineConfig
from tests.integration.conftest import listed_model, run_cli

# Small variants: every kind of layer each shape has, at a size two cores load in seconds.
SMALL = {"llama3-draft": None, "qwen3-draft": None, "qwen3-30b-a3b": 1, "gemma3-4b": 6}


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("synth")
    for name, layers in SMALL.items():
        synthesize(
            name, folder / f"{name}.gguf", layers=layers, progress=False, find_vocab=find_vocab
        )
    return folder


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., Engine]]:
    engines: list[Engine] = []

    def start(model: Path, *flags: str) -> Engine:
        config = EngineConfig(model=str(model), flags=flags, ctx_per_slot=512)
        engine = create_engine(config, tmp_path / f"engine{len(engines)}.log")
        engines.append(engine)
        engine.launch()
        engine.wait_healthy(180)
        return engine

    yield start
    for engine in engines:
        engine.stop()


def _complete(engine: Engine, **extra: object) -> dict[str, object]:
    body = {"prompt": "The capital of France is", "n_predict": 4, "temperature": 0, **extra}
    reply = httpx.post(engine.base_url + "/completion", json=body, timeout=300)
    reply.raise_for_status()
    data: dict[str, object] = reply.json()
    return data


@pytest.mark.parametrize("name", sorted(SMALL))
def test_synthetic_model_generates_finite_tokens(
    name: str, synth_dir: Path, start_server: Callable[..., Engine]
) -> None:
    engine = start_server(synth_dir / f"{name}.gguf")
    data = _complete(engine, n_probs=3)
    assert data["tokens_predicted"] == 4
    probs = data["completion_probabilities"]
    assert isinstance(probs, list) and len(probs) == 4
    logprobs = [top["logprob"] for step in probs for top in step["top_logprobs"]]
    assert len(logprobs) == 12
    assert all(isinstance(v, float) and math.isfinite(v) and v <= 0 for v in logprobs)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_servelab_reads_back_the_catalog_shape(name: str, synth_dir: Path) -> None:
    shape, path = CATALOG[name], synth_dir / f"{name}.gguf"
    arch = load_architecture(str(path))
    n_layer = SMALL[name] or shape.n_layer
    assert (arch.arch, arch.n_layer, arch.n_embd, arch.n_vocab, arch.n_ctx_train) == (
        shape.arch, n_layer, shape.n_embd, shape.n_vocab, shape.n_ctx_train,
    )  # fmt: skip
    assert (arch.n_head, arch.n_head_kv, arch.head_dim_k) == (
        shape.n_head, shape.n_head_kv, shape.head_dim,
    )  # fmt: skip
    if shape.n_expert:
        assert arch.moe is not None
        assert (arch.moe.n_expert, arch.moe.n_expert_used, arch.moe.expert_ffn) == (128, 8, 768)
    else:
        assert arch.moe is None
    sliding = [layer.sliding for layer in arch.layers]
    if shape.sliding_window:
        assert arch.sliding_window == 1024
        assert sliding == [True] * 5 + [False]
    else:
        assert not any(sliding)
    info = read_gguf_info(path)
    assert (info.synthetic, info.synthetic_like, info.quantisation) == (True, name, "Q4_K_M")
    assert info.name == f"servelab synthetic {name}"


def test_draft_and_target_run_speculative_decoding(
    synth_dir: Path, start_server: Callable[..., Engine]
) -> None:
    """Same vocabulary: llama-server accepts the pair; the synthetic acceptance options
    (benchmarking only) make a random draft's tokens count as accepted."""
    engine = start_server(
        synth_dir / "qwen3-30b-a3b.gguf",
        "-md", str(synth_dir / "qwen3-draft.gguf"),
        "--spec-type", "draft-simple", "--spec-draft-n-max", "3", "--spec-synth-len", "3",
    )  # fmt: skip
    timings = _complete(engine, n_predict=12)["timings"]
    assert isinstance(timings, dict)
    assert timings["draft_n"] > 0
    assert timings["draft_n_accepted"] > 0


def test_q4_k_m_mix_equals_llama_quantize(synth_dir: Path, tmp_path: Path) -> None:
    f16, ours = (
        synthesize("qwen3-draft", tmp_path / f"{q}.gguf", quant=q, progress=False,
                   find_vocab=find_vocab)
        for q in ("F16", "Q4_K_M")
    )  # fmt: skip
    theirs = tmp_path / "theirs.gguf"
    quantize = find_llama_binary("llama-quantize")
    subprocess.run(
        [str(quantize), str(f16), str(theirs), "Q4_K_M", "2"],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip

    def types(path: Path) -> dict[str, str]:
        tensors = read_gguf_raw(path).tensors
        return {t.name: GGMLQuantizationType(t.ggml_type).name for t in tensors}

    assert types(ours) == types(theirs)
    assert "Q6_K" in types(ours).values()
    assert abs(ours.stat().st_size - theirs.stat().st_size) < 1_000_000  # metadata aside


def test_cli_clones_a_listed_model_which_then_loads(
    tmp_path: Path, start_server: Callable[..., Engine]
) -> None:
    source = resolve_model(listed_model("gemma-3-270m")).path
    out = tmp_path / "clone.gguf"
    result = run_cli("models", "synth", "--like", str(source), "--out", str(out),
                     "--quant", "Q8_0", "--no-progress")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "synthetic" in result.stdout and "Q8_0" in result.stdout
    a, b = read_gguf_raw(source), read_gguf_raw(out)
    assert [(t.name, t.ne) for t in a.tensors] == [(t.name, t.ne) for t in b.tensors]
    tokens = "tokenizer.ggml.tokens"
    assert a.metadata[tokens].payload == b.metadata[tokens].payload  # the same vocabulary
    info = read_gguf_info(out)
    assert (info.synthetic, info.quantisation, info.architecture) == (True, "Q8_0", "gemma3")
    engine = start_server(out)
    assert _complete(engine)["tokens_predicted"] == 4
    again = run_cli("models", "synth", "--like", str(source), "--out", str(out))
    assert again.returncode == 2
    assert "pass --force" in again.stderr


def test_clone_types_equal_a_published_q4_k_m_file() -> None:
    """gemma-3-270m's GGUF was made by llama-quantize at Q4_K_M; its 640-wide rows exercise
    the fallbacks (Q4_K to Q5_0, Q6_K to Q8_0) as well as the use_more_bits layers."""
    source = resolve_model(listed_model("gemma-3-270m")).path
    real = {t.name: GGMLQuantizationType(t.ggml_type).name for t in read_gguf_raw(source).tensors}
    planned = {t.name: t.ggml_type for t in plan_clone(source, "Q4_K_M").tensors}
    assert planned == real
    assert {"Q5_0", "Q8_0", "Q6_K", "Q4_K", "F32"} <= set(real.values())


def test_cli_writes_a_catalog_shape_with_its_vocab(tmp_path: Path) -> None:
    out = tmp_path / "draft.gguf"
    result = run_cli("models", "synth", "--like", "llama3-draft", "--out", str(out),
                     "--quant", "Q4_0", "--seed", "3", "--no-progress")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "synthetic llama3-draft (llama, 78M params, Q4_0" in result.stdout
    info = read_gguf_info(out)
    assert (info.synthetic, info.quantisation, info.has_chat_template) == (True, "Q4_0", False)
    meta = read_gguf_raw(out).metadata
    assert meta["tokenizer.ggml.pre"].value == "llama-bpe"
    assert int.from_bytes(meta["tokenizer.ggml.tokens"].payload[4:12], "little") == 128256
