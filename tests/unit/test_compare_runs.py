"""``servelab compare`` (servelab.runner.compare) on run directories the released code wrote."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from servelab.errors import UsageError
from servelab.runner.compare import compare_runs
from servelab.store import read_run

RELEASED = Path(__file__).parents[1] / "fixtures" / "runs" / "release-0.1.0"


def test_two_released_benches_compare_as_the_release_did(tmp_path: Path) -> None:
    for name in ("bench-a", "bench-b"):
        shutil.copytree(RELEASED / "bench", tmp_path / name)
    out = compare_runs(tmp_path / "bench-a", tmp_path / "bench-b", out=tmp_path / "cmp")
    run = read_run(out.root)
    released = json.loads((RELEASED / "compare" / "manifest.json").read_text(encoding="utf-8"))
    written = json.loads(out.manifest.read_text(encoding="utf-8"))
    assert written["schema_version"] == 2 and written["kind"] == "compare"
    assert written["arms"]["bench@bench-a"] == released["arms"]["bench@bench-a"]
    assert [s["label"] for s in written["sources"]] == ["bench@bench-a", "bench@bench-b"]
    for key in ("baseline", "interleaved", "decision_metrics", "stop", "workload", "notes"):
        assert written[key] == released[key], key
    assert run.manifest.baseline == "bench@bench-a" and run.manifest.interleaved is False
    assert len(run.rows) == 2 * len(read_run(RELEASED / "bench").rows)
    assert {r["source_run"] for r in run.rows} == {"bench-a"}  # the rows' own run id


def test_an_experiment_arm_against_itself_keeps_its_stopping_rule(tmp_path: Path) -> None:
    out = compare_runs(RELEASED / "demo", RELEASED / "demo", arm_a="none", arm_b="ngram-simple",
                       out=tmp_path / "cmp")  # fmt: skip
    written = json.loads(out.manifest.read_text(encoding="utf-8"))
    demo = json.loads((RELEASED / "demo" / "manifest.json").read_text(encoding="utf-8"))
    assert written["stop"] == demo["stop"]
    assert written["decision_metrics"] == demo["decision_metrics"]
    assert written["arms"]["none@demo"]["effective"] == demo["arms"]["none"]["effective"]
    assert "llama.spec-type" in written["config_diff"]


def test_an_arm_must_be_chosen_among_several(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="choose one with --arm-a"):
        compare_runs(RELEASED / "demo", RELEASED / "bench", out=tmp_path / "cmp")
