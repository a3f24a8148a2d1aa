"""``promote`` then ``verify``, end to end on the replay engine: no process, no port, no wait."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from servelab.engines.replay import ReplayLab
from servelab.errors import UsageError
from servelab.runner.experiment import run_experiment
from servelab.runner.preflight import MachineLock
from servelab.runner.promote import list_roles, promote, verify
from servelab.store.jsonl import read_jsonl
from tests.unit.replay_harness import make_seam, write_spec


def test_a_promoted_replay_arm_verifies_against_its_evidence(tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    run = tmp_path / "run"
    run_experiment(spec, run, seam=make_seam(ReplayLab()))
    registry = tmp_path / "roles.yaml"
    registry.write_text("roles:\n  quick: {rules: ['decode_tps >= 0.001']}\n", encoding="utf-8")
    done = promote(run, "b", "quick", registry=registry)
    record = json.loads(done.record.read_text(encoding="utf-8"))
    manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    assert record["arm"] == "b" and record["run_id"] == "run"
    assert record["effective"] == manifest["arms"]["b"]["effective"]
    assert record["engine"]["kind"] == "replay" and record["engine"]["engine_config"]["flags"] == [
        "--speed", "2",
    ]  # fmt: skip
    assert record["evidence"]["role_rules"]["decode_tps >= 0.001"]["passed"] is True
    assert done.command is None  # servelab launches nothing for a replay engine
    assert [r.holder.arm if r.holder else None for r in list_roles(registry)] == ["b"]
    lock = MachineLock(tmp_path / "machine.lock")  # not this machine's: nothing else waits
    checked = verify(registry, "quick", requests=4, warmup=1, out=tmp_path / "verify",
                     seam=make_seam(ReplayLab()), lock=lock)  # fmt: skip
    compare = json.loads((checked.compare_dir / "manifest.json").read_text(encoding="utf-8"))
    assert compare["kind"] == "compare" and compare["baseline"] == "b@run"
    assert [s["label"] for s in compare["sources"]] == ["b@run", "bench@bench"]
    assert {c.metric for c in checked.summary.comparisons} >= {"decode_tps"}
    assert (checked.compare_dir / "report.md").is_file()


def test_verify_decides_on_blocks_and_calls_a_slower_rerun_a_regression(tmp_path: Path) -> None:
    """The re-run is split over fresh engine starts (3 by default), so the comparison has
    blocks to resample and can decide: at the same replay speed the interval holds 1, a re-run
    at half the promoted speed (the record edited, as if the machine had slowed down) is
    ``worse``, a regression."""
    run = tmp_path / "run"
    run_experiment(write_spec(tmp_path), run, seam=make_seam(ReplayLab()))
    registry = tmp_path / "roles.yaml"
    registry.write_text("roles:\n  quick: {rules: ['decode_tps >= 0.001']}\n", encoding="utf-8")
    done = promote(run, "b", "quick", registry=registry)
    lock = MachineLock(tmp_path / "machine.lock")
    same = verify(registry, "quick", requests=6, warmup=0, out=tmp_path / "same",
                  seam=make_seam(ReplayLab()), lock=lock)  # fmt: skip
    rows = read_jsonl(same.bench_dir / "requests.jsonl").rows
    assert sorted({r["block"] for r in rows}) == [0, 1, 2] and len(rows) == 6
    starts = json.loads((same.bench_dir / "manifest.json").read_text())["arms"]["bench"]["starts"]
    assert [s["block"] for s in starts] == [0, 1, 2]  # a fresh engine start per block
    # every comparison has an interval now (one block only gave "need at least 2 blocks")
    assert same.summary.comparisons
    assert all(c.ci_low is not None and c.ci_high is not None for c in same.summary.comparisons)
    decode = [c for c in same.summary.comparisons if c.metric == "decode_tps"]
    assert decode and all(c.ci_low < 1 < c.ci_high for c in decode), decode  # the same speed
    assert same.regressions == []
    record = json.loads(done.record.read_text(encoding="utf-8"))
    record["engine"]["engine_config"]["flags"] = ["--speed", "1"]  # b ran at --speed 2
    done.record.write_text(json.dumps(record), encoding="utf-8")
    slower = verify(registry, "quick", requests=6, warmup=0, out=tmp_path / "slower",
                    seam=make_seam(ReplayLab()), lock=lock)  # fmt: skip
    decode = [c for c in slower.summary.comparisons if c.metric == "decode_tps"]
    assert decode and all(c.verdict == "worse" and c.ci_high < 0.7 for c in decode), decode
    assert slower.regressions and slower.regressions[0].startswith("decode pooled 2.1")


def test_verify_refuses_zero_blocks_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"--blocks \(0\) must be 1 or more"):
        verify(tmp_path / "roles.yaml", "quick", blocks=0)
