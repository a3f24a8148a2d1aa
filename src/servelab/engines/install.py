"""Building llama.cpp's tools from a source pack.

Owns writing ``cache_dir()/engines/llamacpp/``: getting a pack (``--source FILE``, else the
llama-cpp-python sdist fetched with pip and packed into ``cache_dir()/downloads`` by
``pack.py``: one build path either way), extracting it, configuring and building it with the
cmake and ninja PyPI packages, and installing ``<commit>-cpu-<cpukey>/`` or
``<commit>-cuda-sm<arch>-<cpukey>/`` with ``bin/``, ``vocab/``, ``build.log`` and
``install.json``.
Which install (or other binary) runs is ``installed.py``'s (its names are re-exported here).
Must not launch engines (the engine module does), run anything through a shell, or leave a
half-installed engine: each build happens in a ``.build-<pid>-*`` directory beside its
destination and is renamed into place only when complete.

CUDA: ``cuda=True`` always builds with ``-DGGML_CUDA=ON``; ``cuda=False`` never does. Auto
(``cuda=None``) needs ``nvcc`` on PATH *and* ``nvidia-smi -L`` listing a GPU, because a CUDA
toolkit without a GPU is common (the 2-core dev machines ship ``nvcc`` and have no GPU): a CUDA
build there is slow and its binaries cannot use a GPU. A CUDA build targets only the local GPU's
architecture (``nvidia-smi --query-gpu=compute_cap``), or ``$SERVELAB_CUDA_ARCH`` to build for
another machine's GPU: one architecture compiles several times faster than CMake's default list.

``GGML_NATIVE=ON`` binaries use every instruction the build CPU has, so installs are keyed by a
hash of the CPU flags and only an install with this machine's key is picked to run. The one
exception is AMX: on a CPU that lists it, ``NO_AMX_FLAGS`` leave ggml's AMX kernels out (on a
VM that lists amx_tile, llama-server died with SIGSEGV in ``ggml_backend_amx_mul_mat`` on its
first batch, while the AVX-512 paths run), and the CPU key says so (``installed.cpu_key``).
"""

from __future__ import annotations

import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from servelab.engines.installed import (
    KIND,
    LLAMA_CPP_COMMIT,
    TOOLS,
    USER_BINARY_ENV,
    VOCAB_DIR,
    VOCAB_FILES,
    InstalledEngine,
    cpu_flags,
    cpu_key,
    cuda_arch,
    engine_dir,
    engines_root,
    find_llama_binary,
    gpu_present,
    has_amx,
    list_installed,
    load_installed,
    preferred_engine,
    probe_version,
)
from servelab.engines.pack import (
    SDIST_FILENAME,
    SDIST_REQUIREMENT,
    SDIST_SHA256,
    SDIST_VERSION,
    PackInfo,
    check_pack,
    default_pack_path,
    extract_pack,
    fetch_sdist,
    pack_llamacpp,
)
from servelab.errors import BuildError, EnvironmentProblem, UsageError
from servelab.models.pull import sha256_file
from servelab.paths import file_lock, move_into_place, remove_stale, write_json_atomic

# The finders live in installed.py; they are re-exported here for callers of the old home.
__all__ = [
    "CMAKE_FLAGS", "CUDA_ARCH_FLAG", "CUDA_FLAG", "KIND", "LLAMA_CPP_COMMIT", "NO_AMX_FLAGS",
    "SCHEMA_VERSION",
    "SDIST_FILENAME", "SDIST_REQUIREMENT", "SDIST_SHA256", "SDIST_VERSION", "TOOLS",
    "USER_BINARY_ENV", "BuildTools", "InstalledEngine", "choose_backend", "cmake_flags",
    "cpu_flags", "cpu_key", "engine_dir", "engines_root", "fetch_sdist", "find_build_tools",
    "find_llama_binary", "gpu_present", "install_llamacpp", "list_installed", "load_installed",
    "pack_source", "parse_ninja_progress", "preferred_engine", "probe_version", "run_logged",
]  # fmt: skip

