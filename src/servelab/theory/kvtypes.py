"""KV-cache element types and what a row of them costs.

Owns the table of llama.cpp cache types at their ggml block sizes (``-ctk`` / ``-ctv``: f32,
f16, bf16, q8_0, q5_1, q5_0, q4_1, q4_0, iq4_nl) and types given only as bits per element, for
forks with 3- and 4-bit caches. Pure.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from servelab.errors import UsageError


@dataclass(frozen=True, slots=True)
class CacheType:
    """``block_bytes`` bytes hold ``block_size`` elements (ggml's type_size / blck_size); a
    type given as bits has block_size 0 and is sized as ceil(elements * bits / 8)."""

    name: str
    block_size: int
    block_bytes: int
    bits: float

    def row_bytes(self, elements: int) -> int:
        """Bytes of one row of ``elements`` values, as ``ggml_row_size`` computes them."""
        if self.block_size == 0:
            return math.ceil(elements * self.bits / 8)
        if elements % self.block_size:
            raise UsageError(
                f"cache type {self.name} packs {self.block_size} values per block but a KV row "
                f"holds {elements}; llama.cpp refuses this: choose f16, bf16 or f32"
            )
        return elements // self.block_size * self.block_bytes


def _ggml(name: str, block_size: int, block_bytes: int) -> CacheType:
    return CacheType(name, block_size, block_bytes, block_bytes * 8 / block_size)


CACHE_TYPES: dict[str, CacheType] = {
    t.name: t
    for t in (
        _ggml("f32", 1, 4),
        _ggml("f16", 1, 2),
        _ggml("bf16", 1, 2),
        _ggml("q8_0", 32, 34),
        _ggml("q5_1", 32, 24),
        _ggml("q5_0", 32, 22),
        _ggml("q4_1", 32, 20),
        _ggml("q4_0", 32, 18),
        _ggml("iq4_nl", 32, 18),
    )
}

_BITS = re.compile(r"^(?:(?P<name>[A-Za-z][\w.-]*)=)?(?P<bits>\d+(?:\.\d+)?)(?:b|bits?)?$")


def cache_type(text: str) -> CacheType:
    """A cache type by llama.cpp name (``q8_0``), or bits per element: ``3.5``, ``3.5b`` or
    ``turbo3=3.5`` (a fork's type, named, with its bits per element)."""
    key = text.strip().lower()
    if key in CACHE_TYPES:
        return CACHE_TYPES[key]
    match = _BITS.match(key)
    if match is None or not 0 < float(match["bits"]) <= 32:
        known = ", ".join(CACHE_TYPES)
        raise UsageError(
            f"unknown KV cache type {text!r}; use one of {known}, or bits per element such as "
            "3.5 or turbo3=3.5"
        )
    bits = float(match["bits"])
    return CacheType(match["name"] or f"{bits:g}bit", 0, 0, bits)
