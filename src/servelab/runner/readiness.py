"""Readiness: can a role's promoted configuration start on this machine, now?

Owns the checks run before a promoted configuration is started (``servelab ready ROLE``, and
first thing in ``servelab verify``), the ones published runbooks do by hand: the machine lock
can be taken (else which run holds it), the port its command line binds is free (else who
listens there), no other engine process is resident, the GPUs have the memory it needs (theory:
weights plus the KV cache its command line allocates), and the model file and engine binary are
the ones promoted (sha256). Every check gives one finding; a failed check is blocking, a passed
or skipped one is informational, so the findings read as a checklist.

Reuses the preflight's machine lock and port check and the host's engine scan. Must not start
anything; it holds the machine lock only when the caller asks (``hold=True``: verify keeps it
for its bench) and then the caller releases it.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

from servelab.engines.process import check_port_free
from servelab.engines.registry import find_engine_class
from servelab.errors import EnvironmentProblem, ServelabError, UsageError
from servelab.models import file_sha256
from servelab.models.arch_files import load_architecture
from servelab.runner.host import foreign_engines
from servelab.runner.preflight import MachineLock
from servelab.runner.promote import load_promotion, load_registry
from servelab.theory.kvcache import KvSettings, llama_kv_allocation
from servelab.theory.kvtypes import cache_type
from servelab.theory.server_flags import parse_server_flags, server_settings, total_context

if TYPE_CHECKING:
    from servelab.runner.lifecycle import Finding, Preflight, PreflightCheck
    from servelab.runner.promote import PromotedEngine, PromotionRecord

MIB = 2**20
GIB = 2**30
COMPUTE_MARGIN_BYTES = 512 * MIB  # compute buffers and the CUDA context, beside weights and KV
FLOOR_BYTES = 1 * GIB  # the need stated when there is no model file to size
UNSIZED_FACTOR = 1.2  # weights x this when the command line gives no KV prediction
SMI_TIMEOUT_S = 10


@dataclass(frozen=True, slots=True)
class ReadyFinding:
    """One check's outcome: ``blocking`` when the configuration should not start."""

    kind: str  # machine_lock, port, resident_engine, gpu_memory, model_file, engine_binary, launch
    detail: str
    advice: str = ""
    blocking: bool = False

    def to_json(self) -> dict[str, str | bool]:
        return {"kind": self.kind, "detail": self.detail, "advice": self.advice,
                "blocking": self.blocking}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Readiness:
    """Every finding for one role's promoted configuration, in check order."""

    role: str
    findings: tuple[ReadyFinding, ...]

    @property
    def blocking(self) -> tuple[ReadyFinding, ...]:
        return tuple(f for f in self.findings if f.blocking)

    @property
    def ready(self) -> bool:
        return not self.blocking

    def to_json(self) -> dict[str, object]:
        return {"role": self.role, "ready": self.ready,
                "findings": [f.to_json() for f in self.findings]}  # fmt: skip


@dataclass(frozen=True, slots=True)
class GpuMemory:
    """One NVIDIA GPU's memory, as ``nvidia-smi`` reports it (MiB)."""

    index: str
    name: str
    total_mib: float
    free_mib: float


@dataclass(frozen=True, slots=True)
class MemoryNeed:
    """What the promoted configuration needs on the GPUs, and how that was found."""

    need_bytes: int
    basis: str


# -- the checks --------------------------------------------------------------------------------
def lock_finding(lock: MachineLock, holder: Path) -> ReadyFinding:
    """Take ``lock`` (non-blocking), writing ``holder`` into it; say who holds it otherwise."""
    taken_by = lock.acquire(holder)
    if taken_by is None:
        return ReadyFinding("machine_lock", f"the machine lock ({lock.path}) can be taken")
    return ReadyFinding(
        "machine_lock", f"another servelab run holds the machine lock ({taken_by})",
        "wait for that run to finish (a run holds the lock from preflight to its end)", True,
    )  # fmt: skip


def listen_address(argv: Sequence[str]) -> tuple[str, int] | None:
    """Where a recorded launch command listens (``--host``, ``--port``; servelab owns both)."""
    if "--port" not in argv[:-1]:
        return None
    port = argv[argv.index("--port") + 1]
    host = argv[argv.index("--host") + 1] if "--host" in argv[:-1] else "127.0.0.1"
    return (host, int(port)) if port.isdigit() else None


def port_holder(port: int) -> str | None:
    """The process listening on ``port`` (best effort: None when the OS will not say)."""
    try:
        conns = psutil.net_connections(kind="inet")
    except (psutil.Error, OSError):
        return None
    for c in sorted(conns, key=lambda c: c.status != psutil.CONN_LISTEN):
        if c.laddr and c.laddr.port == port and not c.raddr and c.pid:
            with contextlib.suppress(psutil.Error):
                return f"{psutil.Process(c.pid).name()} (pid {c.pid})"
            return f"pid {c.pid}"
    return None


