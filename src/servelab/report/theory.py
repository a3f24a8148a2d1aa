"""Theory beside measurement, per arm: the roofline ceiling, KV memory and spec-decode speedup.

Owns ``summary["theory"]``: for each llama.cpp arm, the architecture read from its model file,
the hardware recorded at run start (``manifest["hardware"]``), the prediction at the arm's
measured mean sequence position (median prompt + half the median output), the measured decode
rate and its "% of roofline"; the KV bytes predicted and, when the engine log holds its start-up
report (``-lv 4``), the KV bytes llama-server itself reported; for speculative arms, the speedup
predicted from the measured draft length and acceptance beside the measured one. Arms whose
model file is gone get a note instead; nothing here can fail a report.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from servelab.errors import ServelabError
from servelab.models.arch_files import load_architecture
from servelab.report.rows import Row, ok_trials
from servelab.store.rundir import RunDir
from servelab.theory.hardware import Hardware
from servelab.theory.kvreport import measured_kv_from_log, report_matches
from servelab.theory.predict import predict_arm
from servelab.theory.specdec import expected_tokens


def _hardware(manifest: Mapping[str, Any]) -> Hardware | None:
    hw = manifest.get("hardware")
    if not isinstance(hw, Mapping):
        return None
    try:
        return Hardware(
            name=str(hw["name"]), bandwidth_gbs=float(hw["bandwidth_gbs"]),
            memory_bytes=int(hw["memory_bytes"]), fp16_tflops=float(hw["fp16_tflops"]),
            note=str(hw.get("note", "")), source=str(hw.get("source", "")),
        )  # fmt: skip
    except (KeyError, TypeError, ValueError):
        return None


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def _draft_counters(run_root: Path, arm: str) -> tuple[float, float, float, float]:
    """(drafts, drafted tokens, accepted tokens, decode calls) over the arm's metrics deltas."""
    drafts = drafted = accepted = decodes = 0.0
    for path in RunDir(run_root).arm_block_metrics(arm):
        try:
            deltas = json.loads(path.read_text(encoding="utf-8")).get("counter_deltas") or {}
        except (OSError, ValueError):
            continue
        drafts += deltas.get("llamacpp:spec_decode_num_drafts_total", 0.0)
        drafted += deltas.get("llamacpp:spec_decode_num_draft_tokens_total", 0.0)
        accepted += deltas.get("llamacpp:spec_decode_num_accepted_tokens_total", 0.0)
        decodes += deltas.get("llamacpp:n_decode_total", 0.0)
    return drafts, drafted, accepted, decodes


