"""Source packs of the real llama-cpp-python sdist, and installs from a pack.

Packs the real sdist (fetched once into the cache if missing; about 35 s of xz on 2 cores),
then checks that CMake configures the CPU build from the unpacked pack and that every source
file of the four tools preprocesses there (so no header the build needs was filtered out), and
the CUDA configure where the toolkit has cuBLAS. A full llama.cpp build takes ~20 minutes on 2
cores and is not run here; instead a fabricated pack with a tiny CMake project goes through the
real install path (pack, extract, configure, build, stage, key, install.json, vocab/).
Run under ``flock /tmp/servelab-engine.lock`` like the other tests that build or run an engine
(CMake and the compiler here): one at a time on two cores.
"""

from __future__ import annotations

import io
import json
import os
import shlex
import shutil
import subprocess
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from servelab.cli.engines_cmd import engines_app
from servelab.engines.install import (
    SDIST_VERSION,
    TOOLS,
    cmake_flags,
    fetch_sdist,
    find_build_tools,
    install_llamacpp,
)
from servelab.engines.installed import (
    CUDA_ARCH_ENV,
    VOCAB_FILES,
    cpu_key,
    find_llama_binary,
    find_vocab,
)
from servelab.engines.pack import PackInfo, extract_pack, pack_llamacpp, read_pack

LIMIT_BYTES = 16_000_000


@pytest.fixture(scope="module")
def real_pack(tmp_path_factory: pytest.TempPathFactory) -> PackInfo:
    sdist = fetch_sdist(Console(stderr=True), progress=False)
    out = tmp_path_factory.mktemp("pack") / "llama.cpp-src.tar.xz"
    return pack_llamacpp(sdist, SDIST_VERSION, out, progress=False)


@pytest.fixture(scope="module")
def unpacked(real_pack: PackInfo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("unpacked") / "src"
    extract_pack(real_pack.path, src)
    return src


def test_real_pack_is_at_most_16_mb_and_holds_what_the_build_needs(real_pack: PackInfo) -> None:
    assert real_pack.size_bytes <= LIMIT_BYTES, real_pack.size_bytes
    assert read_pack(real_pack.path) == real_pack
    with tarfile.open(real_pack.path) as archive:
        names = {n.removeprefix("llama.cpp/") for n in archive.getnames()}
    assert real_pack.file_count == len(names) - 1  # all but SERVELAB-PACK.json
    needed = {
        "CMakeLists.txt", "SERVELAB-PACK.json", "tools/server/server.cpp",
        "tools/llama-bench/llama-bench.cpp", "tools/perplexity/perplexity.cpp",
        "tools/quantize/quantize.cpp", "ggml/src/ggml-cuda/ggml-cuda.cu",
        "ggml/src/ggml-cpu/ggml-cpu.c", "scripts/ui-assets.cmake", "tools/ui/CMakeLists.txt",
        *(f"models/{f}" for f in VOCAB_FILES.values()),
    }  # fmt: skip
    assert needed <= names
    dropped_tops = ("docs/", "tests/", "examples/", "benches/", "media/", "tools/ui/src/")
    assert not [n for n in names if n.startswith(dropped_tops)]
    assert not [n for n in names if n.startswith("ggml/src/ggml-vulkan/")]
    models = {n for n in names if n.startswith("models/")}
    assert models == {f"models/{f}" for f in VOCAB_FILES.values()}


def _configure(src: Path, build: Path, arch: str | None) -> subprocess.CompletedProcess[str]:
    tools = find_build_tools("cuda" if arch else "cpu")
    argv = [str(tools.cmake), "-S", str(src), "-B", str(build), *cmake_flags(arch)]
    argv.append("-DCMAKE_EXPORT_COMPILE_COMMANDS=ON")
    path = os.pathsep.join([str(tools.ninja.parent), os.environ.get("PATH", "")])
    env = {**os.environ, "PATH": path}
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)


def _ninja(build: Path, *args: str) -> subprocess.CompletedProcess[str]:
    ninja = str(find_build_tools("cpu").ninja)
    argv = [ninja, "-C", str(build), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300)


def _preprocess_argv(command: str) -> list[str]:
    """A compile command turned into a dependency scan (-M): it fails on a missing header."""
    argv, out, skip = shlex.split(command), [], False
    for arg in argv:
        if skip or arg in ("-c", "-MD"):
            skip = False
            continue
        skip = arg in ("-o", "-MF", "-MT", "-MQ")
        if not skip:
            out.append(arg)
    return [*out, "-M", "-o", os.devnull]


def _tool_sources(build: Path) -> list[dict[str, str]]:
    """The compile commands of the four tools' translation units (``ninja -t inputs`` prints
    absolute paths; generated ones under the build folder are left out)."""
    inputs = set(_ninja(build, "-t", "inputs", *TOOLS).stdout.split())
    commands = json.loads((build / "compile_commands.json").read_text())
    return [c for c in commands if c["file"] in inputs and not c["file"].startswith(str(build))]


def _scan(entry: dict[str, str]) -> tuple[str, int, str]:
    argv = _preprocess_argv(entry["command"])
    done = subprocess.run(argv, cwd=entry["directory"], capture_output=True, text=True)
    return entry["file"], done.returncode, done.stderr[-400:]


