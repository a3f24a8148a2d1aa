"""servelab import --gate/--require: an import held to thresholds as a native run is.

The published voice-agent rows (copies in tests/fixtures/reference, see its README) imported
with the qwen36-vllm-v5 preset and gates on the quality rates, then reported: the dense 27B
fires a tool on small talk in 7 of 12 replies (counted from the JSON here), so its Wilson
interval cannot clear a false-fire gate the MoE clears. Gates are read from the manifest
(``source.gates``), and an import without them writes exactly what it wrote before.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from servelab.analysis.settings import run_facts
from servelab.cli.main import main
from servelab.importers import ImportOptions, import_results
from servelab.store import read_run

V5 = Path(__file__).parents[1] / "fixtures" / "reference" / "qwen3.6-vllm-2x3090"
V5_FILES = [
    V5 / "v5_2026_05_17" / "data" / "results_dense_27b_tp1.json",
    V5 / "v5_2026_05_17" / "data" / "results_moe_35b_mtp_tp2.json",
]
DENSE, MOE = "dense_27b_tp1", "moe_35b_mtp_tp2"
FALSE_FIRE, TOOL_ACCURACY = "false_fire_rate <= 25%", "tool_accuracy >= 80%"
IMPORT = ["import", *map(str, V5_FILES), "--preset", "qwen36-vllm-v5"]
Z95 = 1.959963984540054


def _false_fires(path: Path) -> tuple[int, int]:
    """(replies that called a tool, replies) over the rows that expect no tool."""
    rows = json.loads(path.read_text(encoding="utf-8"))["rows"]
    small_talk = [r for r in rows if not r["expected_tool"] and not r.get("error")]
    return sum(bool(r["tool_calls"]) for r in small_talk), len(small_talk)


def _wilson(k: int, n: int) -> tuple[float, float]:
    p, z2 = k / n, Z95 * Z95
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def test_dense_arm_fails_the_false_fire_gate_the_moe_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "v5"
    gates = ["--gate", FALSE_FIRE, "--gate", TOOL_ACCURACY, "--require", MOE]
    assert main([*IMPORT, *gates, "--out", str(out)]) == 0, capsys.readouterr().err
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["source"]["gates"] == [FALSE_FIRE, TOOL_ACCURACY]
    assert manifest["source"]["gates_require"] == [MOE]
    capsys.readouterr()
    assert main(["report", str(out)]) == 0  # a report states the outcome; it runs nothing
    printed = capsys.readouterr().out
    assert f"gates {DENSE}: FAIL {FALSE_FIRE}" in printed and f"gates {MOE}: pass" in printed

    summary: dict[str, Any] = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["gates_required"] == [DENSE, MOE]
    for path, arm in zip(V5_FILES, (DENSE, MOE), strict=True):
        fired, n = _false_fires(path)
        result = summary["gates"][arm][FALSE_FIRE]
        assert result["value"] == pytest.approx(fired / n)
        assert result["interval"] == pytest.approx(list(_wilson(fired, n)), abs=1e-9)
        assert result["passed"] is (_wilson(fired, n)[1] <= 0.25)
        assert summary["gates"][arm][TOOL_ACCURACY]["passed"] is True
    assert _false_fires(V5_FILES[0]) == (7, 12) and _false_fires(V5_FILES[1]) == (0, 12)
    assert summary["gates_failed"] == [f"{DENSE}: {FALSE_FIRE} (value {7 / 12}, threshold 0.25)"]
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "## Gates" in report
    assert "| false_fire_rate \\<= 25% | FAIL: 0.5833 \\[0.3195, 0.8067\\] vs 0.25 |" in report


def test_gates_are_read_from_the_import_source(tmp_path: Path) -> None:
    options = ImportOptions(preset="qwen36-vllm-v5", gates=("ttft_s.p90 <= 2s",), require=(MOE,))
    import_results(V5_FILES, options, out=tmp_path / "run")
    manifest = read_run(tmp_path / "run").manifest
    facts = run_facts(manifest)
    assert facts.gate_rules == ("ttft_s.p90 <= 2s",) and facts.gate_require == (MOE,)


def test_an_import_without_gates_writes_none(tmp_path: Path) -> None:
    import_results(V5_FILES, ImportOptions(preset="qwen36-vllm-v5"), out=tmp_path / "run")
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text(encoding="utf-8"))
    assert "gates" not in manifest["source"] and "gates_require" not in manifest["source"]
    assert run_facts(read_run(tmp_path / "run").manifest).gate_rules == ()


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--gate", "decode_tps > 5"], "--gate 'decode_tps > 5': write METRIC[.STAT] >= or <="),
        (["--gate", "false_fires <= 10%"], "--gate 'false_fires <= 10%': unknown metric"),
        (["--gate", "ttft_s.pooled <= 1s"], ".pooled (Σ tokens / Σ time) is for rates"),
        (["--require", MOE], "--require ARM: give the rules it must pass with --gate RULE"),
        (
            ["--gate", TOOL_ACCURACY, "--require", "moe"],
            f"--require 'moe': no such arm; arms: {DENSE}, {MOE}",
        ),
    ],
)
def test_bad_gate_options_are_one_line_exit_2(
    extra: list[str], needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert main([*IMPORT, *extra, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("servelab: error: ") and needle in err[0]
    assert not out.exists()  # a refused import leaves nothing behind