def _measured_kv(run_root: Path, arm: str) -> float | None:
    """The KV MiB llama-server reported at the arm's first start (None below ``-lv 4``)."""
    log = RunDir(run_root).engine_log(arm)
    try:
        measured = measured_kv_from_log(log.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return None
    return measured.kv_mib if measured else None


def arm_theory(
    manifest: Mapping[str, Any], rows: Sequence[Row], run_root: Path, arm: str,
    baseline_decode: float | None,
) -> dict[str, Any]:  # fmt: skip
    eff = (manifest.get("arms", {}).get(arm) or {}).get("effective") or {}
    path = eff.get("model.path")
    if eff.get("engine.kind") != "llamacpp" or not path:
        return {"note": "no prediction: not a llama.cpp arm with a local model file"}
    if not Path(path).exists():
        return {"note": f"no prediction: the model file {path} is no longer there"}
    try:
        arch = load_architecture(str(path))
    except ServelabError as exc:
        return {"note": f"no prediction: {exc}"}
    ok = ok_trials(rows, arm)
    n_in = _median([float(r["n_in"]) for r in ok if r.get("n_in") is not None])
    n_out = _median([float(r["n_out"]) for r in ok if r.get("n_out") is not None])
    decode = _median([float(r["decode_tps"]) for r in ok if r.get("decode_tps") is not None])
    position = int((n_in or 0) + (n_out or 0) / 2) or None
    spec_type = str(eff.get("llama.spec-type", "none"))
    drafts, drafted, accepted, decodes = _draft_counters(run_root, arm)
    speculative = spec_type not in ("none", "(default)") and drafted > 0
    k = max(1, round(drafted / drafts)) if speculative and drafts else None
    accept = min(1.0, accepted / drafted) if speculative else None
    hw = _hardware(manifest)
    kv_k, kv_v = (
        str(eff.get("llama.cache-type-k", "f16")),
        str(eff.get("llama.cache-type-v", "f16")),
    )
    try:
        p = predict_arm(
            arch, hw, ctx_per_slot=int(eff.get("ctx_per_slot", 4096)),
            parallel=int(eff.get("parallel", 1)), kv_k=kv_k, kv_v=kv_v, position=position,
            spec_k=k, accept=accept, draft_cost=0.0,
        )  # fmt: skip
    except ServelabError as exc:
        return {"note": f"no prediction: {exc}"}
    reported = (manifest.get("arms", {}).get(arm) or {}).get("kv_reported")
    measured_kv = (
        float(reported["kv_mib"]) if isinstance(reported, Mapping) and "kv_mib" in reported
        else _measured_kv(run_root, arm)
    )  # fmt: skip
    out: dict[str, Any] = {
        "hardware": p.hardware,
        "position": position,
        "bytes_per_token": p.bytes_per_token,
        "decode_ceiling_tps": p.decode_ceiling_tps,
        "measured_decode_tps": decode,
        "pct_of_roofline": decode / p.decode_ceiling_tps if decode and p.decode_ceiling_tps
        else None,
        "kv_bytes_predicted": p.kv_bytes,
        "kv_mib_reported": measured_kv,
        "kv_matches": report_matches(p.kv_bytes, measured_kv) if measured_kv is not None
        else None,
    }  # fmt: skip
    if speculative and k is not None and accept is not None and p.spec_speedup:
        # n-gram drafters draft only when they find a match: a fraction f of decode steps
        # verifies K + 1 tokens at cost r, the rest are plain steps producing one token.
        # r from the model: t_iid / speedup with c = 0. t itself is measured (accepted tokens
        # per draft + 1): n-gram drafts are mostly all right or all wrong, far from the
        # i.i.d.-per-token acceptance the closed form assumes (kept as t_iid for contrast).
        t_iid = expected_tokens(accept, k)
        r = t_iid / p.spec_speedup
        t = accepted / drafts + 1 if drafts else t_iid
        f = min(1.0, drafts / decodes) if decodes else 1.0
        mixed = (f * t + (1 - f)) / (f * r + (1 - f))
        out["spec"] = {
            "spec_type": spec_type, "mean_draft_length": k, "acceptance": accept,
            "draft_step_fraction": f, "verify_cost": r, "tokens_per_verify_step": t,
            "tokens_per_verify_step_iid": t_iid,
            "predicted_speedup_per_draft_step": p.spec_speedup,
            "predicted_speedup": mixed,
            "measured_speedup": decode / baseline_decode if decode and baseline_decode else None,
            "assumes": "draft cost 0 (n-gram lookup); verify cost r from bytes and FLOPs; "
            "a fraction f of decode steps (drafts / decode calls) carries a draft and yields "
            "the measured tokens per verify step t",
        }  # fmt: skip
    return out


def run_theory(manifest: Mapping[str, Any], rows: Sequence[Row], run_root: Path) -> dict[str, Any]:
    arms = list((manifest.get("arms") or {}).keys())
    baseline = manifest.get("baseline")
    base_ok = ok_trials(rows, str(baseline)) if baseline else []
    base_decode = _median([float(r["decode_tps"]) for r in base_ok
                           if r.get("decode_tps") is not None])  # fmt: skip
    hw = manifest.get("hardware")
    return {
        "hardware": hw if isinstance(hw, Mapping) else None,
        "arms": {arm: arm_theory(manifest, rows, run_root, arm, base_decode) for arm in arms},
    }
