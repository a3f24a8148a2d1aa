"""Theory beside measurement, per arm: the roofline ceiling, KV memory and spec-decode speedup.

Owns the summary's ``theory``: for each arm with a local model file, the prediction at the
arm's measured mean sequence position (median prompt + half the median output) on the hardware
recorded at run start, the measured decode rate and its "% of roofline"; the KV bytes
predicted beside the KV MiB the engine reported; for speculative arms, the speedup predicted
from the measured draft length and acceptance beside the measured one. The draft figures are the
arm's spec-decode record (``analysis.spec_decode``: counter deltas for vLLM, per-request drafts
for llama.cpp), so every engine that speculates gets the same line. Pure: the caller reads the
model's architecture, the counter deltas and the engine log, and passes them in as
``TheoryInputs``; an arm without them gets a note instead. Nothing here can fail a report.

With a hardware profile (``servelab calibrate``, recorded in the manifest at run start) the
ceiling is 1 / (fixed + bytes / effective bandwidth), r comes from the profile's batch-cost fit
of the arm's model (else from its fixed cost and bandwidth) and c, for a draft-model arm, is
the calibrated llama-server cost of one drafted token over the server's step (else the draft's
llama-bench step over the target's); both are found by the sha256 in the effective
configuration (``model.sha256``, ``model.draft_sha256``), and each arm names the profile.
Without one: datasheet bandwidth, no fixed cost, and c = 0 for an n-gram drafter; a
draft-model arm whose draft file the caller read (``TheoryInputs.draft_architecture``) gets c
= the draft's roofline step over the target's (``theory.specdec.draft_step_cost``), also the
fallback when a profile did not time that pair.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from servelab.analysis.row_selection import Row, ok_trials
from servelab.analysis.settings import RunFacts
from servelab.errors import ServelabError
from servelab.store.engine_records import SpecDecodeRecord
from servelab.store.summary import (
    ArmPrediction,
    SpecPrediction,
    TheoryNote,
    TheorySection,
)
from servelab.theory.arch import Architecture
from servelab.theory.calibration import HardwareProfile
from servelab.theory.kvreport import report_matches
from servelab.theory.kvtypes import cache_type
from servelab.theory.predict import ArmPrediction as ArmPredictionTheory
from servelab.theory.predict import predict_arm
from servelab.theory.specdec import draft_step_cost, expected_tokens

NO_MODEL_NOTE = "no prediction: no local model file recorded for this arm"
ASSUMES = (
    "draft cost 0 (n-gram lookup); verify cost r from bytes and FLOPs; a fraction f of decode "
    "steps (drafts / decode calls) carries a draft and yields the measured tokens per verify "
    "step t"
)
ASSUMES_DRAFT = (
    "draft cost c = one step of the draft model / one step of the target, both from bytes and "
    "FLOPs on this hardware (no fixed per-step cost: run servelab calibrate to measure c); "
    "verify cost r from bytes and FLOPs; a fraction f of decode steps (drafts / decode calls) "
    "carries a draft of K tokens and yields the measured tokens per verify step t"
)
ASSUMES_PROFILE = (
    "verify cost r and the ceiling from the hardware profile (step = fixed + bytes / bandwidth, "
    "batch cost fitted by servelab calibrate); with a timed llama-server pair for this target "
    "and draft, r = (verify(K + 1) + cycle overhead) / server step and c = per-draft-token cost "
    "/ server step, else c = draft step / target step when the profile timed both, else "
    "the draft's roofline step / the target's (a draft model) or 0 (n-gram lookup); a "
    "fraction f of decode steps (drafts / decode calls) carries a draft and "
    "yields the measured tokens per verify step t"
)


@dataclass(frozen=True, slots=True)
class TheoryInputs:
    """What the caller read from disk for one arm: its architecture (or why there is none),
    its spec-decode record (None: it did not speculate), its engine's decode calls over its
    blocks (None: no such counter; every decode step then counts as a draft step) and the KV
    MiB its engine log reported (None: not in the log). ``draft_sha256``: the sha256 of the
    arm's draft model file (default: the effective configuration's ``model.draft_sha256``).
    ``draft_architecture``: the draft model's, for a draft-model arm whose file was read (c
    from the roofline without a profile); None for n-gram drafters (c = 0)."""

    architecture: Architecture | None
    note: str | None = None
    spec: SpecDecodeRecord | None = None
    log_kv_mib: float | None = None
    decode_calls: float | None = None
    draft_sha256: str | None = None
    draft_architecture: Architecture | None = None


def spec_type_of(effective: Mapping[str, object]) -> str:
    """The arm's speculative method as its effective configuration names it: llama.cpp's
    ``llama.spec-type``, else the ``method`` in vLLM's ``vllm.speculative_config`` (JSON
    text); "speculative" when neither says."""
    named = effective.get("llama.spec-type")
    if isinstance(named, str) and named not in ("none", "(default)"):
        return named
    config = str(effective.get("vllm.speculative_config") or "")
    method = re.search(r'"method"\s*:\s*"([^"]+)"', config)
    return method.group(1) if method else "speculative"


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def _median_of(rows: Sequence[Row], key: str) -> float | None:
    return _median([float(r[key]) for r in rows if r.get(key) is not None])


def _spec(
    spec_type: str, k: int, accept: float, p: ArmPredictionTheory, d: SpecDecodeRecord,
    decode_calls: float | None, decode: float | None, baseline_decode: float | None,
    drafter: bool = False,
) -> SpecPrediction:  # fmt: skip
    # n-gram drafters draft only when they find a match: a fraction f of decode steps
    # verifies K + 1 tokens at cost r, the rest are plain steps producing one token.
    # r from the model: t_iid / speedup with c = 0. t itself is measured (accepted tokens
    # per draft + 1): n-gram drafts are mostly all right or all wrong, far from the
    # i.i.d.-per-token acceptance the closed form assumes (kept as t_iid for contrast).
    # With a profile, r and c are its own (c: a draft model's measured step cost); a draft
    # model without one (``drafter``) pays c from the roofline, and r is the model's own.
    t_iid = expected_tokens(accept, k)
    per_draft_step = p.spec_speedup or 1.0  # the caller passes arms with a speedup
    calibrated = p.profile is not None and p.verify_cost is not None
    costed = calibrated or drafter
    r = p.verify_cost if costed and p.verify_cost is not None else t_iid / per_draft_step
    c = (p.draft_cost or 0.0) if costed else 0.0
    t = d.tokens_per_step if d.tokens_per_step is not None else t_iid
    f = min(1.0, d.drafts / decode_calls) if d.drafts and decode_calls else 1.0
    assumes = ASSUMES_PROFILE if calibrated else ASSUMES_DRAFT if drafter else ASSUMES
    return SpecPrediction(
        spec_type=spec_type, mean_draft_length=k, acceptance=accept, draft_step_fraction=f,
        verify_cost=r, tokens_per_verify_step=t, tokens_per_verify_step_iid=t_iid,
        predicted_speedup_per_draft_step=per_draft_step,
        predicted_speedup=(f * t + (1 - f)) / (f * (r + k * c) + (1 - f)),
        measured_speedup=decode / baseline_decode if decode and baseline_decode else None,
        assumes=assumes, draft_cost=c if costed else None,
    )  # fmt: skip


def _draft_cost(inputs: TheoryInputs, position: int | None, kv_k: str, kv_v: str,
                facts: RunFacts) -> float:  # fmt: skip
    """c from the roofline for a draft-model arm (0 without its draft architecture)."""
    if inputs.draft_architecture is None or inputs.architecture is None:
        return 0.0
    return draft_step_cost(
        inputs.architecture, inputs.draft_architecture, position=position or 1,
        type_k=cache_type(kv_k), type_v=cache_type(kv_v), hw=facts.hardware,
    )  # fmt: skip


def arm_theory(
    facts: RunFacts, rows: Sequence[Row], arm: str, inputs: TheoryInputs | None,
    baseline_decode: float | None, profile: HardwareProfile | None = None,
) -> ArmPrediction | TheoryNote:  # fmt: skip
    eff = facts.arm(arm).effective
    if inputs is None or not eff.get("model.path"):
        return TheoryNote(NO_MODEL_NOTE)
    if inputs.architecture is None:
        return TheoryNote(inputs.note or NO_MODEL_NOTE)
    ok = ok_trials(rows, arm)
    n_in, n_out, decode = (_median_of(ok, k) for k in ("n_in", "n_out", "decode_tps"))
    position = int((n_in or 0) + (n_out or 0) / 2) or None
    d = inputs.spec
    k = max(1, round(d.draft_tokens / d.drafts)) if d is not None and d.drafts else None
    accept = min(1.0, d.acceptance_rate) if d is not None else None
    kv_k = str(eff.get("llama.cache-type-k", "f16"))
    kv_v = str(eff.get("llama.cache-type-v", "f16"))
    try:
        c = _draft_cost(inputs, position, kv_k, kv_v, facts) if d is not None else 0.0
        p = predict_arm(
            inputs.architecture, facts.hardware,
            ctx_per_slot=int(eff.get("ctx_per_slot") or 4096),
            parallel=int(eff.get("parallel") or 1),
            kv_k=kv_k, kv_v=kv_v, position=position, spec_k=k, accept=accept, draft_cost=c,
            profile=profile, model_sha256=_str_or_none(eff.get("model.sha256")),
            draft_sha256=inputs.draft_sha256 or _str_or_none(eff.get("model.draft_sha256")),
        )  # fmt: skip
    except ServelabError as exc:
        return TheoryNote(f"no prediction: {exc}")
    reported = facts.arm(arm).kv_mib_reported
    kv_mib = reported if reported is not None else inputs.log_kv_mib
    spec = None
    if d is not None and k is not None and accept is not None and p.spec_speedup:
        spec = _spec(spec_type_of(eff), k, accept, p, d, inputs.decode_calls, decode,
                     baseline_decode, drafter=c > 0)  # fmt: skip
    return ArmPrediction(
        hardware=p.hardware, position=position, bytes_per_token=p.bytes_per_token,
        decode_ceiling_tps=p.decode_ceiling_tps, measured_decode_tps=decode,
        pct_of_roofline=decode / p.decode_ceiling_tps if decode and p.decode_ceiling_tps
        else None,
        kv_bytes_predicted=p.kv_bytes, kv_mib_reported=kv_mib,
        kv_matches=report_matches(p.kv_bytes, kv_mib) if kv_mib is not None else None,
        spec=spec, profile=p.profile,
    )  # fmt: skip


def _str_or_none(value: object) -> str | None:
    return str(value) if value else None


def theory_section(
    facts: RunFacts, rows: Sequence[Row], baseline: str | None,
    inputs: Mapping[str, TheoryInputs], profile: HardwareProfile | None = None,
) -> TheorySection:  # fmt: skip
    """Per arm of the manifest its prediction beside its measurements (or a note).
    ``profile``: the hardware profile recorded at run start (None: datasheet bandwidth)."""
    base_ok = ok_trials(rows, baseline) if baseline else []
    base_decode = _median_of(base_ok, "decode_tps")
    return TheorySection(
        hardware=facts.hardware,
        arms={a: arm_theory(facts, rows, a, inputs.get(a), base_decode, profile)
              for a in facts.arms},
    )  # fmt: skip