# 2: "source" is the pack built from ({path, sha256, bytes}; was the sdist requirement, now
# "sdist"), "cuda_arch" and vocab/ added. Readers need only the fields schema 1 had.
SCHEMA_VERSION = 2
CMAKE_FLAGS = (
    "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=ON", "-DBUILD_SHARED_LIBS=OFF",
    "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_TOOLS=ON",
    "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_BUILD_UI=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_OPENSSL=OFF", "-DLLAMA_BUILD_NUMBER=0", f"-DLLAMA_BUILD_COMMIT={LLAMA_CPP_COMMIT}",
)  # fmt: skip
CUDA_FLAG = "-DGGML_CUDA=ON"
# GCC and Clang honour an explicit -mno-X over -march=native's X whatever their order, so these
# remove the AMX macros (and ggml's AMX buffer type) from a GGML_NATIVE build.
_NO_AMX = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
NO_AMX_FLAGS = (f"-DCMAKE_C_FLAGS={_NO_AMX}", f"-DCMAKE_CXX_FLAGS={_NO_AMX}")
CUDA_ARCH_FLAG = "-DCMAKE_CUDA_ARCHITECTURES"
_SUMMARY_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx_vnni", "avx512f", "avx512bw", "avx512vl",
    "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16", "asimd", "asimddp", "sve",
    "i8mm",
)  # fmt: skip
_NINJA_PROGRESS = re.compile(r"^\[(\d+)/(\d+)\]")
_LOG_TAIL_LINES = 8


@dataclass(frozen=True, slots=True)
class BuildTools:
    cmake: Path
    ninja: Path


# --- the machine -----------------------------------------------------------------------------


def choose_backend(cuda: bool | None) -> str:
    """``cuda`` or ``cpu``: explicit when asked, else CUDA only with nvcc *and* a GPU."""
    if cuda is None:
        cuda = shutil.which("nvcc") is not None and gpu_present()
    return "cuda" if cuda else "cpu"


