"""An experiment at open-loop rates (``load: {rate: [...]}``) through the replay engine.

Blocks are planned per (round, arm, rate), sent on their seeded schedule (the same for both
arms of a round), and the analysis groups rows by load level: one comparison per rate.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from servelab.engines.replay import ReplayLab
from servelab.errors import UsageError
from servelab.records import Phase
from servelab.report.build import build_report
from servelab.runner.drive import Job, RequestParams
from servelab.runner.experiment import load_spec, run_experiment
from servelab.runner.lifecycle import ArmRun, Block
from servelab.spec.engine import EngineConfig
from servelab.spec.load import LoadLevel
from servelab.spec.schedule import plan_blocks
from servelab.store.jsonl import read_jsonl
from servelab.store.metrics_files import read_client_loads
from servelab.store.rundir import RunDir
from tests.unit.replay_harness import make_seam, write_spec


def test_plan_has_a_block_per_round_arm_and_rate() -> None:
    plan = plan_blocks(["a", "b"], 2, (0,), rates=(1.0, 2.0))
    assert [(p.block, p.arm, p.rate_rps, p.concurrency) for p in plan] == [
        (0, "a", 1.0, 0), (0, "a", 2.0, 0), (0, "b", 1.0, 0), (0, "b", 2.0, 0),
        (1, "b", 2.0, 0), (1, "b", 1.0, 0), (1, "a", 2.0, 0), (1, "a", 1.0, 0),
    ]  # fmt: skip
    assert plan[1].level_id == "r2"


def test_load_levels_sort_and_label() -> None:
    levels = [LoadLevel(0, 2.0), LoadLevel(4), LoadLevel(0, 0.5), LoadLevel(1)]
    assert [str(v) for v in sorted(levels)] == ["1", "4", "0.5 req/s", "2 req/s"]
    assert (LoadLevel(4).key, LoadLevel(0, 2.0).key) == ("4", "r2")
    assert (LoadLevel(4).label, LoadLevel(2, 0.5).label) == ("c=4", "0.5 req/s")


def test_a_rate_sweep_runs_open_loop_and_compares_per_rate(tmp_path: Path) -> None:
    out = tmp_path / "run"
    spec = write_spec(tmp_path, extra="load: {rate: [0.05, 0.1], arrival: constant}\n"
                      'slo: ["e2e_s.p90<=10"]\n')  # fmt: skip
    run_experiment(spec, out, seam=make_seam(ReplayLab()))
    rows = [r for r in read_jsonl(out / "requests.jsonl").rows if r["phase"] == "trial"]
    assert len(rows) == 2 * 2 * 2 * 2  # rounds x arms x rates x requests
    assert {r["rate_rps"] for r in rows} == {0.05, 0.1}
    assert {r["request_id"].split("/")[2] for r in rows} == {"r0.05", "r0.1"}
    assert all(r["slo_met"] is True and r["concurrency"] == 0 for r in rows)
    for rid in ("b0/a/r0.1/1", "b0/a/r0.05/1"):
        first, second = (next(r for r in rows if r["request_id"] == rid[:-1] + i) for i in "01")
        gap = 10.0 if "r0.1" in rid else 20.0
        assert second["t_sched_unix_s"] - first["t_sched_unix_s"] == pytest.approx(gap)
    summary = build_report(out).summary
    by_level = {(c.metric, c.rate_rps) for c in summary.comparisons}
    assert ("e2e_s", 0.05) in by_level and ("e2e_s", 0.1) in by_level
    stored = json.loads((out / "summary.json").read_text())
    assert {c.get("rate_rps") for c in stored["comparisons"]} >= {0.05, 0.1}
    assert set(stored["arms"]["a"]["by_concurrency"]) == {"r0.05", "r0.1"}
    assert summary.capacity is not None and summary.capacity.slos == ("e2e_s.p90<=10",)
    levels = summary.capacity.arms["a"].levels
    assert [(g.level, g.n_good) for g in levels] == [(0.05, 4), (0.1, 4)]  # every request good


def test_concurrency_at_the_top_and_in_load_is_refused_in_one_line(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, extra="concurrency: 2\nload: {rate: 1}\n")
    with pytest.raises(UsageError) as info:
        load_spec(spec)
    assert "not both" in str(info.value) and "\n" not in str(info.value)
    closed = load_spec(write_spec(tmp_path, extra="load: {concurrency: [1, 2]}\n"))[0]
    assert closed.concurrency_levels == (1, 2) and closed.rate_levels == ()
    bad_slo = write_spec(tmp_path, extra='slo: ["ttft_s.p90<0.3"]\n')
    with pytest.raises(UsageError, match=r"METRIC\.STAT"):
        load_spec(bad_slo)


def test_client_loads_are_written_per_block_and_read_back(tmp_path: Path) -> None:
    out = tmp_path / "run"
    run_experiment(write_spec(tmp_path), out, seam=make_seam(ReplayLab()))
    loads = read_client_loads(RunDir(out))
    assert [(c.arm, c.block, c.level) for c in loads] == [
        ("a", 0, "c1"), ("a", 1, "c1"), ("b", 0, "c1"), ("b", 1, "c1"),
    ]  # fmt: skip
    assert all(c.load.streams_max == 1 and c.load.wall_s >= 0 for c in loads)
    (out / "metrics" / "client" / "a-b0-c1.json").write_text("{torn", encoding="utf-8")
    assert len(read_client_loads(RunDir(out))) == 3  # advisory: a torn file is skipped


def test_a_trace_is_replayed_at_its_scaled_offsets(tmp_path: Path) -> None:
    lines = [{"t_s": t, "prompt": f"Say {w}.", "output_tokens": 4, "session_id": "u"}
             for t, w in ((0, "one"), (4, "two"), (10, "three"))]  # fmt: skip
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines), "utf-8")
    spec = write_spec(tmp_path, extra="load: {trace: t.jsonl, time_scale: 2}\n")
    out = tmp_path / "run"
    run_experiment(spec, out, seam=make_seam(ReplayLab()))
    rows = [r for r in read_jsonl(out / "requests.jsonl").rows if r["phase"] == "trial"]
    assert len(rows) == 2 * 2 * 3  # rounds x arms x trace lines
    first = [r for r in rows if r["request_id"].startswith("b0/a/")]
    t0 = first[0]["t_sched_unix_s"]
    assert [round(r["t_sched_unix_s"] - t0, 6) for r in first] == [0, 2, 5]  # halved gaps
    assert all(r["rate_rps"] is None and r["lag_s"] is not None for r in rows)


def test_conversations_run_turn_by_turn_in_an_experiment(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, extra="")
    spec.write_text(spec.read_text().replace("workload: structured", "workload: agent-loop"))
    out = tmp_path / "run"
    run_experiment(spec, out, seam=make_seam(ReplayLab()))
    rows = [r for r in read_jsonl(out / "requests.jsonl").rows if r["phase"] == "trial"]
    planned = {r["request_id"] for r in rows if r["turn"] == 0}
    assert len(planned) == 2 * 2 * 2  # rounds x arms x conversations per block
    assert max(r["turn"] for r in rows) >= 1 and all(r["session_id"] for r in rows)
    assert all("#t" in r["request_id"] for r in rows if r["turn"] > 0)


def test_a_resumed_open_loop_block_sends_what_is_left_on_its_own_schedule() -> None:
    arm = ArmRun("a", EngineConfig(kind="replay", model="x"), RequestParams(8, 0.0, 0, False))
    jobs = tuple(Job(f"r{i}", i, Phase.TRIAL) for i in range(4))
    block = Block(arm, 0, 2, jobs, True, rate_rps=2.0, offsets_s=(0.0, 0.5, 1.0, 1.5),
                  max_concurrency=2)  # fmt: skip
    schedule = block.schedule([False, True, False, True])
    assert schedule is not None and schedule.offsets_s == (0.0, 1.0)
    assert schedule.max_concurrency == 2 and block.level == "r2"
    assert Block(arm, 0, 4, jobs, True).schedule([True] * 4) is None
