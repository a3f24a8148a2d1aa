"""vLLM in the spec and the confound guard: named settings written as vLLM options, settings
refused on the wrong engine, cross-engine arms, wildcard declarations, and a refusal that lists
every undeclared field. The argument list and environment servelab builds for vLLM (pure).
The installed vLLM's own parser is exercised in tests/integration/test_vllm_effective.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from servelab.engines.vllm_config import (
    DEFAULT_TOOL_FLAGS,
    OFFLINE_ENV,
    VllmArgs,
    base_argv,
    engine_env,
    explicit_value,
    sampler_defaults,
)
from servelab.runner.experiment import load_spec
from servelab.spec.confound import ConfoundError, check_confounds, user_name
from servelab.spec.engine import EngineConfig
from servelab.spec.experiment import ExperimentSpec, resolve_arm
from servelab.spec.settings import declared_fields, field_matches

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
VLLM_BASE = {"engine": {"kind": "vllm", "model": "m", "flags": ["--gpu-memory-utilization", "0.2"]}}


def spec(base: dict[str, Any] = VLLM_BASE, **kw: Any) -> ExperimentSpec:
    return ExperimentSpec.model_validate({"base": base, **kw})


@pytest.mark.parametrize(
    "name", ["vllm", "vllm-aa", "vllm-confound", "vllm-ngram", "llamacpp-vs-vllm"]
)
def test_vllm_examples_load(name: str) -> None:
    s, _ = load_spec(EXAMPLES / f"{name}.yaml")
    assert len(s.expand()) == 2


def test_named_settings_become_vllm_options() -> None:
    s = spec(arms={
        "a": {"max_num_seqs": 1, "enforce_eager": False, "kv": "fp8"},
        "b": {"max_num_seqs": 4, "gpu_memory_utilization": 0.3,
              "speculative_config": {"method": "ngram", "num_speculative_tokens": 3}},
    })  # fmt: skip
    arms = {a.name: resolve_arm(s, a) for a in s.expand()}
    assert arms["a"].engine.flags == (
        "--gpu-memory-utilization", "0.2", "--kv-cache-dtype", "fp8", "--max-num-seqs", "1",
        "--no-enforce-eager",
    )  # fmt: skip
    # a named setting replaces the base's spelling of its option
    assert arms["b"].engine.flags == (
        "--max-num-seqs", "4", "--gpu-memory-utilization", "0.3",
        "--speculative-config", '{"method":"ngram","num_speculative_tokens":3}',
    )  # fmt: skip
    assert "vllm.max_num_seqs" in arms["a"].declared and "vllm.kv_cache_dtype" in arms["a"].declared
    assert "vllm.speculative_config" in arms["b"].declared


@pytest.mark.parametrize(
    ("base", "arm", "words"),
    [
        (VLLM_BASE, {"threads": 2}, "threads, a llama.cpp option, but its engine kind is 'vllm'"),
        ({"engine": {"model": "m.gguf"}}, {"max_num_seqs": 2}, "max_num_seqs, a vLLM option"),
    ],
)
def test_a_setting_of_the_other_engine_is_refused(
    base: dict[str, Any], arm: dict[str, Any], words: str
) -> None:
    with pytest.raises(ValidationError, match=words):
        spec(base, arms={"a": {}, "b": arm})


def test_an_arm_on_another_engine_drops_the_base_engines_flags_and_binary() -> None:
    base = {"engine": {"model": "m", "flags": ["--cache-ram", "0"], "binary": "x/llama-server"}}
    s = spec(base, arms={"l": {}, "v": {"engine": "vllm", "flags": ["--enforce-eager"]}},
             concurrency=4)  # fmt: skip
    arms = {a.name: resolve_arm(s, a) for a in s.expand()}
    assert arms["l"].engine.kind == "llamacpp" and arms["l"].engine.flags == ("--cache-ram", "0")
    v = arms["v"].engine
    assert v.kind == "vllm" and v.flags == ("--enforce-eager",) and v.binary is None
    assert v.parallel == 4  # --max-num-seqs follows the concurrency, like llama.cpp's slots
    assert field_matches("vllm.max_num_seqs", arms["v"].declared)
    assert field_matches("llama.cache-ram", arms["v"].declared)
    assert not field_matches("model.weights", arms["v"].declared)


def test_declared_names_cover_vllm_spellings() -> None:
    assert "vllm.tensor_parallel_size" in declared_fields("--tensor-parallel-size")
    assert "vllm.max_num_seqs" in declared_fields("max_num_seqs")
    assert declared_fields("prefix_cache") == ("prefix_cache", "vllm.enable_prefix_caching")
    assert field_matches("vllm.dtype", ("vllm.*",)) and not field_matches("vllmx", ("vllm.*",))
    assert user_name("vllm.gpu_memory_utilization") == "--gpu-memory-utilization"


def test_the_refusal_lists_every_undeclared_difference() -> None:
    eff = {
        "l": {"engine.kind": "llamacpp", "model.format": "gguf", "model.weights": "Q4_1",
              "llama.threads": "-1", "x": 1},
        "v": {"engine.kind": "vllm", "model.format": "safetensors", "model.weights": "bfloat16",
              "vllm.dtype": "auto", "x": 1},
    }  # fmt: skip
    declared = {"l": (), "v": ("engine.kind", "llama.*", "vllm.*")}
    with pytest.raises(ConfoundError) as err:
        check_confounds(eff, declared, "l")
    msg = str(err.value)
    assert "differ in model.format (l: gguf, v: safetensors)" in msg
    assert "they also differ undeclared in model.weights;" in msg
    assert check_confounds(eff, declared, "l", declare=("model.format", "model.weights")) == []


def test_vllm_argv_is_explicit_and_flags_win() -> None:
    c = EngineConfig(kind="vllm", model="smol", parallel=4, ctx_per_slot=2048,
                     flags=("--max-num-seqs", "2"))  # fmt: skip
    argv = base_argv(c, Path("venv/bin/python"), Path("m/hf"), "8123")
    assert argv[:3] == ["venv/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
    text = " ".join(argv)
    assert "--model m/hf --served-model-name smol --host 127.0.0.1 --port 8123" in text
    assert "--max-num-seqs 4 --max-model-len 2048 --no-enable-prefix-caching" in text
    assert argv[-2:] == ["--max-num-seqs", "2"]  # the user's flags come last and win
    assert all(f in argv for f in DEFAULT_TOOL_FLAGS)
    cached = base_argv(c.model_copy(update={"prefix_cache": True}), Path("p"), Path("m"), "1")
    assert "--enable-prefix-caching" in cached and "--no-enable-prefix-caching" not in cached


def test_vllm_env_is_offline_and_drops_inherited_vllm_variables() -> None:
    c = EngineConfig(kind="vllm", model="m", env={"VLLM_CPU_KVCACHE_SPACE": "2"})
    env, ignored = engine_env(c, {"LANG": "C", "VLLM_USE_V1": "0", "VLLM_CPU_KVCACHE_SPACE": "9"})
    assert env["LANG"] == "C" and "VLLM_USE_V1" not in env
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "2" and ignored == ["VLLM_USE_V1"]
    assert all(env[k] == v for k, v in OFFLINE_ENV.items())


def test_parsed_options_resolve_any_spelling() -> None:
    parsed = VllmArgs(
        version="0.32.0", values={"tensor_parallel_size": 1},
        options={"tensor_parallel_size": ("--tensor-parallel-size", "-tp"),
                 "max_num_seqs": ("--max-num-seqs",)},
    )  # fmt: skip
    assert parsed.dest_of("-tp") == "tensor_parallel_size"
    assert parsed.dest_of("vllm.max_num_seqs") == "max_num_seqs"
    assert parsed.dest_of("max-num-seqs") == "max_num_seqs"
    assert parsed.dest_of("--nope") is None
    assert explicit_value("speculative_config", None) == "none"
    assert explicit_value("max_num_seqs", None) == "default"
    assert explicit_value("max_num_seqs", 4) == 4


def test_sampler_defaults_come_from_the_models_generation_config(tmp_path: Path) -> None:
    assert sampler_defaults(tmp_path) == "top_k=0 top_p=1.0 min_p=0.0 repetition_penalty=1.0"
    (tmp_path / "generation_config.json").write_text('{"top_p": 0.9, "top_k": 50}')
    assert sampler_defaults(tmp_path) == "top_k=50 top_p=0.9 min_p=0.0 repetition_penalty=1.0"
