"""A quick measurement of this machine's memory bandwidth and compute, for CPU rooflines.

Owns the ``host-cpu (measured)`` hardware entry: the hardware catalog lists GPUs and Apple
chips, but a run on a plain CPU still deserves a "% of roofline". Bandwidth is a STREAM-style
copy of a 256 MiB numpy array (bytes read + written, best of 5); compute is a float32 matrix
product (best of 3). About a second in all; recorded in the manifest at run start.
"""

from __future__ import annotations

import time

import numpy as np
import psutil

from servelab.theory.hardware import Hardware

_COPY_BYTES = 256 * 2**20
_MATMUL_N = 1024


def measure_host() -> Hardware:
    n = _COPY_BYTES // 4
    src = np.ones(n, dtype=np.float32)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    bandwidth_gbs = 2 * _COPY_BYTES / best / 1e9
    a = np.ones((_MATMUL_N, _MATMUL_N), dtype=np.float32)
    best_mm = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        a @ a
        best_mm = min(best_mm, time.perf_counter() - t0)
    tflops = 2 * _MATMUL_N**3 / best_mm / 1e12
    return Hardware(
        name="host-cpu (measured)",
        bandwidth_gbs=round(bandwidth_gbs, 2),
        memory_bytes=psutil.virtual_memory().total,
        fp16_tflops=round(tflops, 4),
        note="measured by servelab: numpy copy bandwidth, float32 matmul",
        source="measured",
    )
