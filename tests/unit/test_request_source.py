"""The conversation and trace request sources driven through the real send loop (``run_jobs``)
over the replay engine on a fake clock: turns follow each other with the model's replies fed
back and the scripted think time; traces keep their schedule and output lengths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from servelab.client.clock import WallAnchor
from servelab.client.transport import Answer, SentRequest, function_transport
from servelab.engines.replay import ReplayEngine, ReplayLab
from servelab.errors import UsageError
from servelab.records import Observation, Outcome, Phase
from servelab.runner.drive import Job, RequestParams, RequestSource, Schedule, Sent, run_jobs
from servelab.runner.lifecycle import BENCH_RECORDS, ArmRun, Block, BlockExecutor, Lifecycle
from servelab.runner.progress import NullReporter
from servelab.runner.request_source import (
    ConversationSource,
    TraceSource,
    conversation_jobs,
    conversation_source,
    trace_jobs,
    trace_source,
)
from servelab.spec.engine import EngineConfig
from servelab.store.jsonl import JsonlWriter, read_jsonl
from servelab.store.rundir import RunDir, create_run_dir
from servelab.workloads import Workload, parse_workload
from servelab.workloads.trace import parse_trace
from tests.unit.replay_harness import STREAMS, make_seam
from tests.unit.test_workload_sessions import SESSION_YAML

PARAMS = RequestParams(max_tokens=16, temperature=0.0, seed=0, ignore_eos=False)


class Recorder:
    """The replay engine behind a transport that keeps every request body it was sent."""

    def __init__(self, lab: ReplayLab) -> None:
        self.engine = lab.create_engine(EngineConfig(kind="replay", model=str(STREAMS)), Path("x"))
        self.engine.launch()
        self.bodies: list[dict[str, object]] = []
        self.sessions: list[tuple[str | None, int | None]] = []  # each row's, when recorded

    def handle(self, request: SentRequest) -> Answer:
        self.bodies.append(json.loads(request.body))
        return self.engine.handle(request)


def drive(
    lab: ReplayLab, recorder: Recorder, source: RequestSource, jobs: list[Job],
    concurrency: int = 1, schedule: Schedule | None = None,
) -> list[tuple[Job, Sent, Observation]]:  # fmt: skip
    seen: list[tuple[Job, Sent, Observation]] = []

    def record(job: Job, sent: Sent, obs: Observation) -> None:  # as BlockExecutor.record
        seen.append((job, sent, obs))
        recorder.sessions.append(source.session(job))

    run_jobs(
        recorder.engine, jobs, concurrency, 60.0, source.request_for, record, lab.clock,
        WallAnchor.take(lab.clock), lambda: False, function_transport(recorder.handle),
        schedule=schedule, follow=source.follow,
    )  # fmt: skip
    return seen


@pytest.fixture(autouse=True)
def _in_a_temp_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The replay engines here log to the relative path "x": keep it out of the checkout."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def desk() -> Workload:
    return parse_workload(SESSION_YAML, source="w.yaml")


def test_a_conversation_runs_every_turn_with_the_replies_fed_back(desk: Workload) -> None:
    lab = ReplayLab()
    rec = Recorder(lab)
    source = ConversationSource(desk, rec.engine, PARAMS, seed=0)
    jobs = conversation_jobs(desk, 1, Phase.TRIAL, ["b0/a/c1/0"])
    seen = drive(lab, rec, source, jobs)
    assert [(j.turn, j.request_id) for j, _, _ in seen] == [
        (0, "b0/a/c1/0"), (1, "b0/a/c1/0#t1"), (2, "b0/a/c1/0#t2")
    ]  # fmt: skip
    assert rec.sessions == [("order#0", t) for t in range(3)]
    assert [source.prompt_id(j) for j, _, _ in seen] == ["order/0", "order/1", "order/2"]
    first_reply = seen[0][2]
    second = rec.bodies[1]["messages"]
    assert isinstance(second, list)
    assert second[2]["role"] == "assistant" and second[2]["content"] == first_reply.text
    assert second[3]["role"] == "tool" and second[3]["content"] == '{"status": "shipped"}'
    assert rec.bodies[0]["max_tokens"] == 16  # the turn's 32 is capped by the run's 16
    assert [len(b["messages"]) for b in rec.bodies] == [2, 4, 6]  # type: ignore[arg-type]


def test_think_time_separates_a_turn_from_the_reply_before(desk: Workload) -> None:
    lab = ReplayLab()
    rec = Recorder(lab)
    source = ConversationSource(desk, rec.engine, PARAMS, seed=0)
    seen = drive(lab, rec, source, conversation_jobs(desk, 1, Phase.TRIAL))
    (_, sent1, obs1), (_, sent2, _), (_, sent3, obs3) = seen
    gap_1_2 = sent2.unix_s - (sent1.unix_s + obs1.end_s)
    assert gap_1_2 == pytest.approx(0.2, abs=1e-3)  # the tool turn's fixed think_s
    gap_2_3 = sent3.unix_s - (sent2.unix_s + seen[1][2].end_s)
    plan_think = source.workload.sessions[0].turns[2].think_s
    assert isinstance(plan_think, list) and plan_think[0] <= gap_2_3 <= plan_think[1] + 1e-3
    assert obs3.outcome is Outcome.OK


def test_concurrent_conversations_of_one_session_keep_their_own_replies(desk: Workload) -> None:
    lab = ReplayLab()
    rec = Recorder(lab)
    source = ConversationSource(desk, rec.engine, PARAMS, seed=0)
    jobs = [Job("", 0, Phase.TRIAL), Job("", 0, Phase.TRIAL), Job("", 1, Phase.TRIAL)]
    seen = drive(lab, rec, source, jobs, concurrency=3)  # unnumbered: numbered when sent
    assert len(seen) == 3 + 3 + 1
    turns: dict[str | None, list[int | None]] = {}
    for label, turn in rec.sessions:
        turns.setdefault(label, []).append(turn)
    names = sorted(str(label).split("#")[0] for label in turns)
    assert names == ["order", "order", "ticket"]  # three conversations, numbered apart
    assert all(t == list(range(3 if str(k).startswith("order") else 1)) for k, t in turns.items())


def test_open_loop_schedules_conversations_and_their_follow_ups(desk: Workload) -> None:
    lab = ReplayLab()
    rec = Recorder(lab)
    source = ConversationSource(desk, rec.engine, PARAMS, seed=0)
    jobs = conversation_jobs(desk, 2, Phase.TRIAL)
    seen = drive(lab, rec, source, jobs, schedule=Schedule((0.0, 5.0)))
    assert sorted((j.prompt_index, j.turn) for j, _, _ in seen) == [(0, 0), (0, 1), (0, 2), (1, 0)]


def test_warm_up_conversations_stop_after_their_first_turn(desk: Workload) -> None:
    lab = ReplayLab()
    rec = Recorder(lab)
    source = ConversationSource(desk, rec.engine, PARAMS, seed=0)
    seen = drive(lab, rec, source, source.start_jobs(2, Phase.WARMUP, ["w/0", "w/1"]))
    assert [(j.prompt_index, j.turn, j.session) for j, _, _ in seen] == [(0, 0, 0), (1, 0, 1)]


def test_a_failed_turn_ends_its_conversation(desk: Workload) -> None:
    lab = ReplayLab(fail=frozenset({1}))
    rec = Recorder(lab)
    source = ConversationSource(desk, rec.engine, PARAMS, seed=0)
    seen = drive(lab, rec, source, conversation_jobs(desk, 1, Phase.TRIAL))
    assert len(seen) == 1 and seen[0][2].outcome is not Outcome.OK


def test_a_trace_keeps_its_schedule_output_lengths_and_sessions() -> None:
    trace = parse_trace(
        '{"t_s": 0, "prompt": "Hello", "output_tokens": 8, "session_id": "u1"}\n'
        '{"t_s": 1, "prompt": "Again", "output_tokens": 4, "session_id": "u1"}\n'
        '{"t_s": 3, "prompt": "Other", "output_tokens": 2}\n',
        source="t",
    )
    lab = ReplayLab()
    rec = Recorder(lab)
    source = TraceSource(trace, rec.engine, PARAMS)
    jobs = trace_jobs(trace)
    seen = drive(lab, rec, source, jobs, schedule=Schedule(tuple(trace.offsets_s(2.0))))
    sched = sorted(s.sched_unix_s or 0.0 for _, s, _ in seen)
    assert [round(t - sched[0], 6) for t in sched] == [0.0, 0.5, 1.5]
    assert sorted((b["prompt"], b["max_tokens"], b["ignore_eos"]) for b in rec.bodies) == [
        ("Again", 4, True), ("Hello", 8, True), ("Other", 2, True)
    ]  # fmt: skip
    assert [source.session(j) for j in jobs] == [("u1", 0), ("u1", 1), (None, None)]
    assert [source.prompt_id(j) for j in jobs] == ["line-1", "line-2", "line-3"]
    assert [j.prompt_index for j in source.start_jobs(4, Phase.WARMUP)] == [0, 1, 2, 0]


def test_a_trace_in_chat_form_sends_one_user_message() -> None:
    trace = parse_trace('{"t_s": 0, "prompt": "Hi", "output_tokens": 3}', source="t")
    engine = ReplayEngine(EngineConfig(kind="replay", model=str(STREAMS)), Path("x"))
    body = TraceSource(trace, engine, PARAMS, chat=True).request_for(trace_jobs(trace)[0]).payload
    assert body["messages"] == [{"role": "user", "content": "Hi"}] and body["max_tokens"] == 3


def test_an_engine_without_a_tokenizer_refuses_token_count_prompts() -> None:
    trace = parse_trace('{"t_s": 0, "prompt_tokens": 9, "output_tokens": 3}', source="t")
    engine = ReplayEngine(EngineConfig(kind="replay", model=str(STREAMS)), Path("x"))
    with pytest.raises(UsageError, match="give the trace's prompts as text"):
        TraceSource(trace, engine, PARAMS).prepare()


def run_block(tmp_path: Path, workload: Workload, block: Block) -> list[dict[str, object]]:
    """Run ``block`` through the real block executor on the replay engine; its rows."""
    run = RunDir(tmp_path / "run")
    create_run_dir(run)
    seam = make_seam(ReplayLab())
    executor = BlockExecutor(
        run, workload, seam, Lifecycle(BENCH_RECORDS, seam), NullReporter(), warmup=1,
        timeout_s=60.0, startup_timeout_s=lambda arm: 10.0,
    )  # fmt: skip
    writer = JsonlWriter(run.requests)
    try:
        executor.run_block(block, writer)
    finally:
        writer.close()
        executor.stop()
    return read_jsonl(run.requests).rows


def test_a_block_of_conversations_writes_one_row_per_turn_with_its_session(
    desk: Workload, tmp_path: Path
) -> None:
    engine = EngineConfig(kind="replay", model=str(STREAMS))
    trials = tuple(conversation_jobs(desk, 2, Phase.TRIAL, ["b0/a/0", "b0/a/1"]))
    block = Block(ArmRun("a", engine, PARAMS), 0, 2, trials, restart=True,
                  source=conversation_source(desk, PARAMS, seed=0))  # fmt: skip
    rows = run_block(tmp_path, desk, block)
    warm, trial = rows[0], rows[1:]
    assert (warm["phase"], warm["prompt_id"], warm["turn"]) == ("warmup", "order/0", 0)
    got = sorted((r["session_id"], r["turn"], r["prompt_id"], r["request_id"]) for r in trial)
    assert got == [
        ("order#0", 0, "order/0", "b0/a/0"), ("order#0", 1, "order/1", "b0/a/0#t1"),
        ("order#0", 2, "order/2", "b0/a/0#t2"), ("ticket#1", 0, "ticket/0", "b0/a/1"),
    ]  # fmt: skip


def test_a_block_replays_a_trace_on_its_scaled_schedule(desk: Workload, tmp_path: Path) -> None:
    trace = parse_trace(
        '{"t_s": 100, "prompt": "a", "output_tokens": 4, "session_id": "u"}\n'
        '{"t_s": 104, "prompt": "b", "output_tokens": 2, "session_id": "u"}\n',
        source="t",
    )
    engine = EngineConfig(kind="replay", model=str(STREAMS))
    offsets = tuple(trace.offsets_s(4.0))
    block = Block(ArmRun("a", engine, PARAMS), 0, 0, tuple(trace_jobs(trace)), restart=True,
                  offsets_s=offsets, source=trace_source(trace, PARAMS))  # fmt: skip
    rows = run_block(tmp_path, desk, block)
    warm, *trial = rows
    assert warm["phase"] == "warmup" and warm["prompt_id"] == "line-1"
    assert [(r["prompt_id"], r["session_id"], r["turn"]) for r in trial] == [
        ("line-1", "u", 0), ("line-2", "u", 1)
    ]  # fmt: skip
    gap = float(trial[1]["t_sched_unix_s"]) - float(trial[0]["t_sched_unix_s"])  # type: ignore[arg-type]
    assert gap == pytest.approx(1.0)  # 4 s of trace time at 4x
