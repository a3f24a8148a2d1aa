"""``predict_arm``: the per-arm figures a report sets beside measurements."""

from __future__ import annotations

import pytest

from servelab.theory.arch_yaml import architecture_from_yaml
from servelab.theory.hardware import find_hardware
from servelab.theory.kvcache import KvSettings, llama_kv_allocation
from servelab.theory.kvtypes import cache_type
from servelab.theory.predict import predict_arm

DOC = {
    "layers": 6, "embedding": 512, "vocab": 4000, "ffn": 1024, "weight_bits": 8,
    "attention": {"heads": 8, "kv_heads": 2, "head_dim": 64, "sliding_window": 256},
    "pattern": ["sliding", "sliding", "full"],
    "moe": {"experts": 32, "active": 4, "expert_ffn": 256},
}  # fmt: skip


def test_predict_arm_matches_its_parts() -> None:
    arch = architecture_from_yaml(DOC, name="toy")
    hw = find_hardware("rtx-4090")
    arm = predict_arm(arch, hw, ctx_per_slot=1024, parallel=2, kv_k="q8_0", kv_v="q4_0")
    settings = KvSettings(n_ctx=2048, n_seq=2, type_k=cache_type("q8_0"),
                          type_v=cache_type("q4_0"))  # fmt: skip
    assert arm.kv_bytes == llama_kv_allocation(arch, settings).kv_bytes
    assert arm.decode_ceiling_tps == pytest.approx(hw.bandwidth_bytes_s / arm.bytes_per_token)
    assert arm.aggregate_ceiling_tps is not None and arm.aggregate_ceiling_tps > 0
    assert arm.spec_speedup is None and arm.hardware == "rtx-4090"


def test_predict_arm_spec_and_no_hardware() -> None:
    arch = architecture_from_yaml(DOC, name="toy")
    arm = predict_arm(arch, None, ctx_per_slot=1024, spec_k=3, accept=0.7, draft_cost=0.1)
    assert arm.decode_ceiling_tps is None and arm.spec_decode_ceiling_tps is None
    assert arm.spec_speedup is not None and arm.spec_speedup > 0
    with_hw = predict_arm(arch, find_hardware("h100-sxm"), ctx_per_slot=1024, spec_k=3,
                          accept=0.7, draft_cost=0.1)  # fmt: skip
    assert with_hw.spec_decode_ceiling_tps == pytest.approx(
        (with_hw.decode_ceiling_tps or 0) * (with_hw.spec_speedup or 0)
    )
