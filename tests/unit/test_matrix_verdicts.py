"""Issue 12's must-show, as a user runs it: import the published llama.cpp speculative-decoding
matrix with its preset, run ``servelab report``, and read the verdict on the draft-model arm.

Servelab 0.1 called ``draft-q35-08b-max8`` against ``baseline`` ``no_difference`` on decode
(ratio of medians 1.00). Its pooled rate is 19 % lower and two of the ten prompts run at 0.44x
and 0.49x. No engine: the source file is in tests/fixtures/reference (README there).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SOURCE = (
    Path(__file__).parents[1] / "fixtures" / "reference"
    / "qwen3.6-speculative-decoding-rtx3090" / "analysis" / "summary.csv"
)  # fmt: skip


def _servelab(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "servelab", *args],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return done


@pytest.fixture(scope="module")
def reported(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str, str]:
    run = tmp_path_factory.mktemp("matrix") / "run"
    _servelab("import", str(SOURCE), "--preset", "qwen36-llamacpp-summary", "--out", str(run))
    done = _servelab("report", str(run))
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    html = (run / "report.html").read_text(encoding="utf-8")
    return summary, done.stdout, html


def _decode(summary: dict[str, Any], candidate: str) -> dict[str, Any]:
    (found,) = [
        c for c in summary["comparisons"]
        if c["candidate"] == candidate and c["metric"] == "decode_tps"
    ]  # fmt: skip
    return found


def test_the_draft_model_arm_is_worse_on_decode_with_the_slow_prompts_named(
    reported: tuple[dict[str, Any], str, str],
) -> None:
    summary, stdout, html = reported
    draft = _decode(summary, "draft-q35-08b-max8")
    assert (draft["statistic"], draft["verdict"]) == ("pooled", "worse")
    assert draft["baseline"] == "baseline"
    assert draft["ratio"] == pytest.approx(0.8096, abs=5e-4)  # the pooled ratio, -19 %
    assert draft["ci_high"] < 1 and draft["ci_low"] < draft["ratio"]
    assert draft["ratio_median"] == pytest.approx(0.9997, abs=5e-4)  # what 0.1 decided on
    slow = sorted(p["prompt"] for p in draft["prompts"] if p["position"] == "below")
    assert slow == ["code_small", "long_explain"]
    assert draft["heterogeneity"].startswith("2 of 10 prompts at 0.44-0.49x")
    assert "pooled 0.81x: worse" in draft["summary"]
    assert "pooled 0.81x: worse" in stdout and "code_small" in stdout
    assert "long_explain" in html and "0.44-0.49x" in html


def test_the_ngram_cache_arm_is_worse_and_the_reruns_agree(
    reported: tuple[dict[str, Any], str, str],
) -> None:
    summary, _, _ = reported
    assert _decode(summary, "ngram-cache")["verdict"] == "worse"
    assert _decode(summary, "ngram-cache")["ratio"] == pytest.approx(0.820, abs=1e-3)
    assert _decode(summary, "ngcache-rerun")["verdict"] == "worse"
    assert _decode(summary, "baseline-rerun")["verdict"] == "no_difference"


def test_the_1000_token_arms_are_compared_with_their_own_reference(
    reported: tuple[dict[str, Any], str, str],
) -> None:
    summary, stdout, _ = reported
    assert _decode(summary, "draft-q35-08b-1000tok")["baseline"] == "baseline-1000tok"
    assert "baseline-1000tok" not in {c["candidate"] for c in summary["comparisons"]}
    assert summary["references"]["ngcache-1000tok"] == "baseline-1000tok"
    assert "ngcache-1000tok vs baseline-1000tok" in stdout
