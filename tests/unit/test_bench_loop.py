"""``servelab bench`` through the executor seam: a one-arm experiment of one block (issue 11).

The same lifecycle, block executor, error mapping and seam as ``servelab run``; here over the
replay engine, in milliseconds: the documented stage list, the run-directory files, the
interrupt and crash paths (status and one-line message, no resume hint: a bench does not
resume), and the command line itself (``servelab bench --engine replay``) through the real
registry, transport and clock.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from servelab.cli.main import main
from servelab.engines.replay import ReplayLab
from servelab.errors import EngineCrashedError, Interrupted
from servelab.runner.bench import LIFECYCLE, run_bench
from servelab.runner.lifecycle import STAGES, Stage
from servelab.spec.bench import BenchConfig
from servelab.spec.engine import EngineConfig
from servelab.store.jsonl import read_jsonl
from tests.unit.replay_harness import STREAMS, interrupt_at, make_seam, manifest

DOCUMENTED = [
    "preflight",
    "launch",
    "healthy",
    "describe",
    "warmup",
    "measure",
    "scrape",
    "stop",
    "summarize",
]


def config(**kw: object) -> BenchConfig:
    engine = EngineConfig(kind="replay", model=str(STREAMS))
    return BenchConfig.model_validate({"engine": engine, "requests": 4, "warmup": 2, **kw})


def test_bench_passes_the_documented_stages_in_order(tmp_path: Path) -> None:
    seen: list[Stage] = []
    out = tmp_path / "b"
    result = run_bench(config(), out, seam=make_seam(ReplayLab(), on_stage=seen.append))
    assert list(LIFECYCLE) == DOCUMENTED
    assert [str(s) for s in seen] == ["load", "resolve", *DOCUMENTED]
    assert seen == sorted(seen, key=STAGES.index)  # one block: the lifecycle in STAGES order
    m = manifest(out)
    assert m["kind"] == "bench" and m["status"] == "complete" and m["stages"] == DOCUMENTED
    assert result.summary.arms["bench"].n_ok == 4


def test_bench_writes_its_documented_files(tmp_path: Path) -> None:
    out = tmp_path / "b"
    run_bench(config(concurrency=1), out, seam=make_seam(ReplayLab()))
    rows = read_jsonl(out / "requests.jsonl").rows
    assert [r["phase"] for r in rows] == ["warmup"] * 2 + ["trial"] * 4
    assert [r["seq"] for r in rows] == list(range(6))
    assert {r["request_id"] for r in rows} == {""} and {r["block"] for r in rows} == {0}
    assert all(r["outcome"] == "ok" for r in rows)
    for name in ("bench-before.json", "bench-after.json", "bench-deltas.json"):
        assert (out / "metrics" / name).exists()
    deltas = json.loads((out / "metrics" / "bench-deltas.json").read_text())["counter_deltas"]
    assert deltas["replay:requests_total"] == 4  # the warm-up is before the first snapshot
    summary = json.loads((out / "summary.json").read_text())
    assert summary["arms"]["bench"]["n_warmup"] == 2
    assert manifest(out)["arms"]["bench"]["describe"]["kind"] == "replay"


def test_replayed_figures_follow_the_recording_and_the_speed(tmp_path: Path) -> None:
    def e2e(speed: str, out: Path) -> list[float]:
        engine = EngineConfig(kind="replay", model=str(STREAMS), flags=("--speed", speed))
        cfg = BenchConfig(engine=engine, requests=3, warmup=0)
        run_bench(cfg, out, seam=make_seam(ReplayLab()))
        return [r["e2e_s"] for r in read_jsonl(out / "requests.jsonl").rows]

    slow, fast = e2e("1", tmp_path / "s"), e2e("4", tmp_path / "f")
    assert all(s > 0 for s in slow)
    assert fast == pytest.approx([s / 4 for s in slow], rel=1e-9)


@pytest.mark.parametrize(
    "stage", [Stage.LAUNCH, Stage.WARMUP, Stage.MEASURE, Stage.SCRAPE], ids=str
)
def test_an_interrupted_bench_says_where_its_rows_are(tmp_path: Path, stage: Stage) -> None:
    out = tmp_path / "b"
    lab = ReplayLab()
    with pytest.raises(Interrupted) as info:
        run_bench(config(), out, seam=make_seam(lab, on_stage=interrupt_at(stage)))
    assert str(info.value) == f"interrupted; requests recorded so far are in {out}"
    m = manifest(out)
    assert m["status"] == "interrupted" and m["stages"][-2:] == ["stop", "summarize"]
    assert (out / "summary.json").exists()  # written on every exit path
    assert not any(e.running for e in lab.engines)


def test_an_engine_crash_ends_the_bench_crashed(tmp_path: Path) -> None:
    out = tmp_path / "b"
    lab = ReplayLab(crash_at=4)
    with pytest.raises(EngineCrashedError) as info:
        run_bench(config(), out, seam=make_seam(lab))
    message = str(info.value)
    assert "exited" in message and f"requests recorded so far are in {out}" in message
    assert "resume" not in message  # a bench does not resume
    assert manifest(out)["status"] == "crashed"
    rows = read_jsonl(out / "requests.jsonl").rows
    assert len(rows) == 4 and rows[-1]["outcome"] == "truncated_stream"


def test_blocks_repeat_the_bench_on_fresh_engine_starts(tmp_path: Path) -> None:
    """``blocks`` > 1: each block on its own start with its own warm-up, the prompts rotated
    as an experiment's rounds rotate them, the counters summed over the starts."""
    out = tmp_path / "b"
    seen: list[Stage] = []
    result = run_bench(config(requests=2, warmup=1, blocks=3), out,
                       seam=make_seam(ReplayLab(), on_stage=seen.append))  # fmt: skip
    rows = read_jsonl(out / "requests.jsonl").rows
    assert [(r["phase"], r["block"]) for r in rows] == [
        (phase, b) for b in range(3) for phase in ("warmup", "trial", "trial")
    ]
    trials = [r["prompt_id"] for r in rows if r["phase"] == "trial"]
    assert len(set(trials)) == 6, trials  # blocks 1 and 2 ask the next prompts, not block 0's
    assert seen.count(Stage.LAUNCH) == 3 and result.summary.arms["bench"].n_ok == 6
    m = manifest(out)
    assert [s["block"] for s in m["arms"]["bench"]["starts"]] == [0, 1, 2]
    assert m["arms"]["bench"]["describe"] == m["arms"]["bench"]["starts"][0]["describe"]
    deltas = json.loads((out / "metrics" / "bench-deltas.json").read_text())["counter_deltas"]
    assert deltas["replay:requests_total"] == 6  # 2 measured per start, warm-ups left out
    assert (out / "metrics" / "bench-b2-after.json").exists()