def port_finding(host: str, port: int) -> ReadyFinding:
    try:
        check_port_free(host, port)
    except EnvironmentProblem:
        who = port_holder(port)
        return ReadyFinding(
            "port", f"port {port} on {host} is in use" + (f" by {who}" if who else ""),
            f"stop what listens on port {port}, or promote again with --port N", True,
        )  # fmt: skip
    return ReadyFinding("port", f"port {port} on {host} is free")


def _ancestors() -> set[int]:
    """This process and its parents: the only engine-like processes that do not count (an
    engine a caller started as a child is resident like any other)."""
    me = psutil.Process()
    return {me.pid, *(p.pid for p in me.parents())}


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def engine_finding() -> ReadyFinding:
    others = [o for o in foreign_engines(_ancestors()) if _alive(o["pid"])]
    if not others:
        return ReadyFinding("resident_engine", "no other engine process is running")
    listed = "; ".join(f"{o['name']} (pid {o['pid']}): {o['cmdline'][:120]}" for o in others)
    return ReadyFinding(
        "resident_engine", f"{len(others)} other engine process(es) resident: {listed}",
        "stop them (kill PID) first: engines on one machine share its cores and memory, and "
        "the promoted one may not fit or will measure slow", True,
    )  # fmt: skip


def parse_gpu_memory(text: str) -> list[GpuMemory]:
    """``nvidia-smi --query-gpu=index,name,memory.total,memory.free --format=csv,noheader,
    nounits`` output, one GPU per line (lines that do not read are left out)."""
    out = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 4 and _number(parts[2]) is not None and _number(parts[3]) is not None:
            out.append(GpuMemory(parts[0], parts[1], float(parts[2]), float(parts[3])))
    return out


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def gpu_memory() -> list[GpuMemory] | None:
    """This machine's NVIDIA GPUs; None when there is no ``nvidia-smi`` or it fails."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        done = subprocess.run(
            [smi, "--query-gpu=index,name,memory.total,memory.free",
             "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=SMI_TIMEOUT_S, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_gpu_memory(done.stdout) if done.returncode == 0 else None


def visible_gpus(gpus: Sequence[GpuMemory], env: Mapping[str, str]) -> list[GpuMemory]:
    """The GPUs an engine with ``env`` sees: ``CUDA_VISIBLE_DEVICES`` by index (a list of
    UUIDs is not filtered; an empty value hides them all)."""
    devices = env.get("CUDA_VISIBLE_DEVICES")
    if devices is None:
        return list(gpus)
    wanted = [d.strip() for d in devices.split(",") if d.strip()]
    if not all(d.isdigit() for d in wanted):
        return list(gpus)
    return [g for g in gpus if g.index in wanted]


def _size_bytes(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _kv_bytes(model: Path, argv: Sequence[str]) -> int | None:
    """The KV (and recurrent state) bytes llama.cpp allocates for this command line, from the
    model's architecture (None when the command line or model does not read as one)."""
    try:
        arch = load_architecture(str(model))
        s = server_settings(parse_server_flags(shlex.join(argv[1:])))
        settings = KvSettings(
            n_ctx=total_context(s, arch.n_ctx_train), n_seq=s.n_parallel,
            type_k=cache_type(s.cache_type_k), type_v=cache_type(s.cache_type_v),
            unified=s.kv_unified, n_batch=s.n_batch, n_ubatch=s.n_ubatch, swa_full=s.swa_full,
            flash_attn=s.flash_attn,
        )  # fmt: skip
        return llama_kv_allocation(arch, settings).total_bytes
    except (ServelabError, ValueError, OSError):
        return None


def memory_need(model_path: str | None, argv: Sequence[str]) -> MemoryNeed:
    """Weights + KV (theory) + a compute margin; weights x 1.2 + margin when the command line
    gives no KV prediction; a 1 GiB floor when there is no model file to size."""
    path = Path(model_path) if model_path else None
    if path is None or not path.exists():
        return MemoryNeed(FLOOR_BYTES, "no model file to size: a stated 1 GiB floor")
    weights = _size_bytes(path)
    kv = _kv_bytes(path, argv) if argv else None
    if kv is None:
        return MemoryNeed(
            int(weights * UNSIZED_FACTOR) + COMPUTE_MARGIN_BYTES,
            f"model {_gib(weights)} x {UNSIZED_FACTOR} + 512 MiB (no KV prediction for its "
            "command line)",
        )  # fmt: skip
    return MemoryNeed(
        weights + kv + COMPUTE_MARGIN_BYTES,
        f"weights {_gib(weights)} + KV {_gib(kv)} (theory, from its command line) + 512 MiB",
    )  # fmt: skip


def _gib(n_bytes: float) -> str:
    return f"{n_bytes / GIB:.2f} GiB"


