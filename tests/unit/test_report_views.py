"""The Quality and Theory sections render what summary.json holds, and say so when it is empty."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from servelab.report.blocks import Para, Table
from servelab.report.html import render_html
from servelab.report.markdown import render_markdown
from servelab.report.quality_view import quality_blocks
from servelab.report.theory_view import theory_blocks
from servelab.store import Manifest
from servelab.store.summary import QualitySection, Summary, TheorySection

REPORT = Path(__file__).resolve().parents[1] / "fixtures" / "report"


def _rate(k: int, n: int) -> dict[str, Any]:
    return {"k": k, "n": n, "p": k / n if n else None, "ci_low": 0.0, "ci_high": 1.0}


QUALITY = {
    "baseline": "a",
    "metrics": [
        {"name": "tool_accuracy", "higher_is_better": True, "population": "p", "summary": "s"},
        {"name": "traditional_rate", "higher_is_better": True, "population": "p", "summary": "s"},
    ],
    "arms": {
        "a": {"n_rows": 10, "tool_outcomes": {}, "script_classes": {},
              "rates": {"tool_accuracy": _rate(9, 10), "traditional_rate": _rate(0, 0)},
              "flag_counts": {"repetition": 2, "empty": 0}},
        "b<i>": {"n_rows": 10, "tool_outcomes": {}, "script_classes": {},
                 "rates": {"tool_accuracy": _rate(4, 10), "traditional_rate": _rate(0, 0)},
                 "flag_counts": {"repetition": 0}},
    },
    "comparisons": {"b<i>": {"tool_accuracy": {"difference": -0.5, "diff_ci_low": -0.8,
                                               "diff_ci_high": -0.1, "p_value": 0.057,
                                               "verdict": "worse"}}},
    "notes": [],
}  # fmt: skip

THEORY = {
    "hardware": {"name": "host-cpu (measured)", "bandwidth_gbs": 25.0, "fp16_tflops": 0.2,
                 "memory_bytes": 2**34, "source": "measured"},
    "arms": {
        "a": {"hardware": "host-cpu (measured)", "bytes_per_token": 1e8, "position": 400,
              "decode_ceiling_tps": 250.0, "measured_decode_tps": 100.0,
              "pct_of_roofline": 0.4, "kv_bytes_predicted": 94371840, "kv_mib_reported": 90.0,
              "kv_matches": True},
        "b<i>": {"note": "no prediction: the model file /x.gguf is no longer there"},
    },
}  # fmt: skip


def _arm_ppl(ppl: float, kld: dict[str, float] | None) -> dict[str, Any]:
    return {"ppl": ppl, "ppl_err": 0.3, "chunks": 15, "ctx": 256, "kld": kld,
            "mode": "kld" if kld else "save", "argv": ["llama-perplexity"], "log": "ppl.log",
            "seconds": 1.0, "cache_type_k": "f16", "cache_type_v": "f16",
            "flash_attn": "auto"}  # fmt: skip


PPL = {
    "run_id": "r", "created_utc": "2026-11-30T00:00:00Z", "ctx": 256, "baseline": "a",
    "status": "complete",
    "text": {"name": "founding documents", "file": "t.txt", "sha256": "0" * 64, "bytes": 10,
             "licence": "public domain"},
    "arms": {"a": _arm_ppl(12.5, None),
             "b<i>": _arm_ppl(12.9, {"mean": 0.0123, "same_top_p_pct": 97.5})},
}  # fmt: skip


def test_quality_section_lists_rates_with_a_population_and_the_comparison() -> None:
    blocks = quality_blocks(QualitySection.from_json({**QUALITY, "ppl": PPL}))
    tables = [b for b in blocks if isinstance(b, Table)]
    rates = tables[0]
    assert [r[0] for r in rates.rows] == ["tool_accuracy"]  # no zh prompts: no script rate
    assert "9 of 10" in rates.rows[0][2] and "4 of 10" in rates.rows[0][3]
    assert tables[1].rows[0][-1] == "worse"
    assert ("repetition", "2", "0") in tables[2].rows
    assert tables[3].rows[1][2] == "0.012300"  # KLD of the candidate
    assert quality_blocks(None) == (Para("No quality scores for this run."),)
    assert quality_blocks(QualitySection(notes=("x",))) == (
        Para("No quality scores for this run."),
    )


def test_theory_section_shows_roofline_and_kv_equality() -> None:
    blocks = theory_blocks(TheorySection.from_json(THEORY))
    table = next(b for b in blocks if isinstance(b, Table))
    assert table.rows[0] == ("a", "400", "250.0", "100.0", "40 %", "90.00", "90.00", "equal")
    assert any(isinstance(b, Para) and "no longer there" in b.text for b in blocks)


def test_sections_render_escaped_in_html_and_present_in_markdown() -> None:
    summary = dataclasses.replace(
        Summary.from_json(json.loads((REPORT / "summary-import.json").read_text("utf-8"))),
        baseline="a", comparisons=(), proportions=(),
        quality=QualitySection.from_json(QUALITY), theory=TheorySection.from_json(THEORY),
    )  # fmt: skip
    html = render_html(summary, Manifest(), [])
    assert "b<i>" not in html and "b&lt;i&gt;" in html
    md = render_markdown(summary, Manifest())
    assert "## Quality" in md and "## Theory beside measurement" in md and "40 %" in md
