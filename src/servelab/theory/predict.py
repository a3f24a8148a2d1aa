"""Everything servelab predicts for one model, configuration and machine, in one record.

Owns ``predict`` (KV allocation, KV read per token, decode and prefill ceilings, the MoE batch
curve, speculative-decoding speedup), its stable JSON form (``prediction_to_json``,
documented in docs/predict-json.md) and ``predict_arm``, the small summary a report sets beside
measured values. Pure.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from servelab.errors import UsageError
from servelab.theory.arch import Architecture
from servelab.theory.hardware import Hardware
from servelab.theory.kvcache import KvAllocation, KvSettings, kv_read_bytes, llama_kv_allocation
from servelab.theory.kvtypes import cache_type
from servelab.theory.roofline import (
    BatchPoint,
    StepBytes,
    batch_curve,
    flops_per_token,
    prefill_ceiling_tps,
    step_bytes,
)
from servelab.theory.specdec import SpecPrediction, predict_spec

SCHEMA_VERSION = 1
BATCHES = (1, 2, 4, 8, 16, 32, 64)


@dataclass(frozen=True, slots=True)
class PredictInput:
    """``ctx_per_slot`` tokens per sequence (llama-server ``-c`` = ctx_per_slot x parallel);
    ``position`` is where decoding is (default: a full slot); ``prompt_tokens`` sizes the
    prefill estimate (default: ``position``)."""

    ctx_per_slot: int
    parallel: int = 1
    kv_k: str = "f16"
    kv_v: str = "f16"
    position: int | None = None
    prompt_tokens: int | None = None
    spec_k: int | None = None
    accept: float | None = None
    draft_cost: float = 0.0
    unified: bool = False
    n_ubatch: int = 512
    flash_attn: bool = True

    @property
    def decode_position(self) -> int:
        return self.position if self.position is not None else self.ctx_per_slot


@dataclass(frozen=True, slots=True)
class Prediction:
    arch: Architecture
    hardware: Hardware | None
    inputs: PredictInput
    kv: KvAllocation
    kv_read_bytes: int
    single: StepBytes
    flops_per_token: float
    decode_ceiling_tps: float | None
    prefill_ceiling_tps: float | None
    batch: tuple[BatchPoint, ...]
    spec: SpecPrediction | None


def _settings(i: PredictInput) -> KvSettings:
    if i.ctx_per_slot < 1 or i.parallel < 1:
        raise UsageError("context per slot and parallel must be >= 1; fix --ctx / --parallel")
    return KvSettings(
        n_ctx=i.ctx_per_slot * i.parallel, n_seq=i.parallel, type_k=cache_type(i.kv_k),
        type_v=cache_type(i.kv_v), unified=i.unified, n_ubatch=i.n_ubatch,
        flash_attn=i.flash_attn,
    )  # fmt: skip


def predict(arch: Architecture, hardware: Hardware | None, inputs: PredictInput) -> Prediction:
    """All predictions for ``arch`` under ``inputs``; ceilings need ``hardware``."""
    s = _settings(inputs)
    pos = inputs.decode_position
    single = step_bytes(arch, batch=1, position=pos, type_k=s.type_k, type_v=s.type_v)
    spec = None
    if inputs.spec_k is not None:
        if inputs.accept is None:
            raise UsageError("--spec-k needs --accept A (the expected acceptance, 0..1)")
        spec = predict_spec(
            arch, k=inputs.spec_k, accept=inputs.accept, draft_cost=inputs.draft_cost,
            position=pos, type_k=s.type_k, type_v=s.type_v, hw=hardware,
        )  # fmt: skip
    batches = sorted({*BATCHES, inputs.parallel})
    return Prediction(
        arch=arch, hardware=hardware, inputs=inputs, kv=llama_kv_allocation(arch, s),
        kv_read_bytes=kv_read_bytes(arch, pos, s.type_k, s.type_v), single=single,
        flops_per_token=flops_per_token(arch, pos),
        decode_ceiling_tps=hardware.bandwidth_bytes_s / single.total_bytes if hardware else None,
        prefill_ceiling_tps=prefill_ceiling_tps(
            arch, hardware, prompt_tokens=inputs.prompt_tokens or pos
        ) if hardware else None,
        batch=batch_curve(
            arch, hardware, batches=batches, position=pos, type_k=s.type_k, type_v=s.type_v
        ) if hardware else (),
        spec=spec,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class ArmPrediction:
    """What a report sets beside an arm's measurements. Ceilings are None without hardware;
    spec fields are None without speculative settings."""

    hardware: str | None
    decode_ceiling_tps: float | None
    aggregate_ceiling_tps: float | None
    bytes_per_token: float
    kv_bytes: int
    recurrent_bytes: int
    spec_speedup: float | None
    spec_decode_ceiling_tps: float | None


def predict_arm(
    arch: Architecture, hardware: Hardware | None, *, ctx_per_slot: int, parallel: int = 1,
    kv_k: str = "f16", kv_v: str = "f16", position: int | None = None,
    spec_k: int | None = None, accept: float | None = None, draft_cost: float = 0.0,
) -> ArmPrediction:  # fmt: skip
    """The per-arm prediction for "% of roofline": single-stream decode ceiling (tok/s) at
    ``position`` (default a full slot), aggregate ceiling with ``parallel`` streams, the KV
    bytes llama.cpp allocates (equal to its start-up report), and the spec-decode speedup."""
    inputs = PredictInput(
        ctx_per_slot=ctx_per_slot, parallel=parallel, kv_k=kv_k, kv_v=kv_v, position=position,
        spec_k=spec_k if accept is not None else None, accept=accept, draft_cost=draft_cost,
    )  # fmt: skip
    p = predict(arch, hardware, inputs)
    point = next((b for b in p.batch if b.batch == parallel), None)
    speed = p.spec.speedup if p.spec else None
    ceiling = p.decode_ceiling_tps
    return ArmPrediction(
        hardware.name if hardware else None, ceiling,
        point.aggregate_tps if point else None, p.single.total_bytes, p.kv.kv_bytes,
        p.kv.recurrent_bytes, speed, ceiling * speed if ceiling and speed else None,
    )  # fmt: skip


def _arch_json(a: Architecture) -> dict[str, object]:
    return {
        "name": a.name, "source": a.source, "arch": a.arch, "layers": a.n_layer,
        "embedding": a.n_embd, "vocab": a.n_vocab, "context_train": a.n_ctx_train,
        "heads": a.n_head, "kv_heads": a.n_head_kv, "head_dim_k": a.head_dim_k,
        "head_dim_v": a.head_dim_v, "sliding_window": a.sliding_window,
        "sliding_layers": list(a.sliding_layers), "shared_kv_layers": list(a.shared_kv_layers),
        "recurrent_layers": list(a.recurrent_layers),
        "recurrent": asdict(a.recurrent) if a.recurrent else None,
        "moe": asdict(a.moe) if a.moe else None,
        "weights": asdict(a.weights) if a.weights else None, "mtp_layers": a.n_mtp_layers,
    }  # fmt: skip


def _kv_json(p: Prediction) -> dict[str, object]:
    groups = [
        {**asdict(g), "layers": list(g.layers), "n_layers": len(g.layers),
         "total_bytes": g.total_bytes}
        for g in p.kv.groups
    ]  # fmt: skip
    return {
        "n_ctx": p.kv.n_ctx, "n_ctx_seq": p.kv.n_ctx_seq, "n_ubatch": p.kv.n_ubatch,
        "kv_bytes": p.kv.kv_bytes, "recurrent_bytes": p.kv.recurrent_bytes,
        "total_bytes": p.kv.total_bytes, "groups": groups,
        "read_bytes_per_token": p.kv_read_bytes,
    }  # fmt: skip


def _batch_json(b: BatchPoint) -> dict[str, object]:
    return {
        "batch": b.batch, "distinct_experts": b.distinct_experts, "step_bytes": b.step_bytes,
        "memory_tps": b.memory_tps, "compute_tps": b.compute_tps,
        "aggregate_tps": b.aggregate_tps, "per_seq_tps": b.per_seq_tps, "bound": b.bound,
    }  # fmt: skip


def prediction_to_json(p: Prediction) -> dict[str, object]:
    """The stable machine-readable form (docs/predict-json.md, ``schema_version`` 1)."""
    i = p.inputs
    single = {**asdict(p.single), "total_bytes": p.single.total_bytes}
    return {
        "schema_version": SCHEMA_VERSION,
        "model": _arch_json(p.arch),
        "settings": {**asdict(i), "n_ctx": i.ctx_per_slot * i.parallel,
                     "position": i.decode_position},
        "hardware": asdict(p.hardware) if p.hardware else None,
        "kv": _kv_json(p),
        "decode": {"bytes_per_token": single, "ceiling_tps": p.decode_ceiling_tps},
        "prefill": {"flops_per_token": p.flops_per_token, "ceiling_tps": p.prefill_ceiling_tps,
                    "prompt_tokens": i.prompt_tokens or i.decode_position},
        "batch": [_batch_json(b) for b in p.batch],
        "spec": asdict(p.spec) if p.spec else None,
    }  # fmt: skip
