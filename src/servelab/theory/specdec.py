"""Speculative decoding: expected speedup, break-even acceptance and best draft length.

Owns the formulas. With per-token acceptance a (independent across positions) and draft length
K, a verify step yields t = (1 - a^(K+1)) / (1 - a) tokens (K + 1 at a = 1). Verifying K + 1
tokens costs r times one decode step: weights are read once, so a dense model pays about 1, but
a MoE loads the union of the experts its K + 1 tokens route to, N(K+1) instead of k per layer,
plus KV (and compute, when given hardware, once the step stops being memory-bound). Drafting
costs c per token relative to one target step. Speedup = t / (r + K c). Pure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from servelab.errors import UsageError
from servelab.theory.arch import Architecture
from servelab.theory.hardware import Hardware
from servelab.theory.kvtypes import CacheType
from servelab.theory.roofline import distinct_experts, flops_per_token, step_bytes

if TYPE_CHECKING:
    from servelab.theory.calibration import HardwareProfile

MAX_DRAFT = 256  # llama.cpp n-gram drafters propose up to 64+ tokens at once


def expected_tokens(accept: float, k: int) -> float:
    """t = (1 - a^(K+1)) / (1 - a): tokens per verify step (accepted drafts + 1)."""
    _check(accept, k)
    if accept >= 1.0:
        return float(k + 1)
    return (1.0 - accept ** (k + 1)) / (1.0 - accept)


def _check(accept: float, k: int) -> None:
    if not 0.0 <= accept <= 1.0:
        raise UsageError(f"acceptance {accept} must be between 0 and 1; fix --accept")
    if not 0 <= k <= MAX_DRAFT:
        raise UsageError(f"draft length {k} must be 0..{MAX_DRAFT}; fix --spec-k")


def verify_cost(
    arch: Architecture, *, k: int, position: int, type_k: CacheType, type_v: CacheType,
    hw: Hardware | None = None, profile: HardwareProfile | None = None,
    model_sha256: str | None = None, draft_sha256: str | None = None,
) -> float:  # fmt: skip
    """r: time to verify K + 1 tokens of one sequence / time of one plain decode step. Memory
    time is bytes / bandwidth; with ``hw`` compute time (FLOPs / peak) counts when larger.
    With a calibrated ``profile``: the model's measured batch-cost fit when the profile has
    ``model_sha256``, else (fixed + bytes(K + 1) / bw) / (fixed + bytes(1) / bw)."""
    if profile is not None and model_sha256 is not None:
        measured = profile.verify_cost(model_sha256, k, draft_sha256)
        if measured is not None:
            return measured
    one = step_bytes(arch, batch=1, position=position, type_k=type_k, type_v=type_v)
    many = step_bytes(arch, batch=k + 1, position=position, type_k=type_k, type_v=type_v)
    # the K + 1 tokens share one sequence's KV: read once, not K + 1 times
    many_bytes = many.total_bytes - many.kv_bytes + one.kv_bytes
    if profile is not None:
        return profile.verify_cost_from_bytes(one.total_bytes, many_bytes, model_sha256)
    if hw is None:
        return many_bytes / one.total_bytes
    flops = flops_per_token(arch, position)
    t_one = max(one.total_bytes / hw.bandwidth_bytes_s, flops / hw.flops_s)
    t_many = max(many_bytes / hw.bandwidth_bytes_s, (k + 1) * flops / hw.flops_s)
    return t_many / t_one


def draft_step_cost(
    target: Architecture, draft: Architecture, *, position: int, type_k: CacheType,
    type_v: CacheType, hw: Hardware | None = None,
) -> float:  # fmt: skip
    """c without a calibration: one decode step of the ``draft`` model / one of the
    ``target``, each timed by the roofline on one machine: its bytes (weights, output head and
    KV at ``position``) over bandwidth, or with ``hw`` its FLOPs over peak when that is longer.
    Fixed per-step costs are left out, so a small draft on a machine dominated by them costs
    more than this says (``servelab calibrate`` measures c instead)."""

    def step_time(arch: Architecture) -> float:
        b = step_bytes(arch, batch=1, position=position, type_k=type_k, type_v=type_v)
        if hw is None:
            return b.total_bytes
        return max(
            b.total_bytes / hw.bandwidth_bytes_s, flops_per_token(arch, position) / hw.flops_s
        )

    return step_time(draft) / step_time(target)


def speedup(accept: float, k: int, r: float, c: float) -> float:
    """t / (r + K c)."""
    return expected_tokens(accept, k) / (r + k * c)


def break_even_acceptance(k: int, r: float, c: float) -> float | None:
    """The acceptance at which speedup = 1; None when even 100 % acceptance does not pay
    (r + K c >= K + 1); 0.0 when any acceptance pays."""
    cost = r + k * c
    if cost >= k + 1:
        return None
    if cost <= 1.0:
        return 0.0
    lo, hi = 0.0, 1.0
    for _ in range(60):  # t(a) rises monotonically in a
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if expected_tokens(mid, k) < cost else (lo, mid)
    return (lo + hi) / 2


@dataclass(frozen=True, slots=True)
class SpecPrediction:
    k: int
    accept: float
    draft_cost: float
    tokens_per_step: float
    verify_cost: float
    speedup: float
    break_even_accept: float | None
    best_k: int
    best_speedup: float


def predict_spec(
    arch: Architecture, *, k: int, accept: float, draft_cost: float, position: int,
    type_k: CacheType, type_v: CacheType, hw: Hardware | None = None, k_max: int = 16,
    profile: HardwareProfile | None = None, model_sha256: str | None = None,
    draft_sha256: str | None = None,
) -> SpecPrediction:  # fmt: skip
    """Speedup at (K, a, c), break-even acceptance at K, and the best K in 1..k_max at a.
    ``profile`` (with ``model_sha256``): r from the calibration (``verify_cost``)."""
    if draft_cost < 0:
        raise UsageError(f"draft cost {draft_cost} must be >= 0; fix --draft-cost")

    def cost(n: int) -> float:
        return verify_cost(
            arch, k=n, position=position, type_k=type_k, type_v=type_v, hw=hw,
            profile=profile, model_sha256=model_sha256, draft_sha256=draft_sha256,
        )  # fmt: skip

    costs = {n: cost(n) for n in sorted({k, *range(1, k_max + 1)})}
    gains = {n: speedup(accept, n, costs[n], draft_cost) for n in costs if n >= 1}
    best = max(gains, key=lambda n: gains[n]) if gains else k
    return SpecPrediction(
        k, accept, draft_cost, expected_tokens(accept, k), costs[k],
        speedup(accept, k, costs[k], draft_cost), break_even_acceptance(k, costs[k], draft_cost),
        best, gains.get(best, 1.0),
    )  # fmt: skip


def calibrated_verify_cost(
    intercept_s: float, per_expert_s: float, *, n_expert: int, n_used: int, k: int
) -> float:
    """r from a fitted union model s(B) = intercept + per_expert x N(B) (``fit_concurrency``'s
    ``union_coef``): a machine that is not at its bandwidth roofline pays fixed overheads that
    verifying more tokens does not grow, so its r is smaller than the bytes-only r."""
    one = intercept_s + per_expert_s * distinct_experts(n_expert, n_used, 1)
    return (intercept_s + per_expert_s * distinct_experts(n_expert, n_used, k + 1)) / one
