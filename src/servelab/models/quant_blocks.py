"""Random tensor data written straight in ggml's block formats: Q4_0, Q5_0, Q8_0, Q4_K, Q6_K,
F16 and F32.

Owns the byte layout of each block (as ggml-common.h declares it) and the scale fields that give
the dequantised values a chosen spread: random quants, then every scale set so that the values
have a standard deviation near ``std`` and a mean near zero. Must not do I/O or know tensor names;
``synth_catalog`` picks the type and the spread of each tensor.

The spread comes from the quants (uniform over their range) times the scales: Q4_0 values are
``d * (q - 8)``, Q5_0 ``d * (q - 16)``, Q8_0 ``d * q``, Q4_K ``d * sc * q - dmin * m`` with
``m = round(7.5 * sc)`` so that each sub-block is centred, and Q6_K ``d * sc * (q - 32)``.
Small integer sub-block scales keep ``d`` a normal float16 even for the widest rows. F16 and F32
values are uniform (int8 quants times a scale), not Gaussian: only their spread matters here.

Random bytes come from ``RandomBytes``: windows at random offsets of a seeded 32 MiB pool, because
drawing fresh random numbers runs at a fraction of disk speed on a busy CPU, and a weight's bytes
need only look random to the kernels that read them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numpy as np
import numpy.typing as npt
from gguf import GGMLQuantizationType

Blocks = npt.NDArray[np.uint8]
QUANT_STD = {"Q4_0": 4.61, "Q5_0": 9.23, "Q8_0": 73.6, "Q6_K": 18.47, "Q4_K": 4.61}
_Q4K_SC = (4, 9)  # sub-block scales drawn from [4, 8]: m = round(7.5 * sc) stays under 64
_Q6K_SC = (2, 9)  # int8 sub-block scales drawn from [2, 8]


@dataclass(frozen=True, slots=True)
class BlockFormat:
    """One ggml type: elements per block and bytes per block."""

    name: str
    qtype: GGMLQuantizationType
    block_size: int
    type_size: int

    def row_bytes(self, n_per_row: int) -> int:
        return n_per_row // self.block_size * self.type_size

    def fits(self, n_per_row: int) -> bool:
        return n_per_row % self.block_size == 0


FORMATS: dict[str, BlockFormat] = {
    f.name: f
    for f in (
        BlockFormat("F32", GGMLQuantizationType.F32, 1, 4),
        BlockFormat("F16", GGMLQuantizationType.F16, 1, 2),
        BlockFormat("Q4_0", GGMLQuantizationType.Q4_0, 32, 18),
        BlockFormat("Q5_0", GGMLQuantizationType.Q5_0, 32, 22),
        BlockFormat("Q8_0", GGMLQuantizationType.Q8_0, 32, 34),
        BlockFormat("Q4_K", GGMLQuantizationType.Q4_K, 256, 144),
        BlockFormat("Q6_K", GGMLQuantizationType.Q6_K, 256, 210),
    )
}


class RandomBytes:
    """Seeded random bytes: copies of windows at random offsets of a fixed random pool."""

    POOL_BYTES = 32 << 20

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.pool = np.frombuffer(self.rng.bytes(self.POOL_BYTES), dtype=np.uint8)

    def take(self, n: int) -> Blocks:
        """``n`` fresh (writable) random bytes."""
        out = np.empty(n, dtype=np.uint8)
        window = self.POOL_BYTES // 2
        for start in range(0, n, window):
            size = min(window, n - start)
            offset = int(self.rng.integers(0, self.POOL_BYTES - size + 1))
            out[start : start + size] = self.pool[offset : offset + size]
        return out

    def rows(self, table: Blocks, n: int) -> Blocks:
        """``n`` consecutive rows of ``table`` (wrapping) from a random start: per-block fields
        drawn once per tensor chunk instead of once per block."""
        start = int(self.rng.integers(0, len(table)))
        return np.take(table, np.arange(start, start + n) % len(table), axis=0)


_TABLE_ROWS = 4096


@cache
def _scale_tables() -> tuple[Blocks, Blocks]:
    """Random sub-block scale fields: packed Q4_K (scales and mins) and Q6_K rows."""
    rng = np.random.default_rng(0x5CA1E)
    sc = rng.integers(*_Q4K_SC, size=(_TABLE_ROWS, 8), dtype=np.uint8)
    q4k = pack_q4k_scales(sc, np.rint(sc * 7.5).astype(np.uint8))
    return q4k, rng.integers(*_Q6K_SC, size=(_TABLE_ROWS, 16), dtype=np.uint8)


def _f16_bytes(value: float, n: int) -> Blocks:
    return np.full((n, 1), value, dtype="<f2").view(np.uint8)


def _raw(n_blocks: int, size: int, rng: RandomBytes) -> Blocks:
    return rng.take(n_blocks * size).reshape(n_blocks, size)


def _q4_0(n: int, std: float, rng: RandomBytes) -> Blocks:
    out = _raw(n, 18, rng)
    out[:, 0:2] = _f16_bytes(std / QUANT_STD["Q4_0"], n)
    return out


def _q5_0(n: int, std: float, rng: RandomBytes) -> Blocks:
    out = _raw(n, 22, rng)
    out[:, 0:2] = _f16_bytes(std / QUANT_STD["Q5_0"], n)
    return out


def _q8_0(n: int, std: float, rng: RandomBytes) -> Blocks:
    out = _raw(n, 34, rng)
    qs = out[:, 2:].view(np.int8)
    qs[qs == -128] = -127  # keep the quants symmetric, as ggml's quantiser does
    out[:, 0:2] = _f16_bytes(std / QUANT_STD["Q8_0"], n)
    return out


def pack_q4k_scales(sc: npt.NDArray[np.uint8], m: npt.NDArray[np.uint8]) -> Blocks:
    """The 12-byte ``scales`` field of Q4_K blocks from (n, 8) six-bit scales and mins: the
    inverse of ggml's ``get_scale_min_k4``."""
    out = np.empty((sc.shape[0], 12), dtype=np.uint8)
    out[:, 0:4] = (sc[:, 0:4] & 63) | ((sc[:, 4:8] >> 4) << 6)
    out[:, 4:8] = (m[:, 0:4] & 63) | ((m[:, 4:8] >> 4) << 6)
    out[:, 8:12] = (sc[:, 4:8] & 15) | ((m[:, 4:8] & 15) << 4)
    return out