def test_cpu_build_configures_from_the_pack_and_every_tool_source_preprocesses(
    unpacked: Path, tmp_path: Path
) -> None:
    build = tmp_path / "build"
    configured = _configure(unpacked, build, None)
    assert configured.returncode == 0, configured.stdout[-2000:] + configured.stderr[-2000:]
    dry = _ninja(build, "-n", *TOOLS)  # every explicit input of the four tools exists
    assert dry.returncode == 0, dry.stdout[-2000:] + dry.stderr[-2000:]
    generated = _ninja(build, "llama-ui-assets")  # writes ui.h, which server-http includes
    assert generated.returncode == 0, generated.stdout[-2000:]
    sources = _tool_sources(build)
    with ThreadPoolExecutor(2) as pool:
        failed = [r for r in pool.map(_scan, sources) if r[1] != 0]
    assert len(sources) > 150, len(sources)  # 186 translation units at 0c1e57098
    assert failed == []


def _toolkit_has_cublas() -> bool:
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return False
    root = Path(nvcc).resolve().parent.parent
    return any(root.glob("lib*/libcublas.so*")) or any(root.glob("targets/*/lib/libcublas.so*"))


@pytest.mark.skipif(not _toolkit_has_cublas(), reason="needs nvcc with cuBLAS (a CUDA toolkit)")
def test_cuda_build_for_one_arch_configures_from_the_pack(unpacked: Path, tmp_path: Path) -> None:
    build = tmp_path / "build"
    configured = _configure(unpacked, build, "90a")
    assert configured.returncode == 0, configured.stdout[-2000:] + configured.stderr[-2000:]
    assert "Using CMAKE_CUDA_ARCHITECTURES=90a" in configured.stdout
    dry = _ninja(build, "-n", *TOOLS)
    assert dry.returncode == 0, dry.stdout[-2000:] + dry.stderr[-2000:]


# --- the install path, end to end, on a fabricated pack ---------------------------------------

TINY_CMAKE = """cmake_minimum_required(VERSION 3.14)
project(fake_llama C)
set(CMAKE_RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)
foreach(tool llama-server llama-bench llama-perplexity llama-quantize)
  add_executable(${tool} tool.c)
  target_compile_definitions(${tool} PRIVATE TOOL="${tool}" ARCH="${CMAKE_CUDA_ARCHITECTURES}")
endforeach()
"""
TINY_C = '#include <stdio.h>\nint main(void) { printf("%s arch=%s\\n", TOOL, ARCH); return 0; }\n'


def _tiny_pack(tmp_path: Path) -> PackInfo:
    files = {"CMakeLists.txt": TINY_CMAKE.encode(), "tool.c": TINY_C.encode()}
    files |= {f"models/{f}": f"GGUF {name}".encode() for name, f in VOCAB_FILES.items()}
    sdist = tmp_path / "sdist.tar.gz"
    with tarfile.open(sdist, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(f"llama_cpp_python-0.3.36/vendor/llama.cpp/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return pack_llamacpp(sdist, SDIST_VERSION, tmp_path / "tiny.tar.xz", progress=False)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("SERVELAB_CACHE_DIR", str(root))
    monkeypatch.delenv("SERVELAB_LLAMA_SERVER", raising=False)
    monkeypatch.delenv(CUDA_ARCH_ENV, raising=False)
    return root


def _run(binary: Path) -> str:
    return subprocess.run([str(binary)], capture_output=True, text=True, check=True).stdout


def test_install_from_a_pack_keys_records_and_copies_vocab(cache: Path, tmp_path: Path) -> None:
    pack = _tiny_pack(tmp_path)
    engine = install_llamacpp(cuda=False, progress=False, source=pack.path)
    assert engine.root.name == f"0c1e57098-cpu-{cpu_key()}" and engine.cuda_arch is None
    meta = json.loads((engine.root / "install.json").read_text())
    assert meta["source"] == {
        "path": str(pack.path),
        "sha256": pack.sha256,
        "bytes": pack.size_bytes,
    }
    assert meta["cuda_arch"] is None and meta["schema_version"] == 2
    assert _run(engine.binary("llama-bench")) == "llama-bench arch=\n"
    assert find_llama_binary() == engine.binary("llama-server")
    assert find_vocab("qwen2") == engine.root / "vocab" / "ggml-vocab-qwen2.gguf"
    assert find_vocab("qwen2").read_bytes() == b"GGUF qwen2"


def test_cuda_install_from_a_pack_targets_one_arch(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pack = _tiny_pack(tmp_path)
    fake_bin = tmp_path / "fake-bin"  # nvcc is only looked for: the tiny project compiles no CUDA
    fake_bin.mkdir()
    (fake_bin / "nvcc").write_text("#!/bin/sh\nexit 0\n")
    (fake_bin / "nvcc").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv(CUDA_ARCH_ENV, "90a")  # no GPU here: cross-build for an H200
    engine = install_llamacpp(cuda=True, progress=False, source=pack.path)
    assert engine.root.name == f"0c1e57098-cuda-sm90a-{cpu_key()}"
    assert engine.cuda_arch == "90a"
    assert _run(engine.binary("llama-server")) == "llama-server arch=90a\n"
    meta = json.loads((engine.root / "install.json").read_text())
    assert meta["cmake_flags"][-2:] == ["-DGGML_CUDA=ON", "-DCMAKE_CUDA_ARCHITECTURES=90a"]
    assert sorted(p.name for p in (engine.root / "vocab").iterdir()) == sorted(VOCAB_FILES.values())
    listed = CliRunner().invoke(engines_app, ["list"], env={"COLUMNS": "300"})
    row = next(line for line in listed.output.splitlines() if engine.root.name in line)
    assert "cuda sm90a" in row
