"""The llama.cpp installer around the build: CPU keys, logged steps, installs and lookup.

The real build takes minutes and is not run here; these tests use real subprocesses, real tar
files and real install directories in a temporary cache.
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from servelab.cli.engines_cmd import engines_app
from servelab.engines.install import (
    CMAKE_FLAGS,
    NO_AMX_FLAGS,
    TOOLS,
    USER_BINARY_ENV,
    InstalledEngine,
    choose_backend,
    cmake_flags,
    cpu_flags,
    cpu_key,
    engine_dir,
    find_build_tools,
    find_llama_binary,
    install_llamacpp,
    list_installed,
    parse_ninja_progress,
    run_logged,
)
from servelab.engines.installed import CUDA_ARCH_ENV, cuda_arch, cuda_arch_from_caps
from servelab.errors import BuildError, EngineNotInstalledError, EnvironmentProblem, UsageError

VERSION_LINE = "version: 0.5.0-dev (build 0, commit 0c1e57098)"  # as the real binary prints it


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("SERVELAB_CACHE_DIR", str(root))
    monkeypatch.delenv(USER_BINARY_ENV, raising=False)
    return root


def fake_install(
    backend: str = "cpu",
    key: str | None = None,
    built_at: str = "2026-01-01",
    arch: str | None = None,
) -> Path:
    """A complete install directory whose binaries are tiny scripts (install.json as schema 1
    wrote it, plus ``cuda_arch`` for a CUDA one)."""
    dest = engine_dir(backend, key, arch)
    (dest / "bin").mkdir(parents=True)
    for tool in TOOLS:
        binary = dest / "bin" / tool
        binary.write_text(f"#!/bin/sh\necho '{VERSION_LINE}' >&2\n")
        binary.chmod(0o755)
    meta = {
        "kind": "llamacpp", "version": "0.3.36", "commit": "0c1e57098", "backend": backend,
        "cpu_key": key or cpu_key(), "built_at": built_at, **({"cuda_arch": arch} if arch else {}),
    }  # fmt: skip
    (dest / "install.json").write_text(json.dumps(meta))
    return dest


# --- CPU key ---------------------------------------------------------------------------------


def test_cpu_key_is_stable_and_shaped() -> None:
    assert cpu_key() == cpu_key()
    assert re.fullmatch(rf"{re.escape(platform.machine())}-[0-9a-f]{{10}}", cpu_key())


def test_cpu_key_depends_on_the_flag_set_only() -> None:
    assert cpu_key(["avx2", "sse4_2"]) == cpu_key(["sse4_2", "avx2", "avx2"])
    assert cpu_key(["avx2", "sse4_2"]) != cpu_key(["sse4_2"])


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="needs Linux /proc/cpuinfo")
def test_cpu_key_hashes_proc_cpuinfo_flags() -> None:
    assert cpu_flags() == tuple(sorted(set(cpu_flags())))
    assert cpu_key() == cpu_key(cpu_flags())


def _fake_tool(folder: Path, name: str, script: str) -> None:
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(f"#!/bin/sh\n{script}\n")
    (folder / name).chmod(0o755)


def test_cuda_auto_needs_nvcc_and_a_listed_gpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    monkeypatch.setenv("PATH", str(bin_dir))
    _fake_tool(bin_dir, "nvcc", "exit 0")
    assert choose_backend(None) == "cpu"  # a toolkit without nvidia-smi: this dev machine
    _fake_tool(bin_dir, "nvidia-smi", "echo 'No devices were found'; exit 6")
    assert choose_backend(None) == "cpu"
    _fake_tool(bin_dir, "nvidia-smi", "echo 'GPU 0: NVIDIA H100 (UUID: GPU-1)'")
    assert choose_backend(None) == "cuda"
    assert choose_backend(False) == "cpu"
    (bin_dir / "nvcc").unlink()
    assert choose_backend(None) == "cpu"
    assert choose_backend(True) == "cuda"


# --- build steps -----------------------------------------------------------------------------


def test_cmake_flags_are_the_documented_ones() -> None:
    documented = (
        "-G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DBUILD_SHARED_LIBS=OFF "
        "-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=ON "
        "-DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF "
        "-DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_NUMBER=0 -DLLAMA_BUILD_COMMIT=0c1e57098"
    )
    assert tuple(documented.split()) == CMAKE_FLAGS
    plain = ("avx2", "fma", "avx512f")
    assert cmake_flags(None, plain) == list(CMAKE_FLAGS)
    cuda = ["-DGGML_CUDA=ON", "-DCMAKE_CUDA_ARCHITECTURES=90a"]
    assert cmake_flags("90a", plain) == [*CMAKE_FLAGS, *cuda]


def test_a_cpu_with_amx_builds_without_its_kernels_under_its_own_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    amx = ("avx2", "avx512f", "amx_tile", "amx_int8", "amx_bf16")
    no_amx = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    assert (f"-DCMAKE_C_FLAGS={no_amx}", f"-DCMAKE_CXX_FLAGS={no_amx}") == NO_AMX_FLAGS
    assert cmake_flags(None, amx) == [*CMAKE_FLAGS, *NO_AMX_FLAGS]
    assert cmake_flags("90a", amx)[-2:] == ["-DGGML_CUDA=ON", "-DCMAKE_CUDA_ARCHITECTURES=90a"]
    # the key differs from what the same flags gave before AMX was left out
    before = hashlib.sha256(" ".join(sorted(amx)).encode()).hexdigest()[:10]
    assert cpu_key(amx).startswith("x86_64-") and cpu_key(amx) != f"x86_64-{before}"
    plain = ("avx2", "avx512f")
    assert cpu_key(plain) == "x86_64-" + hashlib.sha256(b"avx2 avx512f").hexdigest()[:10]
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert cmake_flags(None, ("asimd", "amx_tile")) == list(CMAKE_FLAGS)


# --- CUDA architecture -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("caps", "arch"),
    [(["9.0"], "90a"), (["8.6"], "86"), (["8.9", "8.6", "8.6"], "86;89"), (["12.0"], "120"),
     (["7.5", "10.0"], "75;100")],
)  # fmt: skip
def test_cuda_arch_from_nvidia_smi_compute_caps(caps: list[str], arch: str) -> None:
    assert cuda_arch_from_caps(caps) == arch


def test_cuda_arch_refuses_an_unreadable_compute_cap() -> None:
    with pytest.raises(EnvironmentProblem, match="SERVELAB_CUDA_ARCH"):
        cuda_arch_from_caps(["[N/A]"])


def test_cuda_arch_from_the_local_gpu_or_the_override(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv(CUDA_ARCH_ENV, raising=False)
    with pytest.raises(EnvironmentProblem, match="nvidia-smi lists no GPU; set SERVELAB_CUDA_AR"):
        cuda_arch()
    _fake_tool(bin_dir, "nvidia-smi", "echo 9.0; echo 9.0")
    assert cuda_arch() == "90a"
    monkeypatch.setenv(CUDA_ARCH_ENV, "80, 86")
    assert cuda_arch() == "80;86"
    monkeypatch.setenv(CUDA_ARCH_ENV, "sm_90")
    with pytest.raises(UsageError, match="not a CUDA architecture list"):
        cuda_arch()


def test_install_keys_keep_the_cpu_name_and_add_the_cuda_arch(cache: Path) -> None:
    assert engine_dir("cpu").name == f"0c1e57098-cpu-{cpu_key()}"
    assert engine_dir("cuda", arch="90a").name == f"0c1e57098-cuda-sm90a-{cpu_key()}"
    assert engine_dir("cuda", arch="80;86").name == f"0c1e57098-cuda-sm80-86-{cpu_key()}"


def test_parse_ninja_progress() -> None:
    assert parse_ninja_progress("[12/218] Building CXX object common/x.o\n") == (12, 218)
    assert parse_ninja_progress("-- Configuring done") is None
    assert parse_ninja_progress("  [1/2] indented is not ninja status") is None


def test_run_logged_streams_lines_to_log_and_callback(tmp_path: Path) -> None:
    log_path = tmp_path / "build.log"
    seen: list[str] = []
    script = "print('[1/2] one'); print('[2/2] two')"
    with log_path.open("w") as log:
        run_logged("build", [sys.executable, "-c", script], log, log_path, seen.append)
    assert [parse_ninja_progress(line) for line in seen] == [(1, 2), (2, 2)]
    assert "[2/2] two" in log_path.read_text()


def test_failed_step_names_step_exit_code_and_kept_log(cache: Path, tmp_path: Path) -> None:
    log_path = tmp_path / "build.log"
    script = "print('[1/9] compiling'); print('error: boom'); raise SystemExit(3)"
    with log_path.open("w") as log, pytest.raises(BuildError) as err:
        run_logged("build", [sys.executable, "-c", script], log, log_path, lambda _: None)
    kept = cache / "engines" / "llamacpp" / "last-failed-build.log"
    first, *tail = str(err.value).splitlines()
    assert first == f"llama.cpp build failed (exit code 3); log: {kept}"
    assert any("error: boom" in line for line in tail)
    assert "error: boom" in kept.read_text()


def test_missing_program_is_a_build_error(cache: Path, tmp_path: Path) -> None:
    log_path = tmp_path / "build.log"
    with log_path.open("w") as log, pytest.raises(BuildError, match="configure failed"):
        run_logged("configure", [str(tmp_path / "no-cmake")], log, log_path, lambda _: None)


def test_missing_compiler_is_an_environment_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CC", "no-such-cc-servelab")
    with pytest.raises(EnvironmentProblem, match="no-such-cc-servelab"):
        find_build_tools("cpu")


# --- installs and lookup ---------------------------------------------------------------------


def test_install_returns_at_once_when_installed(cache: Path) -> None:
    dest = fake_install()
    started = time.perf_counter()
    engine = install_llamacpp(cuda=False, progress=False)
    assert time.perf_counter() - started < 0.5
    assert engine == InstalledEngine(
        "llamacpp", "0.3.36", "0c1e57098", "cpu", cpu_key(), dest, dest / "bin", "2026-01-01"
    )


def test_incomplete_installs_are_not_listed(cache: Path) -> None:
    dest = fake_install()
    (dest / "bin" / "llama-bench").unlink()
    (dest.parent / ".build-1-abc").mkdir()
    assert list_installed() == []


def test_find_llama_binary_order(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = fake_install(built_at="2026-01-01")
    other_cpu = fake_install(key="x86_64-0000000000", built_at="2027-01-01")
    assert find_llama_binary() == old / "bin" / "llama-server"
    assert find_llama_binary("llama-bench") == old / "bin" / "llama-bench"
    mine = other_cpu / "bin" / "llama-server"
    assert find_llama_binary(explicit=mine) == mine
    monkeypatch.setenv(USER_BINARY_ENV, str(mine))
    assert find_llama_binary() == mine
    assert find_llama_binary("llama-quantize") == other_cpu / "bin" / "llama-quantize"
    with pytest.raises(UsageError, match="does not exist"):
        find_llama_binary(explicit=cache / "nothing")


def test_user_binary_missing_names_the_variable(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(USER_BINARY_ENV, str(cache / "llama-server"))
    with pytest.raises(EngineNotInstalledError, match=USER_BINARY_ENV):
        find_llama_binary()


def test_not_installed_message(cache: Path) -> None:
    with pytest.raises(EngineNotInstalledError) as err:
        find_llama_binary()
    assert str(err.value) == (
        "no llama.cpp engine installed; run `servelab engines install llamacpp` "
        "or set SERVELAB_LLAMA_SERVER=/path/to/llama-server"
    )
    fake_install(key="x86_64-0000000000")
    with pytest.raises(EngineNotInstalledError, match="other CPUs: x86_64-0000000000"):
        find_llama_binary()


def test_engines_list_marks_active_and_user(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dest = fake_install()
    wide = {"COLUMNS": "300"}
    result = CliRunner().invoke(engines_app, ["list"], env=wide)
    assert result.exit_code == 0, result.output
    assert "active" in result.output and dest.name in result.output
    monkeypatch.setenv(USER_BINARY_ENV, str(dest / "bin" / "llama-server"))
    result = CliRunner().invoke(engines_app, ["list"], env=wide)
    assert "user" in result.output and "b0-0c1e57098" in result.output


def test_engines_list_shows_the_cuda_arch(cache: Path) -> None:
    cuda = fake_install("cuda", arch="90a", built_at="2027-01-01")
    result = CliRunner().invoke(engines_app, ["list"], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if cuda.name in line)
    assert "cuda sm90a" in row


def test_preferred_cuda_install_matches_the_local_gpu(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cpu = fake_install(built_at="2026-01-01")
    fake_install("cuda", arch="86", built_at="2027-01-01")
    bin_dir = tmp_path / "bin"
    monkeypatch.setenv("PATH", str(bin_dir))
    assert find_llama_binary() == cpu / "bin" / "llama-server"  # no GPU: never CUDA
    gpu_list, cap = "echo 'GPU 0: NVIDIA H200 (UUID: GPU-1)'", "echo 9.0"
    _fake_tool(bin_dir, "nvidia-smi", f'case "$1" in -L) {gpu_list};; *) {cap};; esac')
    assert find_llama_binary() == cpu / "bin" / "llama-server"  # sm86 cannot run on sm90
    h200 = fake_install("cuda", arch="90a", built_at="2026-06-01")
    assert find_llama_binary() == h200 / "bin" / "llama-server"
