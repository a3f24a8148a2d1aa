"""Roofline ceilings: how fast decoding and prefill can go on given hardware, and how MoE
decoding scales with batch.

Owns the bytes a decode step reads (non-expert weights + active experts + output head + KV at
the current position), the single-stream ceiling bandwidth / bytes, the prefill compute
ceiling peak FLOPs / FLOPs per token, the expected number of distinct experts a batch of B
tokens routes to, N(B) = E (1 - (1 - k/E)^B) per layer (tokens route independently and
uniformly), the resulting ceiling per batch size, and fitting measured concurrency results to
that union model and to a linear per-sequence-cost model. Assumptions are in docs/theory.md.
Pure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from servelab.errors import UsageError
from servelab.theory.arch import Architecture, Weights
from servelab.theory.hardware import Hardware
from servelab.theory.kvcache import kv_read_bytes
from servelab.theory.kvtypes import CacheType


@dataclass(frozen=True, slots=True)
class StepBytes:
    """Bytes one decode step of ``batch`` sequences reads: weights once, KV per sequence."""

    batch: int
    non_expert_bytes: int
    expert_bytes: float
    output_head_bytes: int
    kv_bytes: int
    distinct_experts: float

    @property
    def total_bytes(self) -> float:
        return self.non_expert_bytes + self.expert_bytes + self.output_head_bytes + self.kv_bytes


@dataclass(frozen=True, slots=True)
class BatchPoint:
    """Ceilings at one batch size: ``aggregate_tps`` over all sequences, ``per_seq_tps`` each;
    ``bound`` says whether memory or compute sets it."""

    batch: int
    distinct_experts: float
    step_bytes: float
    memory_tps: float
    compute_tps: float
    bound: str

    @property
    def aggregate_tps(self) -> float:
        return min(self.memory_tps, self.compute_tps)

    @property
    def per_seq_tps(self) -> float:
        return self.aggregate_tps / self.batch


def distinct_experts(n_expert: int, n_used: int, batch: int | float) -> float:
    """N(B) = E (1 - (1 - k/E)^B): expected distinct experts per layer for B tokens."""
    if n_expert <= 0:
        return 0.0
    return n_expert * (1.0 - (1.0 - n_used / n_expert) ** batch)


def _weights(arch: Architecture) -> Weights:
    if arch.weights is None:
        raise UsageError(
            f"{arch.name}: weight sizes unknown; use a GGUF, or give weights or weight_bits"
        )
    return arch.weights


def step_bytes(
    arch: Architecture, *, batch: int, position: int, type_k: CacheType, type_v: CacheType
) -> StepBytes:
    """What a decode step of ``batch`` sequences, each at ``position``, reads from memory."""
    w = _weights(arch)
    n = distinct_experts(arch.moe.n_expert, arch.moe.n_expert_used, batch) if arch.moe else 0.0
    kv = kv_read_bytes(arch, position, type_k, type_v) * batch
    return StepBytes(batch, w.non_expert_bytes, n * w.expert_bytes, w.output_head_bytes, kv, n)


def flops_per_token(arch: Architecture, position: int, *, with_head: bool = True) -> float:
    """2 x active parameters (weight matmuls) + 2 x heads x (K + V head size) x attended
    positions (QK^T and AV) over the attention layers; ``with_head=False`` leaves out the
    output head (prefill computes logits for the last prompt token only)."""
    w = _weights(arch)
    k = arch.moe.n_expert_used if arch.moe else 0
    head = w.output_head_params if with_head else 0
    dense = 2.0 * (w.non_expert_params + k * w.expert_params + head)
    attn = 0.0
    for x in arch.layers:
        if x.kind == "attention":
            rows = min(position, arch.sliding_window or position) if x.sliding else position
            attn += 2.0 * x.n_head * (x.head_dim_k + x.head_dim_v) * rows
    return dense + attn


def decode_ceiling_tps(
    arch: Architecture, hw: Hardware, *, position: int, type_k: CacheType, type_v: CacheType
) -> float:
    """Single-stream decode ceiling: bandwidth / bytes read per token."""
    one = step_bytes(arch, batch=1, position=position, type_k=type_k, type_v=type_v)
    return hw.bandwidth_bytes_s / one.total_bytes


def prefill_ceiling_tps(arch: Architecture, hw: Hardware, *, prompt_tokens: int) -> float:
    """Prefill compute ceiling: peak FLOPs / FLOPs per prompt token (mean position)."""
    return hw.flops_s / flops_per_token(arch, max(1, prompt_tokens // 2), with_head=False)


def batch_point(
    arch: Architecture, hw: Hardware, *, batch: int, position: int, type_k: CacheType,
    type_v: CacheType,
) -> BatchPoint:  # fmt: skip
    step = step_bytes(arch, batch=batch, position=position, type_k=type_k, type_v=type_v)
    memory = batch * hw.bandwidth_bytes_s / step.total_bytes
    compute = hw.flops_s / flops_per_token(arch, position)
    bound = "memory" if memory <= compute else "compute"
    return BatchPoint(batch, step.distinct_experts, step.total_bytes, memory, compute, bound)


def batch_curve(
    arch: Architecture, hw: Hardware, *, batches: Sequence[int], position: int,
    type_k: CacheType, type_v: CacheType,
) -> tuple[BatchPoint, ...]:  # fmt: skip
    return tuple(
        batch_point(arch, hw, batch=b, position=position, type_k=type_k, type_v=type_v)
        for b in batches
    )


@dataclass(frozen=True, slots=True)
class ConcurrencyFit:
    """Step time s(B) = B / aggregate tok/s fitted as a + b N(B) (``union``: cost follows the
    distinct experts loaded) and as a + b B (``linear``: a fixed cost per sequence).
    ``verdict`` is ``union``, ``linear`` or ``indistinguishable``; r2 is None when a model does
    not apply (a dense model has no union model)."""

    union_r2: float | None
    linear_r2: float
    union_coef: tuple[float, float] | None
    linear_coef: tuple[float, float]
    verdict: str
    explanation: str


def _fit(x: np.ndarray, y: np.ndarray) -> tuple[tuple[float, float], float]:
    slope, intercept = np.polyfit(x, y, 1)
    pred = intercept + slope * x
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum((y - pred) ** 2)) / ss_tot if ss_tot > 0 else 1.0
    return (float(intercept), float(slope)), r2


def fit_concurrency(
    points: Sequence[tuple[int, float]], *, n_expert: int = 0, n_used: int = 0,
    margin: float = 0.02,
) -> ConcurrencyFit:  # fmt: skip
    """Which model explains measured (batch, aggregate tok/s) points; ``margin`` is the R^2
    difference below which the two are called indistinguishable."""
    batches = sorted({b for b, _ in points})
    if len(batches) < 3 or any(b < 1 or t <= 0 for b, t in points):
        raise UsageError("a concurrency fit needs 3 or more distinct batch sizes with tok/s > 0")
    b = np.array([p[0] for p in points], dtype=float)
    step = b / np.array([p[1] for p in points], dtype=float)
    linear_coef, linear_r2 = _fit(b, step)
    if n_expert <= 1:
        why = "dense model: no expert union; per-sequence cost only"
        return ConcurrencyFit(None, linear_r2, None, linear_coef, "linear", why)
    n_b = np.array([distinct_experts(n_expert, n_used, x) for x in b])
    union_coef, union_r2 = _fit(n_b, step)
    if abs(union_r2 - linear_r2) < margin:
        verdict = "indistinguishable"
        why = f"R^2 union {union_r2:.3f} vs linear {linear_r2:.3f}: measure larger batches"
    else:
        verdict = "union" if union_r2 > linear_r2 else "linear"
        why = f"R^2 union {union_r2:.3f} vs linear {linear_r2:.3f}"
    return ConcurrencyFit(union_r2, linear_r2, union_coef, linear_coef, verdict, why)
