"""The typed run model (servelab.store): every released run opens, v1 upgrades, v2 round-trips."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from pydantic import ValidationError

from servelab.errors import StoreError, UsageError
from servelab.records import Observation, Outcome, Phase, ToolCall, Usage
from servelab.store import (
    MANIFEST_SCHEMA_VERSION,
    ArmEntry,
    EngineStart,
    KvReported,
    Look,
    Manifest,
    PlannedBlock,
    Resume,
    RowContext,
    StoredStop,
    build_row,
    read_manifest,
    read_run,
    write_manifest,
)
from servelab.store.jsonl import JsonlWriter

RELEASED = Path(__file__).parents[1] / "fixtures" / "runs" / "release-0.1.0"
KINDS = ("demo", "bench", "compare", "import")
SPEC_COPIES = ("baseline", "interleaved", "schedule", "seed", "decision_metrics", "confidence",
               "stop", "name", "declared")  # fmt: skip


def _v1(kind: str) -> dict[str, object]:
    data = json.loads((RELEASED / kind / "manifest.json").read_text(encoding="utf-8"))
    assert isinstance(data, dict) and data["schema_version"] == 1
    return data


@pytest.mark.parametrize("kind", KINDS)
def test_every_released_run_opens(kind: str) -> None:
    run = read_run(RELEASED / kind)
    assert run.manifest.schema_version == MANIFEST_SCHEMA_VERSION
    assert run.rows and not run.bad_lines
    assert run.dir.root == RELEASED / kind
    assert set(run.manifest.arm_names) >= {str(r["arm"]) for r in run.rows}
    with pytest.raises(TypeError):
        run.rows[0]["arm"] = "x"  # type: ignore[index]


def test_v1_experiment_upgrade_drops_the_copies_and_keeps_the_values() -> None:
    v1 = _v1("demo")
    manifest = Manifest.from_json(v1)
    written = manifest.to_json()
    assert written["schema_version"] == 2
    assert not set(SPEC_COPIES) & set(written)
    assert written["spec"] == v1["spec"]
    assert manifest.baseline == v1["baseline"] == "none"
    assert manifest.arm_names == ("none", "ngram-simple")
    assert manifest.seed == v1["seed"]
    assert manifest.decision_metrics == tuple(v1["decision_metrics"])  # type: ignore[arg-type]
    assert manifest.confidence == v1["confidence"]
    assert manifest.interleaved is v1["interleaved"] is True
    stop = manifest.stop
    assert stop.model_dump() == {**v1["stop"], "spending": "obrien_fleming"}  # type: ignore[dict-item]
    assert manifest.name == v1["name"]
    assert manifest.declared == tuple(v1["declared"])  # type: ignore[arg-type]
    for key, value in v1.items():  # everything else is kept as it was
        if key not in (*SPEC_COPIES, "schema_version"):
            assert json.loads(json.dumps(written[key])) == value, key


@pytest.mark.parametrize("kind", ("bench", "compare", "import"))
def test_v1_runs_without_a_spec_keep_their_settings(kind: str) -> None:
    v1 = _v1(kind)
    written = Manifest.from_json(v1).to_json()
    assert {k: v for k, v in written.items() if k != "schema_version"} == {
        k: v for k, v in v1.items() if k != "schema_version"
    }


def test_defaults_of_runs_without_settings() -> None:
    bench = read_manifest(RELEASED / "bench")
    assert (bench.baseline, bench.interleaved, bench.seed, bench.confidence) == (
        "bench", True, 0, 0.95,
    )  # fmt: skip
    assert bench.decision_metrics == ("decode_tps", "ttft_s", "e2e_s")
    assert (bench.stop.min_blocks, bench.stop.max_blocks, bench.stop.min_effect) == (1, None, 0.03)
    assert bench.max_tokens == 32
    imported = read_manifest(RELEASED / "import")
    assert imported.interleaved is False and imported.baseline == "baseline"
    assert imported.decision_metrics == ("decode_tps", "e2e_s")
    empty = Manifest.from_json({"schema_version": 1, "kind": "import", "decision_metrics": []})
    assert empty.decision_metrics == ("decode_tps", "ttft_s", "e2e_s")
    assert empty.baseline == "" and empty.arm_names == ()


@pytest.mark.parametrize("kind", KINDS)
def test_v2_round_trips_byte_stable(kind: str, tmp_path: Path) -> None:
    shutil.copytree(RELEASED / kind, tmp_path / kind)
    root = tmp_path / kind
    write_manifest(root, read_manifest(root))
    first = (root / "manifest.json").read_bytes()
    write_manifest(root, read_manifest(root))
    assert (root / "manifest.json").read_bytes() == first
    assert read_manifest(root) == read_manifest(RELEASED / kind)


def test_a_newer_format_is_refused_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(
        json.dumps({"schema_version": 3, "servelab_version": "0.9.0", "kind": "bench"}), "utf-8"
    )
    with pytest.raises(StoreError) as err:
        read_manifest(tmp_path)
    message = str(err.value)
    assert "\n" not in message and "upgrade servelab to 0.9.0" in message


@pytest.mark.parametrize(
    ("content", "error", "words"),
    [
        (None, UsageError, "has no manifest.json"),
        ("{not json", StoreError, "cannot read"),
        ("[1, 2]", StoreError, "is not a JSON object"),
        ('{"schema_version": 2, "kind": "nonsense"}', StoreError, "kind"),
        ('{"schema_version": 2, "kind": "bench", "bogus": 1}', StoreError, "bogus"),
        ('{"schema_version": "two"}', StoreError, "not a format version"),
    ],
)
def test_damaged_manifests_give_one_line(
    tmp_path: Path, content: str | None, error: type[Exception], words: str
) -> None:
    if content is not None:
        (tmp_path / "manifest.json").write_text(content, "utf-8")
    with pytest.raises(error) as err:
        read_manifest(tmp_path)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="is not a directory"):
        read_run(tmp_path / "missing")


def test_with_helpers_return_new_manifests_and_are_written() -> None:
    start = Manifest(kind="experiment", run_id="r", created_utc="2026-11-30T00:00:00Z",
                     spec={"blocks": 2, "baseline": "a"},
                     arms={"a": ArmEntry(), "b": ArmEntry()}, status="starting")  # fmt: skip
    describe = {"kind": "llamacpp", "argv": ["x"]}
    nxt = (
        start.with_status("running").with_stage("blocks")
        .with_plan([PlannedBlock(block=0, arm="a", concurrency=1)])
        .with_start("b", EngineStart(block=0, concurrency=1, t_unix_s=1.5, describe=describe))
        .with_arm_kv("a", None)
        .with_look(Look(after_block=1, decided=True, reason="done", stop=True))
        .with_resume(Resume(t_utc="2026-11-30T01:00:00Z", previous_status="crashed"))
        .with_forced()
    )  # fmt: skip
    assert start.status == "starting" and start.stages == () and not start.arms["a"].kv_probed
    assert nxt.arms["a"].kv_probed and nxt.arms["a"].kv_reported is None
    assert nxt.arms["b"].describes == [describe]
    written = nxt.to_json()
    assert list(written)[:5] == ["schema_version", "servelab_version", "kind", "run_id",
                                 "created_utc"]  # fmt: skip
    assert written["arms"] == {"a": {"kv_reported": None}, "b": {"starts": [
        {"block": 0, "concurrency": 1, "t_unix_s": 1.5, "describe": describe}]}}  # fmt: skip
    assert Manifest.from_json(written) == nxt
    assert nxt.stop.min_blocks == 2 and nxt.baseline == "a"


def test_spec_less_settings_are_written_under_their_names() -> None:
    m = Manifest(kind="compare", run_id="c", baseline="x", interleaved=False,
                 decision_metrics=("e2e_s",), stop=StoredStop(max_blocks=8))  # fmt: skip
    data = m.to_json()
    assert (data["baseline"], data["interleaved"], data["decision_metrics"]) == (
        "x", False, ["e2e_s"],
    )  # fmt: skip
    assert data["stop"] == {"max_blocks": 8}
    assert (m.baseline, m.interleaved, m.stop.max_blocks, m.stop.min_blocks) == ("x", False, 8, 1)


def test_kv_reported_keeps_its_numbers() -> None:
    kv = KvReported(kv_mib=90.0, recurrent_mib=0.0, log="kv-probe-a.log")
    assert Manifest().with_arm_kv("a", kv).arms["a"].kv_reported == kv


def test_request_row_json_keeps_the_layout(tmp_path: Path) -> None:
    obs = Observation(
        outcome=Outcome.OK, wait_s=0.0, end_s=1.0, first_byte_s=0.1, first_content_s=0.2,
        chunk_t_s=(0.2, 0.5, 1.0), chunk_tokens=(1, 1, 1), text="hi", finish_reason="stop",
        usage=Usage(5, 3), server_timings={"cache_n": 0}, http_status=200,
        tool_calls=(ToolCall(0, "f", "{}", "id1"),), extra={"saw_done": True},
    )  # fmt: skip
    ctx = RowContext("r", "a", 0, Phase.TRIAL, 3, "p", 1, 1.0, "b0/a/c1/0")
    row = build_row(obs, ctx)
    data = row.to_json()
    assert list(data)[:17] == ["schema_version", "run_id", "arm", "block", "phase", "seq",
                               "prompt_id", "concurrency", "t_send_unix_s", "request_id",
                               "rate_rps", "t_sched_unix_s", "lag_s", "session_id", "turn",
                               "slo_met", "outcome"]  # fmt: skip
    assert data["schema_version"] == 2 and data["rate_rps"] is None and data["slo_met"] is None
    assert list(data)[-3:] == ["tool_calls", "invalid_utf8_bytes", "saw_done"]
    assert data["tool_calls"] == [{"index": 0, "name": "f", "arguments": "{}", "id": "id1"}]
    assert data["usage"] == {"prompt_tokens": 5, "completion_tokens": 3}
    assert (data["phase"], data["chunk_t_s"], data["saw_done"]) == ("trial", [0.2, 0.5, 1.0], True)
    with JsonlWriter(tmp_path / "requests.jsonl") as writer:
        writer.write(row)
    line = (tmp_path / "requests.jsonl").read_text(encoding="utf-8")
    assert json.loads(line) == data and list(json.loads(line)) == list(data)


def test_an_experiment_keeps_its_settings_in_spec_only() -> None:
    with pytest.raises(ValidationError, match="baseline: an experiment keeps it in spec"):
        Manifest(kind="experiment", spec={"baseline": "a"}, baseline="a")
    v2 = {"schema_version": 2, "kind": "experiment", "spec": {"seed": 1}, "seed": 1}
    with pytest.raises(StoreError, match="seed: an experiment keeps it in spec") as err:
        Manifest.from_json(v2)
    assert "\n" not in str(err.value)
