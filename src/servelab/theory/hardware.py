"""The hardware catalog: memory bandwidth, capacity and dense peak FLOPs of common devices.

Owns the built-in entries, user entries parsed from a dict (the file is read in
``servelab.models.arch_files``), name lookup and matching an ``nvidia-smi`` GPU name to an
entry. Figures are vendor datasheet peaks: bandwidth in GB/s (10^9 bytes), capacity in bytes,
``fp16_tflops`` dense FP16/BF16 tensor throughput with FP32 accumulate (no sparsity). Achieved
bandwidth is typically 70-90 % of these peaks, which is why reports show "% of roofline". Pure.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from servelab.errors import UsageError

GIB = 1024**3
GB = 10**9


@dataclass(frozen=True, slots=True)
class Hardware:
    name: str
    bandwidth_gbs: float
    memory_bytes: int
    fp16_tflops: float
    note: str = ""
    source: str = "built-in"

    @property
    def bandwidth_bytes_s(self) -> float:
        return self.bandwidth_gbs * GB

    @property
    def flops_s(self) -> float:
        return self.fp16_tflops * 1e12


def _hw(name: str, gbs: float, mem: int, tflops: float, note: str = "") -> Hardware:
    return Hardware(name, gbs, mem, tflops, note)


CATALOG: tuple[Hardware, ...] = (
    _hw("rtx-3060-12gb", 360, 12 * GIB, 25.6, "GA106; FP16-accumulate rate is 2x"),
    _hw("rtx-3090", 936, 24 * GIB, 35.6, "GA102; FP16-accumulate rate is 2x"),
    _hw("rtx-4090", 1008, 24 * GIB, 165.2, "AD102; FP16-accumulate rate is 2x"),
    _hw("a100-40gb", 1555, 40 * GIB, 312, "SXM4 HBM2"),
    _hw("a100-80gb", 2039, 80 * GIB, 312, "SXM4 HBM2e (PCIe: 1935 GB/s)"),
    _hw("h100-sxm", 3350, 80 * GIB, 989.4, "HBM3"),
    _hw("h100-pcie", 2000, 80 * GIB, 756.5, "HBM2e"),
    _hw("h200", 4800, 141 * GB, 989.4, "SXM HBM3e"),
    _hw("dgx-spark-gb10", 273, 128 * GB, 62.5, "LPDDR5x unified; FLOPs estimated from "
        "NVIDIA's 1 PFLOP sparse FP4"),
    _hw("apple-m4-max", 546, 128 * GB, 18.4, "40-core GPU; 32-core variant has 410 GB/s"),
    _hw("apple-m5-max", 614, 128 * GB, 70.0, "40-core GPU with neural accelerators; FLOPs "
        "estimated"),
)  # fmt: skip

# nvidia-smi names -> catalog names; the memory (MiB) separates A100 40/80 GB
_GPU_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"rtx 3060", "rtx-3060-12gb"),
    (r"rtx 3090", "rtx-3090"),
    (r"rtx 4090", "rtx-4090"),
    (r"a100.*80|a100", "a100"),
    (r"h100.*pcie", "h100-pcie"),
    (r"h100", "h100-sxm"),
    (r"h200", "h200"),
    (r"gb10|dgx spark", "dgx-spark-gb10"),
)


class _UserEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    bandwidth_gbs: float = Field(gt=0, description="peak memory bandwidth, GB/s")
    memory_gb: float = Field(gt=0, description="capacity, GB (10^9 bytes)")
    fp16_tflops: float = Field(gt=0, description="dense FP16 peak, TFLOPS")
    note: str = ""


class _UserFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = 1
    hardware: list[_UserEntry] = Field(default_factory=list)


def hardware_from_user_dict(data: Any, *, where: str) -> tuple[Hardware, ...]:
    """Entries from a parsed hardware file: ``{schema_version: 1, hardware: [{name,
    bandwidth_gbs, memory_gb, fp16_tflops, note}]}``."""
    try:
        parsed = _UserFile.model_validate(data or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        path = ".".join(str(p) for p in first["loc"])
        raise UsageError(f"{where}: {path}: {first['msg']}; fix the hardware file") from exc
    return tuple(
        Hardware(e.name, e.bandwidth_gbs, int(e.memory_gb * GB), e.fp16_tflops, e.note, where)
        for e in parsed.hardware
    )


def find_hardware(name: str, user: Iterable[Hardware] = ()) -> Hardware:
    """A catalog or user entry by name (user entries win); unknown names list the known ones."""
    entries = {h.name: h for h in (*CATALOG, *user)}
    key = name.strip().lower()
    found = entries.get(key) or entries.get(name)
    if found is None:
        raise UsageError(
            f"unknown hardware {name!r}; known: {', '.join(entries)} (add your own in the "
            "hardware file)"
        )
    return found


def match_gpu(gpu_name: str, memory_mib: int | None = None) -> Hardware | None:
    """The catalog entry for an ``nvidia-smi`` name such as ``NVIDIA A100-SXM4-80GB``."""
    lowered = gpu_name.lower()
    for pattern, entry in _GPU_PATTERNS:
        if re.search(pattern, lowered):
            if entry == "a100":
                big = "80" in lowered or (memory_mib or 0) > 50_000
                entry = "a100-80gb" if big else "a100-40gb"
            return find_hardware(entry)
    return None


def parse_memory_mib(text: str) -> int | None:
    """``"81920 MiB"`` (nvidia-smi's memory.total) -> 81920."""
    match = re.match(r"\s*(\d+)", text or "")
    return int(match.group(1)) if match else None
