"""vLLM's effective configuration read with the installed vLLM's own parser: every option with
the default this version gives it, the always-explicit ten concrete, a refused flag in one line,
owned options refused, and aliases made canonical. Nothing is launched and no port is bound."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from servelab.engines.vllm import VllmEngine
from servelab.engines.vllm_config import ALWAYS_EXPLICIT, MASKED_PORT
from servelab.errors import UsageError
from servelab.spec.engine import EngineConfig


def config(hf: Path, *flags: str, **kw: object) -> EngineConfig:
    return EngineConfig.model_validate({"kind": "vllm", "model": str(hf), "flags": flags, **kw})


def test_every_option_is_resolved_with_the_installed_default(smollm2_hf_dir: Path) -> None:
    eff = VllmEngine.effective_config(config(smollm2_hf_dir, "--enforce-eager"), "a")
    v = eff.values
    assert all(f"vllm.{k}" in v and v[f"vllm.{k}"] is not None for k in ALWAYS_EXPLICIT)
    assert len([k for k in v if k.startswith("vllm.")]) > 250  # the whole option space
    assert v["vllm.gpu_memory_utilization"] == 0.92  # vLLM 0.32.0's own default
    assert v["vllm.enforce_eager"] is True and v["vllm.enable_prefix_caching"] is False
    assert v["vllm.max_num_seqs"] == 1 and v["vllm.max_model_len"] == 4096  # servelab's
    assert v["vllm.speculative_config"] == "none" and v["vllm.quantization"] == "none"
    assert v["vllm.tool_call_parser"] == "hermes"
    assert v["model.format"] == "safetensors" and v["model.weights"] == "bfloat16 from Q4_1"
    assert str(v["engine.build"]).startswith("vllm 0.32.0 (cpu, torch 2.13.0")
    assert MASKED_PORT in eff.argv and "vllm.port" not in v
    spec = config(smollm2_hf_dir, "--speculative-config", '{"method":"ngram"}')
    assert VllmEngine.effective_config(spec, "a").values["vllm.speculative_config"] == (
        '{"method":"ngram"}'
    )


def test_flags_vllm_refuses_or_servelab_owns_are_one_line_errors(smollm2_hf_dir: Path) -> None:
    with pytest.raises(UsageError, match="vLLM refuses the arguments: unrecognized arguments: "):
        VllmEngine.effective_config(config(smollm2_hf_dir, "--no-such-option", "1"), "a")
    with pytest.raises(ValidationError, match="servelab owns the engine's --port"):
        config(smollm2_hf_dir, "--port", "9000")  # refused as the spec loads, any engine
    with pytest.raises(UsageError, match="flags set vLLM's --served-model-name, which servelab"):
        VllmEngine.effective_config(config(smollm2_hf_dir, "--served-model-name", "x"), "a")


def test_declare_names_are_made_canonical(smollm2_hf_dir: Path) -> None:
    names = VllmEngine.canonical_names(
        ("-tp", "--max-num-seqs", "gpu_memory_utilization", "model.weights"),
        [config(smollm2_hf_dir)],
    )
    assert names == (
        "vllm.tensor_parallel_size", "vllm.max_num_seqs", "vllm.gpu_memory_utilization",
        "model.weights",
    )  # fmt: skip