def _q4_k(n: int, std: float, rng: RandomBytes) -> Blocks:
    out = _raw(n, 144, rng)
    d = std / (QUANT_STD["Q4_K"] * (sum(_Q4K_SC) - 1) / 2)
    out[:, 0:2] = _f16_bytes(d, n)
    out[:, 2:4] = out[:, 0:2]  # dmin = d, so that dmin * m cancels the mean of d * sc * q
    out[:, 4:16] = rng.rows(_scale_tables()[0], n)
    return out


def _q6_k(n: int, std: float, rng: RandomBytes) -> Blocks:
    out = _raw(n, 210, rng)
    out[:, 192:208] = rng.rows(_scale_tables()[1], n)
    d = std / (QUANT_STD["Q6_K"] * (sum(_Q6K_SC) - 1) / 2)
    out[:, 208:210] = _f16_bytes(d, n)
    return out


def _float(dtype: str) -> Callable[[int, float, RandomBytes], Blocks]:
    def fill(n: int, std: float, rng: RandomBytes) -> Blocks:
        byte_values = np.arange(256, dtype=np.uint8).view(np.int8).astype(np.float32)
        table = (byte_values * np.float32(std / QUANT_STD["Q8_0"])).astype(dtype)
        return table[rng.take(n)].view(np.uint8).reshape(n, -1)

    return fill


_FILLERS: dict[str, Callable[[int, float, RandomBytes], Blocks]] = {
    "F32": _float("<f4"),
    "F16": _float("<f2"),
    "Q4_0": _q4_0,
    "Q5_0": _q5_0,
    "Q8_0": _q8_0,
    "Q4_K": _q4_k,
    "Q6_K": _q6_k,
}


def random_blocks(kind: str, n_blocks: int, std: float, rng: RandomBytes) -> Blocks:
    """``n_blocks`` blocks of type ``kind`` whose values have a spread near ``std`` (mean near
    zero), as an (n_blocks, type_size) byte array."""
    return _FILLERS[kind](n_blocks, std, rng)


def constant_blocks(kind: str, n_elements: int, value: float) -> Blocks:
    """A float tensor (F32 or F16) holding ``value`` everywhere: norm weights, biases."""
    dtype = {"F32": "<f4", "F16": "<f2"}[kind]
    return np.full(n_elements, value, dtype=dtype).view(np.uint8)
