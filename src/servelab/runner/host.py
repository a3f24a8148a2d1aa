"""What machine a run happened on: CPU, memory, OS, GPU and driver, and how busy it was.

Owns host facts for the manifest and the pre-flight look at the machine's load. Reads /proc via
psutil and asks ``nvidia-smi`` (argument list, short timeout) only when it is on PATH.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from typing import TypedDict

import psutil

from servelab.store import ClientCeiling, Gpu, Host
from servelab.store.selftest_file import saved_ceiling

ENGINE_PROCESS_NAMES = ("llama-server", "vllm", "sglang", "ollama", "mlx_lm.server")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpus() -> list[dict[str, str]]:
    """GPUs from nvidia-smi, or [] when there is none (or no nvidia-smi)."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return []
    if out.returncode != 0:
        return []
    rows = [line.split(", ") for line in out.stdout.strip().splitlines() if line.strip()]
    return [
        {"name": r[0], "driver": r[1], "memory": r[2] if len(r) > 2 else ""}
        for r in rows
        if len(r) >= 2
    ]


class ForeignProcess(TypedDict):
    pid: int
    name: str
    cmdline: str  # the first 200 characters


def foreign_engines(own_pids: set[int] | None = None) -> list[ForeignProcess]:
    """Other LLM engine processes on this machine (they would share the CPU with ours)."""
    found: list[ForeignProcess] = []
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        if own_pids and proc.info["pid"] in own_pids:
            continue
        name = proc.info["name"] or ""
        argv = list(proc.info["cmdline"] or [])
        if is_engine_process(name, argv):
            cmd = " ".join(argv)
            found.append(ForeignProcess(pid=proc.info["pid"], name=name, cmdline=cmd[:200]))
    return found


def is_engine_process(name: str, argv: list[str]) -> bool:
    """Whether a process is an engine: its name or program (argv[0]'s file name) names one, or
    it runs an engine's module (``python -m vllm.entrypoints...``). A program that merely lives
    under an engine's folder (``.../engines/vllm/venv/bin/python -m pip install``) is not."""
    program = os.path.basename(argv[0]) if argv else ""
    if any(n in name or n in program for n in ENGINE_PROCESS_NAMES):
        return True
    module = next((argv[i + 1] for i in range(len(argv) - 1) if argv[i] == "-m"), "")
    return any(module == n or module.startswith(n + ".") for n in ENGINE_PROCESS_NAMES)


def host_facts() -> Host:
    """This machine, as the manifest records it."""
    mem = psutil.virtual_memory()
    return Host(
        hostname=platform.node(),
        os=platform.platform(),
        python=platform.python_version(),
        machine=platform.machine(),
        cpu_model=cpu_model(),
        cpu_count_logical=psutil.cpu_count(logical=True),
        cpu_count_physical=psutil.cpu_count(logical=False),
        memory_total_bytes=mem.total,
        memory_available_bytes=mem.available,
        gpus=tuple(Gpu.model_validate(g) for g in gpus()),
        loadavg=os.getloadavg(),
        **_ceiling(),
    )


def _ceiling() -> dict[str, ClientCeiling]:
    """The saved selftest ceiling of this machine, as a ``Host`` field (absent when none)."""
    saved = saved_ceiling()
    if saved is None or not saved.fits_this_host():
        return {}
    ceiling = ClientCeiling(
        tokens_per_s=saved.tokens_per_s, streams=saved.streams,
        measured_unix_s=saved.created_unix_s,
    )  # fmt: skip
    return {"client_ceiling": ceiling}
