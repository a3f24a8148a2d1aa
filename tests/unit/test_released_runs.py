"""Run directories written by the released code still report, with the same comparisons.

The folders in ``tests/fixtures/runs/release-0.1.0`` were written by servelab 0.1.0 (their README
says how). Each is copied, rebuilt with today's ``servelab report`` in a child process as a user
would run it, and its comparisons are checked against the ``summary.json`` the release wrote:
the same arms, metrics and verdicts, and ratios and intervals equal to 1e-9.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

RELEASE = Path(__file__).parents[1] / "fixtures" / "runs" / "release-0.1.0"
EXACT = ("metric", "baseline", "candidate", "concurrency", "statistic", "verdict", "n_blocks")
NUMBERS = ("ratio", "ci_low", "ci_high", "ratio_mean", "ci_low_mean", "ci_high_mean")


def _report(tmp_path: Path, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The release's summary and today's, for a copy of the fixture ``name``."""
    before = json.loads((RELEASE / name / "summary.json").read_text(encoding="utf-8"))
    run = tmp_path / name
    shutil.copytree(RELEASE / name, run)
    done = subprocess.run(
        [sys.executable, "-m", "servelab", "report", str(run)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert (run / "report.md").stat().st_size > 0 and (run / "report.html").stat().st_size > 0
    after = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    return before, after


def _same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=0, abs_tol=1e-9)


@pytest.mark.parametrize("name", ["demo", "compare", "import"])
def test_report_gives_the_releases_comparisons(tmp_path: Path, name: str) -> None:
    before, after = _report(tmp_path, name)
    old, new = before["comparisons"], after["comparisons"]
    assert old, "the release compared something"
    assert [[c[k] for k in EXACT] for c in new] == [[c[k] for k in EXACT] for c in old]
    for o, n in zip(old, new, strict=True):
        diffs = {k: (o[k], n[k]) for k in NUMBERS if not _same(o[k], n[k])}
        assert diffs == {}, (o["metric"], o["candidate"], diffs)


def test_the_demo_verdict_is_the_one_the_release_printed(tmp_path: Path) -> None:
    _, after = _report(tmp_path, "demo")
    decode = next(c for c in after["comparisons"] if c["metric"] == "decode_tps")
    assert decode["verdict"] == "worse" and decode["ratio"] == pytest.approx(0.8771489162230077)


def test_a_released_bench_reports_its_arm(tmp_path: Path) -> None:
    before, after = _report(tmp_path, "bench")
    arm_before, arm_after = before["arms"]["bench"], after["arms"]["bench"]
    assert (arm_after["n_ok"], arm_after["n_failed"]) == (
        arm_before["n_ok"],
        arm_before["n_failed"],
    )
    for metric, stats in arm_before["metrics"].items():
        assert _same(arm_after["metrics"][metric]["median"], stats["median"]), metric
