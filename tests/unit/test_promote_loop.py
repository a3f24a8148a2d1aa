"""``promote`` then ``verify``, end to end on the replay engine: no process, no port, no wait."""

from __future__ import annotations

import json
from pathlib import Path

from servelab.engines.replay import ReplayLab
from servelab.runner.experiment import run_experiment
from servelab.runner.preflight import MachineLock
from servelab.runner.promote import list_roles, promote, verify
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
