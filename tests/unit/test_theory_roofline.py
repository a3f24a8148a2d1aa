"""Roofline, MoE batch scaling and speculative decoding: known answers and properties."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from servelab.errors import UsageError
from servelab.theory.arch import Architecture
from servelab.theory.arch_yaml import architecture_from_yaml
from servelab.theory.hardware import find_hardware
from servelab.theory.kvtypes import CACHE_TYPES
from servelab.theory.roofline import (
    decode_ceiling_tps,
    distinct_experts,
    fit_concurrency,
    step_bytes,
)
from servelab.theory.specdec import (
    break_even_acceptance,
    calibrated_verify_cost,
    expected_tokens,
    predict_spec,
    speedup,
    verify_cost,
)

F16 = CACHE_TYPES["f16"]
GB = 10**9


def moe(experts: int, active: int, non_expert: int, expert: int, head: int) -> Architecture:
    """A MoE with given weight bytes and no attention KV (all layers 'none'), so the bytes
    per step are exactly the weights."""
    doc = {
        "layers": 2, "embedding": 64, "pattern": ["none"],
        "attention": {"heads": 1, "kv_heads": 1, "head_dim": 64},
        "moe": {"experts": experts, "active": active, "expert_ffn": 64},
        "weights": {"non_expert_bytes": non_expert, "expert_bytes": expert,
                    "output_head_bytes": head},
    }  # fmt: skip
    return architecture_from_yaml(doc, name="moe")


def test_distinct_experts_known_answers() -> None:
    # E = 128, k = 8: N(1) = 8; N(2) = 128 (1 - 0.9375^2) = 15.5; N(4) = 29.123046875
    assert distinct_experts(128, 8, 1) == pytest.approx(8)
    assert distinct_experts(128, 8, 2) == pytest.approx(15.5)
    assert distinct_experts(128, 8, 4) == pytest.approx(29.123046875)


@given(e=st.integers(1, 512), k_frac=st.floats(0.0, 1.0), b=st.integers(1, 4096))
def test_distinct_experts_never_exceed_e_and_grow(e: int, k_frac: float, b: int) -> None:
    k = max(1, round(k_frac * e))
    n, n_next = distinct_experts(e, k, b), distinct_experts(e, k, b + 1)
    assert k - 1e-9 <= n <= e + 1e-9
    assert n <= n_next + 1e-9


def test_decode_ceiling_known_answer() -> None:
    # 1.0 GB non-expert + 8 x 0.05 GB experts + 0.2 GB head = 1.6 GB per token;
    # on an RTX 3090 (936 GB/s): 936 / 1.6 = 585 tok/s
    arch = moe(128, 8, GB, GB // 20, GB // 5)
    one = step_bytes(arch, batch=1, position=100, type_k=F16, type_v=F16)
    assert one.total_bytes == pytest.approx(1.6 * GB)
    ceiling = decode_ceiling_tps(
        arch, find_hardware("rtx-3090"), position=100, type_k=F16, type_v=F16
    )
    assert ceiling == pytest.approx(585.0)


def test_weights_unknown_is_a_usage_error() -> None:
    doc = {"layers": 1, "embedding": 8, "attention": {"heads": 1, "kv_heads": 1, "head_dim": 8}}
    arch = replace(architecture_from_yaml(doc, name="x"), weights=None)
    with pytest.raises(UsageError, match="weight sizes unknown"):
        step_bytes(arch, batch=1, position=1, type_k=F16, type_v=F16)


def test_fit_concurrency_tells_union_from_linear() -> None:
    e, k = 128, 8
    union = [(b, b / (0.010 + 0.0005 * distinct_experts(e, k, b))) for b in (1, 2, 4, 8, 16, 32)]
    fit = fit_concurrency(union, n_expert=e, n_used=k)
    assert fit.verdict == "union" and fit.union_r2 == pytest.approx(1.0)
    linear = [(b, b / (0.010 + 0.002 * b)) for b in (1, 2, 4, 8, 16, 32)]
    assert fit_concurrency(linear, n_expert=e, n_used=k).verdict == "linear"
    dense = fit_concurrency(linear)
    assert dense.verdict == "linear" and dense.union_r2 is None


def test_fit_concurrency_needs_three_batch_sizes() -> None:
    with pytest.raises(UsageError, match="3 or more"):
        fit_concurrency([(1, 10.0), (2, 19.0)])


# --- speculative decoding -------------------------------------------------------------------


def test_expected_tokens_known_answers() -> None:
    # a = 0.8, K = 3: (1 - 0.8^4) / 0.2 = 2.952; a = 1: K + 1; a = 0: 1
    assert expected_tokens(0.8, 3) == pytest.approx(2.952)
    assert expected_tokens(1.0, 3) == 4.0 and expected_tokens(0.0, 5) == 1.0


def test_moe_verify_cost_known_answer() -> None:
    # verifying K + 1 = 4 tokens loads N(4) = 29.123 experts: 1.0 + 29.123 x 0.05 + 0.2 GB
    # = 2.65615 GB against 1.6 GB for one token: r = 1.66009
    arch = moe(128, 8, GB, GB // 20, GB // 5)
    r = verify_cost(arch, k=3, position=100, type_k=F16, type_v=F16)
    assert r == pytest.approx(2.656152343 / 1.6)
    # speedup at a = 0.8, c = 0.05: 2.952 / (1.66009 + 3 x 0.05) = 1.6309
    assert speedup(0.8, 3, r, 0.05) == pytest.approx(2.952 / (r + 0.15))
    even = break_even_acceptance(3, r, 0.05)
    assert even is not None and expected_tokens(even, 3) == pytest.approx(r + 0.15)


def test_small_active_moe_can_lose_even_at_full_acceptance() -> None:
    # E = 256, k = 2, experts dominate: one token reads 0.1 + 2 x 0.2 = 0.5 GB; verifying 8
    # tokens loads N(8) = 15.57 experts = 3.21 GB, r = 6.43; with c = 0.3: r + 7c = 8.53 > 8
    arch = moe(256, 2, GB // 10, GB // 5, 0)
    r = verify_cost(arch, k=7, position=1, type_k=F16, type_v=F16)
    assert r == pytest.approx((0.1 + distinct_experts(256, 2, 8) * 0.2) / 0.5)
    assert break_even_acceptance(7, r, 0.3) is None
    assert speedup(1.0, 7, r, 0.3) < 1.0


def test_dense_verify_is_one_step_when_memory_bound() -> None:
    doc = {
        "layers": 2, "embedding": 64, "pattern": ["none"],
        "attention": {"heads": 1, "kv_heads": 1, "head_dim": 64},
        "weights": {"non_expert_bytes": GB, "output_head_bytes": 0},
    }  # fmt: skip
    dense = architecture_from_yaml(doc, name="dense")
    assert verify_cost(dense, k=4, position=1, type_k=F16, type_v=F16) == pytest.approx(1.0)


def test_predict_spec_finds_best_k() -> None:
    arch = moe(128, 8, GB, GB // 20, GB // 5)
    spec = predict_spec(arch, k=3, accept=0.8, draft_cost=0.05, position=1, type_k=F16,
                        type_v=F16)  # fmt: skip
    gains = [speedup(0.8, n, verify_cost(arch, k=n, position=1, type_k=F16, type_v=F16), 0.05)
             for n in range(1, 17)]  # fmt: skip
    assert spec.best_k == 1 + gains.index(max(gains))
    assert spec.best_speedup == pytest.approx(max(gains))


@given(a=st.floats(0.0, 0.999), k=st.integers(1, 16))
def test_expected_tokens_bounds(a: float, k: int) -> None:
    t = expected_tokens(a, k)
    assert 1.0 <= t <= k + 1 + 1e-9
    assert math.isclose(t, sum(a**i for i in range(k + 1)), rel_tol=1e-9)


@given(k=st.integers(1, 16), r=st.floats(1.0, 20.0), c=st.floats(0.0, 1.0))
def test_break_even_is_where_speedup_is_one(k: int, r: float, c: float) -> None:
    even = break_even_acceptance(k, r, c)
    if even is None:
        assert r + k * c >= k + 1
    elif even > 0:
        assert speedup(even, k, r, c) == pytest.approx(1.0, abs=1e-6)


def test_bad_acceptance_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="--accept"):
        expected_tokens(1.5, 3)


def test_calibrated_verify_cost_known_answer() -> None:
    # s(B) = 6.81 ms + 0.151 ms x N(B), E = 256, k = 8: N(1) = 8, N(4) = 30.5
    # r = (6.81 + 0.151 x 30.5) / (6.81 + 0.151 x 8)
    r = calibrated_verify_cost(6.81e-3, 0.151e-3, n_expert=256, n_used=8, k=3)
    n4 = distinct_experts(256, 8, 4)
    assert n4 == pytest.approx(30.5, abs=0.05)
    assert r == pytest.approx((6.81 + 0.151 * n4) / (6.81 + 0.151 * 8))
