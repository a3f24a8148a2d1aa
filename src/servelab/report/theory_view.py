"""The report's "Theory beside measurement" section, from ``summary["theory"]``.

Owns how predictions sit beside measurements in the report: per arm the predicted decode
ceiling, the measured median decode rate and their ratio ("% of roofline"), KV memory predicted
and as llama-server reported it, and for speculative arms the predicted and measured speedup.
Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from servelab.report.blocks import Block, Para, Table

MIB = 1024 * 1024
SPEC_TEXT = (
    "Speculative decoding: a share f of decode steps carried a draft (mean length K, "
    "per-token acceptance a) and produced t tokens (measured); the verify cost r (K + 1 tokens "
    "vs one plain step) comes from the architecture and hardware. Predicted speedup = "
    "(f t + 1 - f) / (f r + 1 - f), draft cost 0 (n-gram lookup), beside the measured decode "
    "ratio to the baseline."
)


def _n(x: Any, fmt: str) -> str:
    return format(x, fmt) if isinstance(x, int | float) and not isinstance(x, bool) else "-"


def theory_blocks(summary: Mapping[str, Any]) -> tuple[Block, ...]:
    theory = summary.get("theory")
    if not isinstance(theory, Mapping) or not theory.get("arms"):
        return (Para("No predictions for this run."),)
    hw = theory.get("hardware")
    if isinstance(hw, Mapping):
        lead = (f"Hardware: {hw.get('name')} ({_n(hw.get('bandwidth_gbs'), '.1f')} GB/s, "
                f"{_n(hw.get('fp16_tflops'), '.3g')} TFLOPS; {hw.get('source') or 'catalog'}). "
                "The ceiling is memory bandwidth / bytes read per token (weights, output head "
                "and KV at the arm's median position); see docs/theory.md.")  # fmt: skip
    else:
        lead = ("No hardware recorded, so no ceilings (set `hardware:` in the spec); KV memory "
                "is still predicted.")  # fmt: skip
    rows: list[tuple[str, ...]] = []
    notes: list[str] = []
    spec_rows: list[tuple[str, ...]] = []
    for arm, t in theory["arms"].items():
        if not isinstance(t, Mapping) or "note" in t:
            notes.append(f"{arm}: {t.get('note') if isinstance(t, Mapping) else t}")
            continue
        pct = t.get("pct_of_roofline")
        kv_reported = t.get("kv_mib_reported")
        match = {True: "equal", False: "DIFFERENT", None: "-"}[t.get("kv_matches")]
        rows.append((
            str(arm), _n(t.get("position"), "d"), _n(t.get("decode_ceiling_tps"), ".1f"),
            _n(t.get("measured_decode_tps"), ".1f"), _n(pct * 100 if pct else None, ".0f") + " %"
            if pct else "-",
            _n((t.get("kv_bytes_predicted") or 0) / MIB, ".2f"), _n(kv_reported, ".2f"), match,
        ))  # fmt: skip
        spec = t.get("spec")
        if isinstance(spec, Mapping):
            spec_rows.append((
                str(arm), str(spec.get("spec_type")), _n(spec.get("mean_draft_length"), "d"),
                _n(spec.get("acceptance"), ".2f"), _n(spec.get("draft_step_fraction"), ".3f"),
                _n(spec.get("tokens_per_verify_step"), ".1f"),
                _n(spec.get("verify_cost"), ".1f"), _n(spec.get("predicted_speedup"), ".2f"),
                _n(spec.get("measured_speedup"), ".2f"),
            ))  # fmt: skip
    blocks: list[Block] = [Para(lead)]
    if rows:
        blocks.append(Table(
            ("arm", "position", "ceiling tok/s", "measured tok/s", "% of roofline",
             "KV MiB predicted", "KV MiB reported", "KV"), tuple(rows),
        ))  # fmt: skip
    if spec_rows:
        blocks.append(Para(SPEC_TEXT))
        blocks.append(Table(("arm", "spec type", "K", "a", "f", "t", "r", "predicted x",
                             "measured x"),
                            tuple(spec_rows)))  # fmt: skip
    blocks.extend(Para(n) for n in notes)
    return tuple(blocks)