def gpu_finding(gpus: Sequence[GpuMemory] | None, need: MemoryNeed) -> ReadyFinding:
    """Free memory on the GPUs the engine sees (together: llama.cpp splits layers over all
    of them) against what the configuration needs."""
    if gpus is None:
        return ReadyFinding("gpu_memory", "no GPU (no nvidia-smi answer): skipped")
    if not gpus:
        return ReadyFinding("gpu_memory", "no GPU visible to the engine: skipped")
    free = sum(g.free_mib for g in gpus) * MIB
    listed = ", ".join(
        f"GPU {g.index} {g.name}: {_gib(g.free_mib * MIB)} free of {_gib(g.total_mib * MIB)}"
        for g in gpus
    )
    if free >= need.need_bytes:
        return ReadyFinding("gpu_memory", f"{listed}; needs about {_gib(need.need_bytes)} "
                                          f"({need.basis})")  # fmt: skip
    return ReadyFinding(
        "gpu_memory", f"{listed}: {_gib(free)} free in all, the promoted configuration needs "
        f"about {_gib(need.need_bytes)} ({need.basis})",
        "stop what holds GPU memory (nvidia-smi lists it) or give the engine other GPUs "
        "(CUDA_VISIBLE_DEVICES)", True,
    )  # fmt: skip


def file_finding(kind: str, label: str, path: str | None, sha256: str | None) -> ReadyFinding:
    """The promoted file is there and is the same file (sha256, remembered by size and
    mtime so a large model is hashed once)."""
    if not path:
        return ReadyFinding(kind, f"no {label} recorded: skipped")
    p = Path(path)
    if not p.exists():
        return ReadyFinding(kind, f"the promoted {label} {path} is missing",
                            f"restore it, or promote again from a run with the {label} "
                            "this machine has", True)  # fmt: skip
    if p.is_dir() or not sha256:
        return ReadyFinding(kind, f"{label} {path} is present (no sha256 to compare)")
    try:
        actual = file_sha256(p)
    except OSError as exc:
        return ReadyFinding(kind, f"{label} {path} cannot be read ({exc.strerror})",
                            "make it readable by this user", True)  # fmt: skip
    if actual != sha256:
        return ReadyFinding(
            kind, f"{label} {path} is not the promoted one: sha256 {actual[:12]}..., promoted "
            f"{sha256[:12]}...", f"restore the promoted {label}, or promote again from a run "
            "made with this one", True,
        )  # fmt: skip
    return ReadyFinding(kind, f"{label} {path}: sha256 {sha256[:12]}... as promoted")


# -- the whole check -----------------------------------------------------------------------------
def check_readiness(
    record: PromotionRecord,
    *,
    lock: MachineLock | None = None,
    hold: bool = False,
    holder: Path | None = None,
) -> Readiness:
    """Every readiness finding for ``record`` on this machine. ``lock``: the machine lock
    (default: the cache's); with ``hold`` it stays taken when it could be (the caller releases
    it), else it is released at once. ``holder``: what the lock file names while held."""
    machine = lock or MachineLock()
    taken = lock_finding(machine, holder or Path(f"servelab ready {record.role}"))
    if not hold:
        machine.release()
    return Readiness(record.role, (taken, *launch_findings(record.engine)))


def launch_findings(engine: PromotedEngine) -> list[ReadyFinding]:
    """What starting ``engine`` needs of this machine: its port, no other engine, GPU memory,
    its model and binary (nothing for an engine servelab does not start)."""
    cls = find_engine_class(engine.kind or "")
    if cls is not None and not cls.managed:
        return [ReadyFinding(
            "launch", f"servelab starts no process for engine kind {engine.kind!r} (an "
            "endpoint): no port, resident-engine, GPU or file checks",
        )]  # fmt: skip
    address = listen_address(engine.argv)
    binary = engine.binary or (engine.argv[0] if engine.argv else None)
    return [
        *([port_finding(*address)] if address else []),
        engine_finding(),
        _gpu_check(engine),
        file_finding("model_file", "model", engine.model_path, engine.model_sha256),
        file_finding("engine_binary", "engine binary", binary, engine.binary_sha256),
    ]


def _gpu_check(engine: PromotedEngine) -> ReadyFinding:
    found = gpu_memory()
    shown = visible_gpus(found, {**os.environ, **engine.env}) if found is not None else None
    need = memory_need(engine.model_path, engine.argv) if shown else MemoryNeed(0, "")
    return gpu_finding(shown, need)


def role_readiness(registry: Path, role: str, *, lock: MachineLock | None = None) -> Readiness:
    """``servelab ready ROLE``: the readiness of the role's promoted configuration."""
    reg = load_registry(registry)
    if role not in reg.roles:
        raise UsageError(f"no role {role!r} in {registry}; roles: {', '.join(reg.roles)}")
    return check_readiness(load_promotion(registry, role), lock=lock)


@dataclass(frozen=True, slots=True)
class WithReadiness:
    """A preflight that records readiness findings a forced ``verify`` went past, in front of
    the bench's own (they land in the bench run's manifest and report)."""

    inner: Preflight
    findings: tuple[ReadyFinding, ...]

    def check(self, request: PreflightCheck) -> tuple[list[Finding], Callable[[], None]]:
        found, release = self.inner.check(request)
        return [*(f.to_json() for f in self.findings), *found], release