def _find_tool(name: str) -> Path | None:
    """The tool in the venv beside ``sys.executable`` (the cmake/ninja PyPI packages), else PATH."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    return Path(found) if found else None


def _compiler_problem() -> str | None:
    for env, names in (("CC", ("cc", "gcc", "clang")), ("CXX", ("c++", "g++", "clang++"))):
        chosen = os.environ.get(env)
        candidates = (chosen,) if chosen else names
        if not any(shutil.which(c) for c in candidates):
            return f"a {env} compiler (looked for {', '.join(candidates)}; `apt-get install g++`)"
    return None


def find_build_tools(backend: str) -> BuildTools:
    """cmake, ninja and a C/C++ compiler (and nvcc for CUDA), or EnvironmentProblem naming what
    is missing and how to get it."""
    cmake, ninja = _find_tool("cmake"), _find_tool("ninja")
    missing = [
        f"{name} (a servelab dependency: `{sys.executable} -m pip install {name}`)"
        for name, found in (("cmake", cmake), ("ninja", ninja))
        if found is None
    ]
    if (problem := _compiler_problem()) is not None:
        missing.append(problem)
    if backend == "cuda" and shutil.which("nvcc") is None:
        missing.append("nvcc for the CUDA backend (install the CUDA toolkit, or drop --cuda)")
    if missing or cmake is None or ninja is None:
        raise EnvironmentProblem(f"cannot build llama.cpp: missing {'; '.join(missing)}")
    return BuildTools(cmake=cmake, ninja=ninja)


# --- installed engines -----------------------------------------------------------------------


# --- building --------------------------------------------------------------------------------


def parse_ninja_progress(line: str) -> tuple[int, int] | None:
    """``(done, total)`` from a ninja status line such as ``[12/218] Building CXX object ...``."""
    match = _NINJA_PROGRESS.match(line)
    return (int(match.group(1)), int(match.group(2))) if match else None


def _log_tail(log_path: Path) -> str:
    with log_path.open(encoding="utf-8", errors="replace") as handle:
        tail = deque((s for line in handle if (s := line.rstrip())), maxlen=_LOG_TAIL_LINES)
    return "\n".join(f"  | {line}" for line in tail)


def _failure(step: str, detail: str, log_path: Path) -> BuildError:
    """Keep the log as last-failed-build.log and describe the failure in one line plus a tail."""
    kept = engines_root() / "last-failed-build.log"
    kept.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(log_path, kept)
    return BuildError(f"llama.cpp {step} failed ({detail}); log: {kept}\n{_log_tail(kept)}")


def run_logged(
    step: str,
    argv: Sequence[str],
    log: TextIO,
    log_path: Path,
    on_line: Callable[[str], None],
    env: Mapping[str, str] | None = None,
) -> None:
    """Run ``argv`` (no shell), streaming each output line to ``log`` and ``on_line``; a non-zero
    exit raises BuildError naming ``step``, the exit code and the kept log."""
    log.write(f"$ {shlex.join(argv)}\n")
    log.flush()
    pipe = subprocess.PIPE
    try:
        proc = subprocess.Popen(
            list(argv), stdout=pipe, stderr=subprocess.STDOUT, text=True, errors="replace", env=env
        )
    except OSError as exc:
        log.write(f"cannot start: {exc}\n")
        log.flush()
        raise _failure(step, f"cannot start {argv[0]}: {exc.strerror}", log_path) from exc
    with proc:
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                log.write(line)
                on_line(line)
        except BaseException:
            proc.kill()  # an interrupt must not leave a compiler running on a deleted tree
            raise
    log.write(f"# {step} exited with {proc.returncode}\n")
    log.flush()
    if proc.returncode != 0:
        raise _failure(step, f"exit code {proc.returncode}", log_path)


def _status(console: Console, enabled: bool, text: str) -> AbstractContextManager[object]:
    return console.status(text) if enabled else nullcontext()


def _extract_logged(pack: Path, dest: Path, log_path: Path) -> None:
    try:
        extract_pack(pack, dest)
    except (tarfile.TarError, OSError) as exc:
        with log_path.open("a", encoding="utf-8") as log:
            log.write(f"extracting {pack}: {exc}\n")
        raise _failure("extract", str(exc), log_path) from exc


def _jobs() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _progress(enabled: bool, console: Console) -> Progress:
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    return Progress(*columns, TimeElapsedColumn(), console=console, disable=not enabled)


def cmake_flags(arch: str | None, flags: Sequence[str] | None = None) -> list[str]:
    """The configure flags: CMAKE_FLAGS, NO_AMX_FLAGS on a CPU with AMX (``flags``: the CPU's,
    this machine's by default), plus the CUDA backend for ``arch`` when given."""
    no_amx = NO_AMX_FLAGS if has_amx(cpu_flags() if flags is None else flags) else ()
    return [*CMAKE_FLAGS, *no_amx, *([CUDA_FLAG, f"{CUDA_ARCH_FLAG}={arch}"] if arch else [])]


def _compile(
    tools: BuildTools, work: Path, arch: str | None, log_path: Path, bar: Progress
) -> None:
    src, build = work / "src", work / "build"
    configure = [str(tools.cmake), "-S", str(src), "-B", str(build), *cmake_flags(arch)]
    build_argv = [str(tools.cmake), "--build", str(build), f"-j{_jobs()}", "--target", *TOOLS]
    # The flags stay exactly as documented: ninja is found through PATH, not CMAKE_MAKE_PROGRAM.
    path = os.pathsep.join([str(tools.ninja.parent), os.environ.get("PATH", os.defpath)])
    env = {**os.environ, "PATH": path}
    with log_path.open("a", encoding="utf-8") as log:
        step = bar.add_task("configuring", total=None)
        run_logged("configure", configure, log, log_path, lambda _line: None, env)
        bar.update(step, total=1, completed=1)
        task = bar.add_task(f"building {', '.join(TOOLS)}", total=None)
        shown: list[int] = []
        on_line = lambda line: _advance(bar, task, line, shown)  # noqa: E731
        run_logged("build", build_argv, log, log_path, on_line, env)


def _advance(bar: Progress, task: Any, line: str, shown: list[int]) -> None:
    if (done := parse_ninja_progress(line)) is not None:
        bar.update(task, completed=done[0], total=done[1])
        # Without a terminal (CI logs) the bar draws nothing: print every tenth instead.
        tenth = done[0] * 10 // max(done[1], 1)
        if not bar.disable and not bar.console.is_terminal and tenth not in shown:
            shown.append(tenth)
            bar.console.print(f"building llama.cpp: {done[0]}/{done[1]} steps", markup=False)


@dataclass(frozen=True, slots=True)
class _Build:
    """What one build is: its pack, backend, CUDA arch (None for CPU) and destination."""

    pack: PackInfo
    backend: str
    arch: str | None
    dest: Path


def _copy_binaries(work: Path, stage: Path, dest: Path) -> dict[str, dict[str, str | int]]:
    binaries: dict[str, dict[str, str | int]] = {}
    for tool in TOOLS:
        built = work / "build" / "bin" / tool
        if not built.is_file():
            raise _failure("install", f"the build produced no {built}", stage / "build.log")
        shutil.copy2(built, stage / "bin" / tool)
        binaries[tool] = {
            "path": str(dest / "bin" / tool),
            "sha256": sha256_file(built),
            "size_bytes": built.stat().st_size,
        }
    return binaries


def _copy_vocab(work: Path, stage: Path) -> None:
    """Copy VOCAB_FILES from the extracted pack into ``stage/vocab`` (synthetic models use them)."""
    (stage / VOCAB_DIR).mkdir()
    for filename in VOCAB_FILES.values():
        found = work / "src" / "models" / filename
        if not found.is_file():
            raise _failure("install", f"the pack has no models/{filename}", stage / "build.log")
        shutil.copy2(found, stage / VOCAB_DIR / filename)


def _stage(work: Path, stage: Path, build: _Build, seconds: float) -> None:
    """Copy the binaries and vocab files into ``stage`` and write ``stage/install.json``."""
    binaries = _copy_binaries(work, stage, build.dest)
    _copy_vocab(work, stage)
    flags = cpu_flags()
    pack = build.pack
    meta = {
        "schema_version": SCHEMA_VERSION,
        "kind": KIND,
        "version": SDIST_VERSION,
        "sdist": SDIST_REQUIREMENT,
        "source": {"path": str(pack.path), "sha256": pack.sha256, "bytes": pack.size_bytes},
        "commit": LLAMA_CPP_COMMIT,
        "backend": build.backend,
        "cuda_arch": build.arch,
        "cpu_key": cpu_key(),
        "cpu_flags_summary": [f for f in _SUMMARY_FLAGS if f in flags],
        "machine": platform.machine(),
        "cmake_flags": cmake_flags(build.arch),
        "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "build_duration_s": round(seconds, 1),
        "binaries": binaries,
        "vocab": dict(VOCAB_FILES),
    }
    write_json_atomic(stage / "install.json", meta)


def _build_and_install(
    build: _Build, tools: BuildTools, console: Console, progress: bool
) -> InstalledEngine:
    dest = build.dest
    remove_stale(dest.parent)
    work = Path(tempfile.mkdtemp(prefix=f".build-{os.getpid()}-", dir=dest.parent))
    stage = work / "stage"
    (stage / "bin").mkdir(parents=True)
    log_path = stage / "build.log"
    label = f"{build.backend} {build.arch}" if build.arch else build.backend
    log_path.write_text(f"# servelab build of {build.pack.path} ({label})\n", encoding="utf-8")
    started = time.monotonic()
    try:
        with _status(console, progress, f"extracting {build.pack.path.name}"):
            _extract_logged(build.pack.path, work / "src", log_path)
        with _progress(progress, console) as bar:
            _compile(tools, work, build.arch, log_path, bar)
        _stage(work, stage, build, time.monotonic() - started)
        move_into_place(stage, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    engine = load_installed(dest)
    assert engine is not None
    return engine


def pack_source(out: Path, progress: bool = True) -> PackInfo:
    """Fetch the sdist (once) and write its slim pack to ``out``."""
    sdist = fetch_sdist(Console(stderr=True), progress)
    return pack_llamacpp(sdist, SDIST_VERSION, out, progress=progress)


def _default_pack(console: Console, progress: bool) -> PackInfo:
    """The pack in the cache made from the pinned sdist, made now if missing or stale."""
    path = default_pack_path()
    if path.is_file():
        try:
            info = check_pack(path)
        except UsageError:
            info = None
        if info is not None and info.sdist_sha256 == SDIST_SHA256:
            return info
    return pack_source(path, progress)


def install_llamacpp(
    cuda: bool | None = None,
    force: bool = False,
    progress: bool = True,
    source: Path | None = None,
) -> InstalledEngine:
    """Build and install llama.cpp's tools for this machine from ``source`` (a pack), else from
    the fetched sdist's pack (idempotent; ``force`` rebuilds)."""
    console = Console(stderr=True)
    backend = choose_backend(cuda)
    arch = cuda_arch() if backend == "cuda" else None
    pack = check_pack(source) if source is not None else None
    dest = engine_dir(backend, arch=arch)
    existing = load_installed(dest)
    if existing is not None and not force:
        if progress:
            console.print(f"llama.cpp {LLAMA_CPP_COMMIT} ({dest.name}) is already installed")
        return existing
    tools = find_build_tools(backend)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(dest.parent / ".install.lock"):
        existing = load_installed(dest)
        if existing is not None and not force:
            return existing
        pack = pack or _default_pack(console, progress)
        return _build_and_install(_Build(pack, backend, arch, dest), tools, console, progress)
