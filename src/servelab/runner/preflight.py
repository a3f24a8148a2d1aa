"""Preflight: is this machine fit to measure on, before anything is launched?

Owns the checks run before an experiment starts and the machine lock that keeps two servelab
experiments from measuring at once. Each finding names what was seen and what to do; blocking
findings refuse the run unless ``--force``, and every finding is recorded in the manifest and
the report either way.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import resource
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TypedDict

import psutil

from servelab.engines.process import check_port_free
from servelab.errors import EnvironmentProblem
from servelab.paths import cache_dir
from servelab.runner.host import foreign_engines

DEFAULT_MAX_FOREIGN_CPU = 0.25  # share of the whole machine one other process may use
CPU_SAMPLE_S = 0.5
FD_HEADROOM = 64  # descriptors besides one socket per request: logs, rows, pipes, the loop


def ensure_fd_limit(concurrency: int) -> int:
    """Make sure ``concurrency`` requests can each open a socket; return the soft limit now.

    Raises the soft ``RLIMIT_NOFILE`` as far as needed (the hard limit allows it without
    privileges; a launched engine inherits it), and refuses the run when even the hard limit
    is too low, rather than letting requests fail with "Too many open files".
    """
    need = concurrency + FD_HEADROOM
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return soft
    if hard != resource.RLIM_INFINITY and hard < need:
        raise EnvironmentProblem(
            f"{concurrency} requests in flight need about {need} open files, but the hard "
            f"limit is {hard}; raise it to at least {need} (`ulimit -n {need}` as root, "
            "limits.conf, or docker --ulimit nofile) or lower the concurrency"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    return need


class Finding(TypedDict):
    """One preflight finding as the manifest records it (``store.manifest.PreflightFinding``)."""

    kind: str
    detail: str
    advice: str
    blocking: bool


def _finding(kind: str, detail: str, advice: str, blocking: bool = True) -> Finding:
    return {"kind": kind, "detail": detail, "advice": advice, "blocking": blocking}


@dataclass
class MachineLock:
    """An exclusive, non-blocking lock on the machine for one experiment."""

    path: Path = field(default_factory=lambda: cache_dir() / "machine.lock")
    _handle: IO[str] | None = None

    def acquire(self, run_dir: Path) -> str | None:
        """Take the lock; return a description of the holder instead when it is taken."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip()
            handle.close()
            try:
                info = json.loads(holder)
                return f"pid {info.get('pid')}, run {info.get('run_dir')}"
            except ValueError:
                return "another servelab process"
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "run_dir": str(run_dir)}))
        handle.flush()
        self._handle = handle
        return None

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


def _own_family() -> set[int]:
    me = psutil.Process()
    pids = {me.pid}
    pids.update(p.pid for p in me.parents())
    pids.update(p.pid for p in me.children(recursive=True))
    return pids


@dataclass(frozen=True, slots=True)
class BusyProcess:
    """A process other than ours, and the share of the whole machine's CPU it used."""

    pid: int
    name: str
    share: float


@dataclass(frozen=True, slots=True)
class BusyGpu:
    """An NVIDIA GPU in use by something else."""

    index: str
    name: str
    util_pct: float


def busy_processes(max_share: float, sample_s: float = CPU_SAMPLE_S) -> list[BusyProcess]:
    """Processes other than ours using more than ``max_share`` of the machine's CPU."""
    cores = psutil.cpu_count(logical=True) or 1
    own = _own_family()
    procs = [p for p in psutil.process_iter(["pid", "name"]) if p.info["pid"] not in own]
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.cpu_percent(None)
    time.sleep(sample_s)
    busy: list[BusyProcess] = []
    for p in procs:
        try:
            share = p.cpu_percent(None) / 100.0 / cores
        except psutil.Error:
            continue
        if share > max_share:
            busy.append(BusyProcess(int(p.info["pid"]), str(p.info["name"]), round(share, 3)))
    return sorted(busy, key=lambda b: -b.share)


def gpu_busy(max_util_pct: float = 10.0) -> list[BusyGpu]:
    """NVIDIA GPUs in use by something else (empty when there is no nvidia-smi or no GPU)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run(
            [smi, "--query-gpu=index,name,utilization.gpu,memory.used",
             "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return []
    busy: list[BusyGpu] = []
    for line in out.stdout.splitlines() if out.returncode == 0 else []:
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 4 and parts[2].isdigit() and float(parts[2]) > max_util_pct:
            busy.append(BusyGpu(parts[0], parts[1], float(parts[2])))
    return busy


def run_preflight(
    *,
    ports: list[tuple[str, int]],
    model_bytes: int,
    max_foreign_cpu: float = DEFAULT_MAX_FOREIGN_CPU,
    check_engines: bool = True,
) -> list[Finding]:
    findings: list[Finding] = []
    for host, port in ports:
        try:
            check_port_free(host, port)
        except EnvironmentProblem as exc:
            findings.append(_finding("port_taken", str(exc), "free the port or drop `port:`"))
    if check_engines:
        others = foreign_engines(_own_family())
        if others:
            findings.append(_finding(
                "foreign_engine",
                f"{len(others)} other engine process(es) running: "
                + ", ".join(f"{o['name']} (pid {o['pid']})" for o in others),
                "stop them: engines on the same cores slow each other down many-fold",
            ))  # fmt: skip
    for b in busy_processes(max_foreign_cpu):
        findings.append(_finding(
            "busy_cpu",
            f"{b.name} (pid {b.pid}) uses {b.share:.0%} of the CPU "
            f"(limit {max_foreign_cpu:.0%})",
            "wait for it to finish or stop it; it would add noise to every arm",
        ))  # fmt: skip
    for g in gpu_busy():
        findings.append(_finding(
            "busy_gpu", f"GPU {g.index} ({g.name}) is {g.util_pct:.0f} % busy",
            "stop what runs on it",
        ))  # fmt: skip
    available = psutil.virtual_memory().available
    need = int(model_bytes * 1.2) + 256 * 2**20
    if model_bytes and available < need:
        findings.append(_finding(
            "low_memory",
            f"{available / 2**30:.1f} GiB free, the model needs about {need / 2**30:.1f} GiB",
            "close other programs or pick a smaller model",
        ))  # fmt: skip
    load1 = os.getloadavg()[0]
    cores = psutil.cpu_count(logical=True) or 1
    if load1 > cores:
        findings.append(_finding(
            "high_load", f"1-minute load average {load1:.2f} on {cores} cores",
            "the machine was busy a moment ago; numbers may be noisy", blocking=False,
        ))  # fmt: skip
    return findings


def refuse_or_record(findings: Sequence[Mapping[str, object]], force: bool) -> None:
    blocking = [f for f in findings if f.get("blocking")]
    if blocking and not force:
        first = blocking[0]
        more = f" (and {len(blocking) - 1} more finding(s))" if len(blocking) > 1 else ""
        raise EnvironmentProblem(
            f"preflight: {first['detail']}{more}; {first['advice']}, or run anyway with --force "
            "(the findings are then recorded in the report)"
        )
