"""Everything servelab predicts for one model, configuration and machine, in one record.

Owns ``predict`` (KV allocation, KV read per token, decode and prefill ceilings, the MoE batch
curve, speculative-decoding speedup), its stable JSON form (``prediction_to_json``,
documented in docs/predict-json.md) and ``predict_arm``, the small summary a report sets beside
measured values. Pure.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

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

if TYPE_CHECKING:
    from servelab.theory.calibration import HardwareProfile
    from servelab.theory.server_flags import ServerFlags

SCHEMA_VERSION = 1
BATCHES = (1, 2, 4, 8, 16, 32, 64)


@dataclass(frozen=True, slots=True)
class PredictInput:
    """``ctx_per_slot`` tokens per sequence (llama-server ``-c`` = ctx_per_slot x parallel
    unless ``n_ctx`` gives the total ``-c`` itself, as ``--flags`` does); ``position`` is where
    decoding is (default: a full slot); ``prompt_tokens`` sizes the prefill estimate (default:
    ``position``); ``server_flags`` is the llama-server command line these came from, if any."""

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
    n_ctx: int | None = None
    swa_full: bool = False
    n_batch: int = 2048
    server_flags: ServerFlags | None = None

    @property
    def decode_position(self) -> int:
        return self.position if self.position is not None else self.ctx_per_slot

    @property
    def total_ctx(self) -> int:
        """llama-server's ``-c``: the total over all slots (0 = the trained context)."""
        return self.n_ctx if self.n_ctx is not None else self.ctx_per_slot * self.parallel


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
    profile: HardwareProfile | None = None  # the calibration behind ceiling and spec, if any


def _settings(i: PredictInput) -> KvSettings:
    if i.ctx_per_slot < 1 or i.parallel < 1:
        raise UsageError("context per slot and parallel must be >= 1; fix --ctx / --parallel")
    return KvSettings(
        n_ctx=i.total_ctx, n_seq=i.parallel, type_k=cache_type(i.kv_k),
        type_v=cache_type(i.kv_v), unified=i.unified, n_batch=i.n_batch, n_ubatch=i.n_ubatch,
        swa_full=i.swa_full, flash_attn=i.flash_attn,
    )  # fmt: skip


def _draft_cost(
    inputs: PredictInput, profile: HardwareProfile | None, model: str | None, draft: str | None
) -> float:
    """c: measured in ``profile`` when it timed both the draft and the target, else given."""
    measured = profile.draft_cost(draft, model) if profile and model and draft else None
    return measured if measured is not None else inputs.draft_cost


def _decode_ceiling(
    hardware: Hardware | None, profile: HardwareProfile | None, total_bytes: float,
    model_sha256: str | None,
) -> float | None:  # fmt: skip
    if profile is not None:
        return profile.ceiling_tps(total_bytes, model_sha256)
    return hardware.bandwidth_bytes_s / total_bytes if hardware else None