def test_blocks_with_an_open_loop_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["bench", "--engine", "replay", "--model", str(STREAMS), "--rate", "2", "--blocks",
            "2", "--quiet", "--out", str(tmp_path / "x")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--blocks repeats a closed-loop bench" in err[0], err
    assert not (tmp_path / "x").exists()


def test_a_named_system_prompt_replaces_the_workloads_own(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "s"
    run_bench(config(workload="voice-agent", system_prompt="stub", requests=1, warmup=0), out,
              seam=make_seam(ReplayLab()))  # fmt: skip
    assert read_jsonl(out / "requests.jsonl").rows[0]["outcome"] == "ok"
    argv = ["bench", "--engine", "replay", "--model", str(STREAMS), "-w", "voice-agent",
            "--system-prompt", "ful", "--quiet", "--out", str(tmp_path / "x")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--system-prompt: system_prompt 'ful'" in err[0], err
    assert "(it has: default, stub, full)" in err[0]


def test_the_bench_command_runs_on_the_replay_engine(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CLI, through the real registry, the engine's own transport and the real clock."""
    out = tmp_path / "cli"
    code = main(
        [
            "bench",
            "--engine",
            "replay",
            "--model",
            str(STREAMS),
            "-n",
            "3",
            "--warmup",
            "1",
            "--quiet",
            "--out",
            str(out),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"results: {out}" in captured.out and "decode_tps" in captured.out
    assert manifest(out)["stages"] == DOCUMENTED


def test_the_bench_command_exits_5_on_a_crash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli"
    code = main(
        [
            "bench",
            "--engine",
            "replay",
            "--model",
            str(STREAMS),
            "-n",
            "6",
            "--flags",
            "--crash-at 3",
            "--quiet",
            "--out",
            str(out),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 5 and len(err) == 1
    assert "exited" in err[0] and "requests recorded so far" in err[0]
    assert manifest(out)["status"] == "crashed"


def test_the_bench_command_exits_8_when_requests_fail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli"
    code = main(
        [
            "bench",
            "--engine",
            "replay",
            "--model",
            str(STREAMS),
            "-n",
            "4",
            "--warmup",
            "0",
            "--flags",
            "--fail 1,2,3",
            "--quiet",
            "--out",
            str(out),
        ]
    )
    assert code == 8, capsys.readouterr().err
    rows = read_jsonl(out / "requests.jsonl").rows
    assert [r["outcome"] for r in rows] == ["http_error"] * 3 + ["ok"]


@pytest.mark.parametrize("flags", ["--warp 9", "--speed 0", "--crash-at x"])
def test_a_bad_replay_script_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: str
) -> None:
    out = tmp_path / "cli"
    code = main(
        [
            "bench",
            "--engine",
            "replay",
            "--model",
            str(STREAMS),
            "--flags",
            flags,
            "--out",
            str(out),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "replay engine" in err[0]
    assert not out.exists()  # refused before the run directory
