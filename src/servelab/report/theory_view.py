"""The report's "Theory beside measurement" section, from the summary's ``TheorySection``.

Owns how predictions sit beside measurements in the report: per arm the predicted decode
ceiling, the measured median decode rate and their ratio ("% of roofline"), KV memory predicted
and as llama-server reported it, and for speculative arms the predicted and measured speedup.
Pure.
"""

from __future__ import annotations

from servelab.report.blocks import Block, Para, Table
from servelab.store.summary import ArmPrediction, SpecPrediction, TheorySection

MIB = 1024 * 1024
SPEC_TEXT = (
    "Speculative decoding: a share f of decode steps carried a draft (mean length K, "
    "per-token acceptance a) and produced t tokens (measured); the verify cost r (K + 1 tokens "
    "vs one plain step) comes from the architecture and hardware. Predicted speedup = "
    "(f t + 1 - f) / (f r + 1 - f), draft cost 0 (n-gram lookup), beside the measured decode "
    "ratio to the baseline."
)
SPEC_TEXT_DRAFT = (
    "Speculative decoding: a share f of decode steps carried a draft (mean length K, "
    "per-token acceptance a) and produced t tokens (measured); the verify cost r (K + 1 tokens "
    "vs one plain step) comes from the architecture and hardware, and a draft model's cost c "
    "(one draft token vs one target step) from the same roofline of both models, without "
    "fixed per-step costs (0 for n-gram lookup; `servelab calibrate` measures it). Predicted "
    "speedup = (f t + 1 - f) / (f (r + K c) + 1 - f), beside the measured decode ratio to the "
    "baseline."
)
SPEC_TEXT_PROFILE = (
    "Speculative decoding: a share f of decode steps carried a draft (mean length K, "
    "per-token acceptance a) and produced t tokens (measured); the verify cost r (K + 1 tokens "
    "vs one plain step) and the draft cost c (one draft token vs one target step; 0 for "
    "n-gram lookup) come from the hardware profile. Predicted speedup = "
    "(f t + 1 - f) / (f (r + K c) + 1 - f), beside the measured decode ratio to the baseline."
)


def _n(x: object, fmt: str) -> str:
    return format(x, fmt) if isinstance(x, int | float) and not isinstance(x, bool) else "-"


def _row(arm: str, t: ArmPrediction) -> tuple[str, ...]:
    pct = t.pct_of_roofline
    match = {True: "equal", False: "DIFFERENT", None: "-"}[t.kv_matches]
    return (
        arm, _n(t.position, "d"), _n(t.decode_ceiling_tps, ".1f"),
        _n(t.measured_decode_tps, ".1f"), _n(pct * 100, ".0f") + " %" if pct else "-",
        _n(t.kv_bytes_predicted / MIB, ".2f"), _n(t.kv_mib_reported, ".2f"), match,
    )  # fmt: skip


def _spec_row(arm: str, spec: SpecPrediction, calibrated: bool, costed: bool) -> tuple[str, ...]:
    return (
        arm, spec.spec_type, _n(spec.mean_draft_length, "d"), _n(spec.acceptance, ".2f"),
        _n(spec.draft_step_fraction, ".3f"), _n(spec.tokens_per_verify_step, ".1f"),
        _n(spec.verify_cost, ".2f" if calibrated else ".1f"),
        *((_n(spec.draft_cost, ".3f"),) if costed else ()),
        _n(spec.predicted_speedup, ".2f"),
        _n(spec.measured_speedup, ".2f"),
    )  # fmt: skip


def _profile_text(theory: TheorySection) -> str:
    names = sorted({t.profile for t in theory.arms.values()
                    if isinstance(t, ArmPrediction) and t.profile})  # fmt: skip
    if not names:
        return " Profile: none (datasheet bandwidth; run `servelab calibrate` for a ceiling "\
            "with the fixed per-step cost)."  # fmt: skip
    return (f" Profile: {', '.join(names)}: the ceiling is 1 / (fixed per-step cost + bytes / "
            "effective bandwidth), both measured by `servelab calibrate`.")  # fmt: skip


def theory_blocks(theory: TheorySection | None) -> tuple[Block, ...]:
    if theory is None or not theory.arms:
        return (Para("No predictions for this run."),)
    hw = theory.hardware
    calibrated = any(isinstance(t, ArmPrediction) and t.profile for t in theory.arms.values())
    if hw is not None:
        lead = (f"Hardware: {hw.name} ({_n(hw.bandwidth_gbs, '.1f')} GB/s, "
                f"{_n(hw.fp16_tflops, '.3g')} TFLOPS; {hw.source or 'catalog'}). "
                "The ceiling is memory bandwidth / bytes read per token (weights, output head "
                "and KV at the arm's median position); see docs/theory.md."
                + _profile_text(theory))  # fmt: skip
    else:
        lead = ("No hardware recorded, so no ceilings (set `hardware:` in the spec); KV memory "
                "is still predicted.")  # fmt: skip
    rows, notes, spec_rows = [], [], []
    costed = calibrated or any(
        isinstance(t, ArmPrediction) and t.spec is not None and t.spec.draft_cost is not None
        for t in theory.arms.values()
    )  # fmt: skip
    for arm, t in theory.arms.items():
        if not isinstance(t, ArmPrediction):
            notes.append(f"{arm}: {t.note}")
            continue
        rows.append(_row(arm, t))
        if t.spec is not None:
            spec_rows.append(_spec_row(arm, t.spec, calibrated, costed))
    blocks: list[Block] = [Para(lead)]
    if rows:
        blocks.append(Table(
            ("arm", "position", "ceiling tok/s", "measured tok/s", "% of roofline",
             "KV MiB predicted", "KV MiB reported", "KV"), tuple(rows),
        ))  # fmt: skip
    if spec_rows:
        text = SPEC_TEXT_PROFILE if calibrated else SPEC_TEXT_DRAFT if costed else SPEC_TEXT
        blocks.append(Para(text))
        c_col = ("c",) if costed else ()
        blocks.append(Table(("arm", "spec type", "K", "a", "f", "t", "r", *c_col,
                             "predicted x", "measured x"),
                            tuple(spec_rows)))  # fmt: skip
    blocks.extend(Para(n) for n in notes)
    return tuple(blocks)