def predict(
    arch: Architecture, hardware: Hardware | None, inputs: PredictInput, *,
    profile: HardwareProfile | None = None, model_sha256: str | None = None,
    draft_sha256: str | None = None,
) -> Prediction:  # fmt: skip
    """All predictions for ``arch`` under ``inputs``; ceilings need ``hardware`` or a
    calibrated ``profile``. With a profile the decode ceiling is 1 / (fixed + bytes / bw) and
    the spec-decode r (and c, when the profile timed ``draft_sha256`` and ``model_sha256``)
    come from it; without one, bandwidth is the datasheet's and steps cost nothing fixed."""
    s = _settings(inputs)
    pos = inputs.decode_position
    single = step_bytes(arch, batch=1, position=pos, type_k=s.type_k, type_v=s.type_v)
    spec = None
    if inputs.spec_k is not None:
        if inputs.accept is None:
            raise UsageError("--spec-k needs --accept A (the expected acceptance, 0..1)")
        spec = predict_spec(
            arch, k=inputs.spec_k, accept=inputs.accept,
            draft_cost=_draft_cost(inputs, profile, model_sha256, draft_sha256),
            position=pos, type_k=s.type_k, type_v=s.type_v, hw=hardware, profile=profile,
            model_sha256=model_sha256, draft_sha256=draft_sha256,
        )  # fmt: skip
    batches = sorted({*BATCHES, inputs.parallel})
    return Prediction(
        arch=arch, hardware=hardware, inputs=inputs, kv=llama_kv_allocation(arch, s),
        kv_read_bytes=kv_read_bytes(arch, pos, s.type_k, s.type_v), single=single,
        flops_per_token=flops_per_token(arch, pos),
        decode_ceiling_tps=_decode_ceiling(hardware, profile, single.total_bytes, model_sha256),
        prefill_ceiling_tps=prefill_ceiling_tps(
            arch, hardware, prompt_tokens=inputs.prompt_tokens or pos
        ) if hardware else None,
        batch=batch_curve(
            arch, hardware, batches=batches, position=pos, type_k=s.type_k, type_v=s.type_v
        ) if hardware else (),
        spec=spec, profile=profile,
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
    profile: str | None = None  # the calibration used (``HardwareProfile.name``), if any
    verify_cost: float | None = None  # r at the arm's K
    draft_cost: float | None = None  # c used


def predict_arm(
    arch: Architecture, hardware: Hardware | None, *, ctx_per_slot: int, parallel: int = 1,
    kv_k: str = "f16", kv_v: str = "f16", position: int | None = None,
    spec_k: int | None = None, accept: float | None = None, draft_cost: float = 0.0,
    profile: HardwareProfile | None = None, model_sha256: str | None = None,
    draft_sha256: str | None = None,
) -> ArmPrediction:  # fmt: skip
    """The per-arm prediction for "% of roofline": single-stream decode ceiling (tok/s) at
    ``position`` (default a full slot), aggregate ceiling with ``parallel`` streams, the KV
    bytes llama.cpp allocates (equal to its start-up report), and the spec-decode speedup.
    ``profile``, ``model_sha256``, ``draft_sha256``: as for ``predict``."""
    inputs = PredictInput(
        ctx_per_slot=ctx_per_slot, parallel=parallel, kv_k=kv_k, kv_v=kv_v, position=position,
        spec_k=spec_k if accept is not None else None, accept=accept, draft_cost=draft_cost,
    )  # fmt: skip
    p = predict(arch, hardware, inputs, profile=profile, model_sha256=model_sha256,
                draft_sha256=draft_sha256)  # fmt: skip
    point = next((b for b in p.batch if b.batch == parallel), None)
    speed = p.spec.speedup if p.spec else None
    ceiling = p.decode_ceiling_tps
    return ArmPrediction(
        hardware.name if hardware else None, ceiling,
        point.aggregate_tps if point else None, p.single.total_bytes, p.kv.kv_bytes,
        p.kv.recurrent_bytes, speed, ceiling * speed if ceiling and speed else None,
        f"{profile.name}: {profile.fixed_source(model_sha256)}" if profile else None,
        p.spec.verify_cost if p.spec else None,
        p.spec.draft_cost if p.spec else None,
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


def _settings_json(i: PredictInput) -> dict[str, object]:
    from servelab.theory.server_flags import equivalent_flags, flags_json

    plain = {k: v for k, v in asdict(i).items() if k != "server_flags"}
    return {
        **plain, "n_ctx": i.total_ctx, "position": i.decode_position,
        "llama_server": equivalent_flags(i.total_ctx, i.parallel, i.kv_k, i.kv_v,
                                         unified=i.unified),
        "flags": flags_json(i.server_flags) if i.server_flags else None,
    }  # fmt: skip


def prediction_to_json(p: Prediction) -> dict[str, object]:
    """The stable machine-readable form (docs/predict-json.md, ``schema_version`` 1)."""
    i = p.inputs
    single = {**asdict(p.single), "total_bytes": p.single.total_bytes}
    return {
        "schema_version": SCHEMA_VERSION,
        "model": _arch_json(p.arch),
        "settings": _settings_json(i),
        "hardware": asdict(p.hardware) if p.hardware else None,
        "kv": _kv_json(p),
        "decode": {"bytes_per_token": single, "ceiling_tps": p.decode_ceiling_tps},
        "prefill": {"flops_per_token": p.flops_per_token, "ceiling_tps": p.prefill_ceiling_tps,
                    "prompt_tokens": i.prompt_tokens or i.decode_position},
        "batch": [_batch_json(b) for b in p.batch],
        "spec": asdict(p.spec) if p.spec else None,
        "profile": _profile_json(p.profile),
    }  # fmt: skip


def _profile_json(profile: HardwareProfile | None) -> dict[str, object] | None:
    if profile is None:
        return None
    return {
        "hardware": profile.hardware, "engine": profile.engine,
        "created_utc": profile.created_utc, "fixed_s": profile.step.fixed_s,
        "bandwidth_bytes_s": profile.step.bandwidth_bytes_s,
    }  # fmt: skip
