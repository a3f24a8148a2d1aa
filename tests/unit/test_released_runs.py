"""Run directories written by the released code still report, on today's statistics.

The folders in ``tests/fixtures/runs/release-0.1.0`` were written by servelab 0.1.0 (their README
says how). Each is copied and rebuilt with today's ``servelab report`` in a child process as a
user would run it. Release 0.1 decided on the ratio of medians; today decode is decided on the
pooled rate and the latencies on the mean and p90 (docs/statistics.md). The checks: the same
candidates, levels and metrics are compared, the medians' and means' point ratios equal the
release's to 1e-9 (the data and its reading did not change), and the verdicts are the ones
pinned below, each explained. (That today's analysis on medians gives the release's intervals
and verdicts is test_summary_records.py's.)
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
SAME = ("metric", "baseline", "candidate", "concurrency")

# Today's verdicts, (candidate, metric, statistic) -> verdict, where 0.1 said otherwise or a
# statistic is new. demo: the baseline's first round holds a 176 s stall (decode 0.5 tok/s), so
# pooled decode, mean e2e and the tails cannot be told apart from it (0.1's median said decode
# worse; the p90 of the pooled requests, before tails were compared round by round, "better");
# compare: two one-block bench runs, paired by prompt today (0.1 gave them no interval).
VERDICTS: dict[str, dict[tuple[str, str, str], str]] = {
    "demo": {
        ("ngram-simple", "decode_tps", "pooled"): "inconclusive",
        ("ngram-simple", "ttft_s", "mean"): "inconclusive",
        ("ngram-simple", "ttft_s", "p90"): "inconclusive",
        ("ngram-simple", "e2e_s", "mean"): "inconclusive",
        ("ngram-simple", "e2e_s", "p90"): "inconclusive",
    },
    "compare": {
        ("bench@bench-b", "decode_tps", "pooled"): "worse",
        ("bench@bench-b", "ttft_s", "mean"): "worse",
        ("bench@bench-b", "ttft_s", "p90"): "worse",
        ("bench@bench-b", "e2e_s", "mean"): "worse",
        ("bench@bench-b", "e2e_s", "p90"): "worse",
    },
}


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
def test_report_compares_what_the_release_compared_on_todays_statistics(
    tmp_path: Path, name: str
) -> None:
    before, after = _report(tmp_path, name)
    old, new = before["comparisons"], after["comparisons"]
    assert old, "the release compared something"
    assert {c["statistic"] for c in old} == {"median"}
    assert sorted({tuple(c[k] for k in SAME) for c in new}) == sorted(
        tuple(c[k] for k in SAME) for c in old
    )
    for o in old:
        mine = [n for n in new if all(n[k] == o[k] for k in SAME)]
        assert [n["statistic"] for n in mine] == (
            ["pooled"] if o["metric"] == "decode_tps" else ["mean", "p90"]
        )
        for n in mine:
            assert _same(n["ratio_median"], o["ratio"]), (o["candidate"], o["metric"])
            assert _same(n["ratio_mean"], o["ratio_mean"]), (o["candidate"], o["metric"])
    pinned = VERDICTS.get(name, {})
    for n in new:
        key = (n["candidate"], n["metric"], n["statistic"])
        if key in pinned:
            assert n["verdict"] == pinned[key], key


def test_the_import_of_0_1_keeps_its_blocks_and_stays_unpaired(tmp_path: Path) -> None:
    """The released import stored each prompt as its own block (0.1's rule): today reads it
    as stored, unpaired, and the draft-model arm's pooled decode is -19 % but inconclusive
    (re-importing the source pairs by prompt and calls it worse: test_import_references)."""
    _, after = _report(tmp_path, "import")
    draft = next(
        c for c in after["comparisons"]
        if c["candidate"] == "draft-q35-08b-max8" and c["metric"] == "decode_tps"
    )  # fmt: skip
    assert draft["method"] == "blocks_unpaired" and draft["statistic"] == "pooled"
    assert draft["ratio"] == pytest.approx(0.8096, abs=5e-4)
    assert draft["verdict"] == "inconclusive"


def test_a_released_bench_reports_its_arm(tmp_path: Path) -> None:
    before, after = _report(tmp_path, "bench")
    arm_before, arm_after = before["arms"]["bench"], after["arms"]["bench"]
    assert (arm_after["n_ok"], arm_after["n_failed"]) == (
        arm_before["n_ok"],
        arm_before["n_failed"],
    )
    for metric, stats in arm_before["metrics"].items():
        assert _same(arm_after["metrics"][metric]["median"], stats["median"]), metric
