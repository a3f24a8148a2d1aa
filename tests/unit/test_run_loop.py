"""The experiment run loop through the executor seam, in milliseconds (issue 11).

Every test runs the real ``run_experiment`` / ``resume_experiment``: the real lifecycle, plan,
client (``StreamSession``, SSE parser, assembler), row writer, manifest and sequential looks,
with only the engine replaced by the replay engine (recorded llama-server streams on a fake
clock) and preflight scripted. Covered: the stage order, block scheduling and restarts, resume
after an interruption at every stage (no duplicate, none lost), sequential stopping, the crash
check, scripted failed requests, the confound refusal, and a full report on the result.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from servelab.cli.main import main
from servelab.engines.replay import ReplayLab
from servelab.errors import EngineCrashedError, EnvironmentProblem, Interrupted, UsageError
from servelab.report.build import build_report
from servelab.runner.experiment import resume_experiment, run_experiment
from servelab.runner.lifecycle import BLOCK_STAGES, STAGES, Stage
from servelab.spec.confound import ConfoundError
from servelab.store.jsonl import read_jsonl
from tests.unit.replay_harness import (
    interrupt_at,
    make_seam,
    manifest,
    planned_ids,
    trial_ids,
    write_spec,
)

T = TypeVar("T")

RUN_LEVEL = [
    Stage.LOAD,
    Stage.RESOLVE,
    Stage.CONFOUND_GUARD,
    Stage.PREFLIGHT,
    Stage.KV_PROBE,
    Stage.BLOCKS,
]


def test_stages_run_in_the_documented_order(tmp_path: Path) -> None:
    seen: list[Stage] = []
    lab = ReplayLab()
    out = tmp_path / "run"
    result = run_experiment(write_spec(tmp_path), out, seam=make_seam(lab, on_stage=seen.append))
    assert result.status == "complete"
    assert seen == [*RUN_LEVEL, *list(BLOCK_STAGES) * 4, Stage.STOP]
    # each stage comes after the ones before it in STAGES (blocks repeat their own stages)
    block = [s for s in seen if s in BLOCK_STAGES]
    for i in range(0, len(block), len(BLOCK_STAGES)):
        assert block[i : i + len(BLOCK_STAGES)] == sorted(block[i : i + 6], key=STAGES.index)
    assert manifest(out)["stages"] == [str(s) for s in RUN_LEVEL]
    assert manifest(out)["status"] == "complete"


@pytest.mark.parametrize(
    ("restart", "starts"),
    [("every_block", {"a": [0, 1, 2], "b": [0, 1, 2]}), ("arm_change", {"a": [0, 1], "b": [0, 2]})],
)
def test_blocks_are_interleaved_and_engines_restarted_per_block(
    tmp_path: Path, restart: str, starts: dict[str, list[int]]
) -> None:
    lab = ReplayLab()
    out = tmp_path / "run"
    spec = write_spec(tmp_path, extra=f"restart: {restart}\n")
    spec.write_text(spec.read_text().replace("blocks: 2", "blocks: 3"))
    run_experiment(spec, out, seam=make_seam(lab))
    m = manifest(out)
    order = [(p["block"], p["arm"]) for p in m["plan"]]
    assert order == [(0, "a"), (0, "b"), (1, "b"), (1, "a"), (2, "a"), (2, "b")]
    rows = read_jsonl(out / "requests.jsonl").rows
    trials = [(r["block"], r["arm"]) for r in rows if r["phase"] == "trial"]
    assert trials == [x for x in order for _ in range(2)]  # in plan order, block by block
    arms = m["arms"]
    assert isinstance(arms, dict)
    assert {a: [s["block"] for s in e["starts"]] for a, e in arms.items()} == starts
    assert len(lab.engines) == sum(len(v) for v in starts.values())
    warmups = [r for r in rows if r["phase"] == "warmup"]
    assert len(warmups) == len(lab.engines)  # one warm-up request after every start
    assert not any(e.running for e in lab.engines)  # every engine stopped


# Every stage after the run directory exists; block stages also in a later block (the 3rd).
INTERRUPTIONS = [
    *((s, 1) for s in (Stage.KV_PROBE, Stage.BLOCKS, *BLOCK_STAGES, Stage.STOP)),
    *((s, 3) for s in BLOCK_STAGES),
]


@pytest.mark.parametrize(("stage", "nth"), INTERRUPTIONS, ids=lambda v: str(v))
def test_resume_after_an_interruption_at_every_stage(
    tmp_path: Path, stage: Stage, nth: int
) -> None:
    out = tmp_path / "run"
    spec = write_spec(tmp_path)
    with pytest.raises(Interrupted) as info:
        run_experiment(spec, out, seam=make_seam(ReplayLab(), on_stage=interrupt_at(stage, nth)))
    assert f"servelab resume {out}" in str(info.value)
    assert manifest(out)["status"] == "interrupted"
    before = trial_ids(out)
    result = resume_experiment(out, seam=make_seam(ReplayLab()))
    assert result.status == "complete"
    after = trial_ids(out)
    assert after[: len(before)] == before  # nothing recorded is rewritten
    assert len(after) == len(set(after)) and set(after) == planned_ids(out)
    m = manifest(out)
    assert m["status"] == "complete" and len(m["resumes"]) == 1


@pytest.mark.parametrize(
    "stage", [Stage.LOAD, Stage.RESOLVE, Stage.CONFOUND_GUARD, Stage.PREFLIGHT], ids=str
)
def test_an_interruption_before_the_run_exists_leaves_nothing(tmp_path: Path, stage: Stage) -> None:
    out = tmp_path / "run"
    lab = ReplayLab()
    with pytest.raises(KeyboardInterrupt):
        run_experiment(write_spec(tmp_path), out, seam=make_seam(lab, on_stage=interrupt_at(stage)))
    assert not out.exists() and not lab.engines


def test_resume_after_a_kill_mid_request(tmp_path: Path) -> None:
    """``kill -9`` runs no handler: the manifest still says running and the last row may be
    torn. Resume repairs the tail and runs exactly what is missing."""

    class Killed(BaseException):
        pass

    out = tmp_path / "run"
    with pytest.raises(Killed):
        run_experiment(
            write_spec(tmp_path),
            out,
            seam=make_seam(ReplayLab(), on_stage=interrupt_at(Stage.MEASURE, 3, Killed)),
        )
    # what a kill leaves: no final status, a half-written row
    killed = {**manifest(out), "status": "running"}
    (out / "manifest.json").write_text(json.dumps(killed))
    with (out / "requests.jsonl").open("a") as fh:
        fh.write('{"schema_version":1,"run_id":"x","arm":"a","blo')
    done = trial_ids(out)
    result = resume_experiment(out, seam=make_seam(ReplayLab()))
    assert result.status == "complete"
    after = trial_ids(out)
    assert after[: len(done)] == done
    assert len(after) == len(set(after)) and set(after) == planned_ids(out)
    assert read_jsonl(out / "requests.jsonl").bad_lines  # the torn line is reported, not lost


def test_an_interruption_between_requests_loses_nothing(tmp_path: Path) -> None:
    class StopAfter:
        def __init__(self, n: int) -> None:
            self.n = n

        def phase(self, name: str, total: int) -> None: ...

        def request_done(self, row: object) -> None:
            self.n -= 1
            if self.n == 0:
                raise KeyboardInterrupt

        def note(self, text: str) -> None: ...

        def close(self) -> None: ...

    out = tmp_path / "run"
    with pytest.raises(Interrupted):
        run_experiment(
            write_spec(tmp_path), out, reporter=StopAfter(5), seam=make_seam(ReplayLab())
        )
    assert len(read_jsonl(out / "requests.jsonl").rows) == 5  # the row that was written stays
    resume_experiment(out, seam=make_seam(ReplayLab()))
    after = trial_ids(out)
    assert len(after) == len(set(after)) and set(after) == planned_ids(out)


def test_a_clearly_faster_arm_stops_the_run_at_a_look(tmp_path: Path) -> None:
    out = tmp_path / "run"
    spec = write_spec(tmp_path, extra="stop: {max_blocks: 8}\n")
    result = run_experiment(spec, out, seam=make_seam(ReplayLab()))
    assert result.stopped_early and result.status == "stopped_early"
    m = manifest(out)
    looks = m["looks"]
    assert isinstance(looks, list) and looks[-1]["stop"] and looks[-1]["after_block"] == 1
    blocks = {r["block"] for r in read_jsonl(out / "requests.jsonl").rows}
    assert blocks == {0, 1}  # stopped at the first look, six rounds early
    # a resume of a stopped run is refused: it is complete
    with pytest.raises(UsageError, match="already complete"):
        resume_experiment(out, seam=make_seam(ReplayLab()))


def test_equal_arms_do_not_stop_early(tmp_path: Path) -> None:
    out = tmp_path / "run"
    spec = write_spec(
        tmp_path, arms="a: {}\n  b: {}", declare="[]", extra="stop: {max_blocks: 3}\n"
    )
    result = run_experiment(spec, out, seam=make_seam(ReplayLab()))
    assert result.status in ("complete", "stopped_early")
    m = manifest(out)
    assert all(lk["after_block"] >= 1 for lk in m["looks"])


def test_an_engine_crash_mid_block_ends_crashed_and_resume_continues(tmp_path: Path) -> None:
    out = tmp_path / "run"
    lab = ReplayLab(crash_at=5)  # the fifth request of the run: mid-way through block 1
    with pytest.raises(EngineCrashedError) as info:
        run_experiment(write_spec(tmp_path), out, seam=make_seam(lab))
    message = str(info.value)
    assert "replay engine exited" in message and f"servelab resume {out}" in message
    assert manifest(out)["status"] == "crashed"
    rows = read_jsonl(out / "requests.jsonl").rows
    assert rows[-1]["outcome"] == "truncated_stream"  # the request it died in is recorded
    assert not any(e.running for e in lab.engines)
    resume_experiment(out, seam=make_seam(ReplayLab()))
    after = trial_ids(out)
    assert len(after) == len(set(after)) and set(after) == planned_ids(out)
    assert manifest(out)["status"] == "complete"


def test_scripted_failed_requests_are_rows_not_errors(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = run_experiment(
        write_spec(tmp_path), out, seam=make_seam(ReplayLab(fail=frozenset({3})))
    )
    assert result.status == "complete"
    failed = [r for r in read_jsonl(out / "requests.jsonl").rows if r["outcome"] != "ok"]
    assert [(r["outcome"], r["http_status"]) for r in failed] == [("http_error", 500)]


def test_arms_differing_undeclared_are_refused_before_any_file(tmp_path: Path) -> None:
    out = tmp_path / "run"
    lab = ReplayLab()
    with pytest.raises(ConfoundError, match=r"replay\.speed"):
        run_experiment(write_spec(tmp_path, declare="[]"), out, seam=make_seam(lab))
    assert not out.exists() and not lab.engines


def test_allowed_confound_runs_and_is_recorded(tmp_path: Path) -> None:
    out = tmp_path / "run"
    run_experiment(
        write_spec(tmp_path, declare="[]"),
        out,
        allow_confound=("replay.speed",),
        seam=make_seam(ReplayLab()),
    )
    allowed = manifest(out)["allowed_confounds"]
    assert allowed == [{"field": "replay.speed", "values": {"a": 1.0, "b": 2.0}}]


def test_a_blocking_preflight_finding_refuses_unless_forced(tmp_path: Path) -> None:
    finding = {
        "kind": "busy_cpu",
        "detail": "a process uses 90 % of the CPU",
        "advice": "stop it",
        "blocking": True,
    }
    with pytest.raises(EnvironmentProblem, match="90 % of the CPU"):
        run_experiment(
            write_spec(tmp_path), tmp_path / "r1", seam=make_seam(ReplayLab(), findings=(finding,))
        )
    assert not (tmp_path / "r1").exists()
    result = run_experiment(
        write_spec(tmp_path),
        tmp_path / "r2",
        force=True,
        seam=make_seam(ReplayLab(), findings=(finding,)),
    )
    assert result.status == "complete"
    m = manifest(tmp_path / "r2")
    assert m["forced"] is True and m["preflight"][0]["kind"] == "busy_cpu"


def test_a_full_report_on_a_replayed_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    run_experiment(write_spec(tmp_path), out, seam=make_seam(ReplayLab()))
    report = build_report(out)
    assert report.markdown.exists() and report.html.exists()
    summary = report.summary
    assert summary.baseline == "a"
    by_metric = {c.metric: c for c in summary.comparisons}
    # arm b replays the same streams twice as fast: every duration halves, exactly
    assert by_metric["e2e_s"].ratio == pytest.approx(0.5, rel=1e-9)
    assert by_metric["decode_tps"].ratio == pytest.approx(2.0, rel=1e-9)
    assert by_metric["decode_tps"].verdict == "better"


def test_the_run_command_on_the_replay_engine(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``servelab run`` as a user types it, with the real seam: the machine's own preflight
    (``--force``: on this shared machine a finding must not decide the test), the registry's
    replay engine with its own transport, the real clock; then the verdict lines."""
    out = tmp_path / "cli"
    code = main(["run", str(write_spec(tmp_path)), "--out", str(out), "--force", "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "b vs a:" in captured.out and "report: " in captured.out
    assert manifest(out)["status"] == "complete"


def test_a_run_reads_each_input_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``servelab run`` through to its report: the spec is read, the workload loaded and each
    arm resolved once, and the typed objects are passed on (issue 11: the workload used to be
    loaded four times per run and the arms resolved twice)."""
    import servelab.report.quality_scores as quality_scores
    import servelab.runner.experiment_inputs as experiment_inputs

    calls: dict[str, int] = {}

    def counted(name: str, fn: Callable[..., T]) -> Callable[..., T]:
        def wrapper(*args: object, **kwargs: object) -> T:
            calls[name] = calls.get(name, 0) + 1
            return fn(*args, **kwargs)

        return wrapper

    loader = experiment_inputs.load_workload
    monkeypatch.setattr(experiment_inputs, "load_workload", counted("workload", loader))
    monkeypatch.setattr(quality_scores, "load_workload", counted("workload", loader))
    monkeypatch.setattr(experiment_inputs, "read_yaml",
                        counted("spec", experiment_inputs.read_yaml))  # fmt: skip
    monkeypatch.setattr(experiment_inputs, "effective_config",
                        counted("arm", experiment_inputs.effective_config))  # fmt: skip
    out = tmp_path / "once"
    code = main(["run", str(write_spec(tmp_path)), "--out", str(out), "--force", "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert (out / "report.md").is_file() and manifest(out)["status"] == "complete"
    assert calls == {"spec": 1, "workload": 1, "arm": 2}
