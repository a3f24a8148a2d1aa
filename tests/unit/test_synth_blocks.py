"""Random quant blocks, checked by gguf-py's dequantisers (ggml's layouts, in Python)."""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType, quants

from servelab.models.quant_blocks import (
    FORMATS,
    RandomBytes,
    constant_blocks,
    pack_q4k_scales,
    random_blocks,
)

ROW = 4096
ROWS = 32


def _dequantize(kind: str, blocks: np.ndarray) -> np.ndarray:
    return quants.dequantize(blocks.reshape(ROWS, -1), FORMATS[kind].qtype)


@pytest.mark.parametrize("kind", sorted(FORMATS))
@pytest.mark.parametrize("std", [0.0088, 0.036, 1.0])
def test_values_are_finite_centred_and_spread_as_asked(kind: str, std: float) -> None:
    n_blocks = ROW * ROWS // FORMATS[kind].block_size
    blocks = random_blocks(kind, n_blocks, std, RandomBytes(1))
    assert blocks.shape == (n_blocks, FORMATS[kind].type_size)
    values = _dequantize(kind, blocks)
    assert values.shape == (ROWS, ROW)
    assert np.isfinite(values).all()
    assert values.std() == pytest.approx(std, rel=0.12)
    assert abs(values.mean()) < 0.12 * std  # Q4_0's quants run -8..7: a mean of -std/9


@pytest.mark.parametrize("kind", ["Q4_K", "Q6_K", "Q8_0", "Q4_0"])
def test_values_spread_over_many_levels(kind: str) -> None:
    n_blocks = ROW * ROWS // FORMATS[kind].block_size
    values = _dequantize(kind, random_blocks(kind, n_blocks, 0.01, RandomBytes(2)))
    assert len(np.unique(values)) > 15  # not a constant or a two-valued pattern


def test_the_same_seed_gives_the_same_bytes_and_another_seed_others() -> None:
    a = random_blocks("Q4_K", 64, 0.01, RandomBytes(7))
    b = random_blocks("Q4_K", 64, 0.01, RandomBytes(7))
    c = random_blocks("Q4_K", 64, 0.01, RandomBytes(8))
    assert (a == b).all()
    assert (a != c).any()


def test_random_bytes_longer_than_the_pool_are_not_one_repeated_window() -> None:
    source = RandomBytes(3)
    data = source.take(RandomBytes.POOL_BYTES + 1000)
    half = RandomBytes.POOL_BYTES // 2
    assert len(data) == RandomBytes.POOL_BYTES + 1000
    assert (data[:half] != data[half : 2 * half]).any()


def test_q4k_scales_pack_as_ggml_unpacks_them() -> None:
    """Known answer: with every quant 0 a sub-block's values are -dmin * m, with every quant 1
    they are d * sc - dmin * m (d = dmin = 1), for 6-bit scales that use the high bits."""
    sc = np.array([[1, 17, 33, 63, 2, 18, 40, 63]], dtype=np.uint8)
    m = np.array([[5, 21, 37, 60, 7, 23, 48, 62]], dtype=np.uint8)
    block = np.zeros((1, 144), dtype=np.uint8)
    block[0, 0:4] = np.array([1.0, 1.0], dtype="<f2").view(np.uint8)
    block[0, 4:16] = pack_q4k_scales(sc, m)
    zeros = quants.dequantize(block, GGMLQuantizationType.Q4_K).reshape(8, 32)
    assert (zeros == -m.astype(int).reshape(8, 1)).all()
    block[0, 16:] = 0x11
    ones = quants.dequantize(block, GGMLQuantizationType.Q4_K).reshape(8, 32)
    assert (ones == (sc.astype(int) - m).reshape(8, 1)).all()


def test_constant_blocks_hold_the_value() -> None:
    assert (constant_blocks("F32", 10, 1.0).view("<f4") == 1.0).all()
    assert (constant_blocks("F16", 10, 0.0).view("<f2") == 0.0).all()


def test_block_sizes_match_gguf() -> None:
    from gguf import GGML_QUANT_SIZES

    for fmt in FORMATS.values():
        assert GGML_QUANT_SIZES[fmt.qtype] == (fmt.block_size, fmt.type_size)
