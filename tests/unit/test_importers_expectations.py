"""servelab import with per-row expectations: the workload an import derives from its rows.

Known answers on small hand-made rows (what each prompt expects, where its language comes
from, rows that contradict each other), and the published voice-agent rows (copies in
tests/fixtures/reference, see its README) imported and reported end to end, their tool
accuracy and false fires checked against counts taken from the JSON by hand.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from servelab.cli.main import main
from servelab.errors import UsageError
from servelab.importers import ImportOptions, import_results
from servelab.importers.expectations import (
    ExpectationSources,
    RowExpectations,
    derive_workload,
)
from servelab.report.build import build_report
from servelab.workloads import Workload, load_workload

FIXTURES = Path(__file__).parents[1] / "fixtures"
V5 = FIXTURES / "reference" / "qwen3.6-vllm-2x3090" / "v5_2026_05_17" / "data"
V5_FILES = [V5 / "results_dense_27b_tp1.json", V5 / "results_moe_35b_mtp_tp2.json"]
TOOLS = FIXTURES / "import" / "reachy-tools.workload.json"  # the 8 reachy-mini-agent tools


def _row(pid: str | None, index: int, **said: object) -> dict[str, object]:
    row: dict[str, object] = {"arm": "a", "source": {"file": "/x/rows.json", "index": index}}
    if pid is not None:
        row["prompt_id"] = pid
    return {**row, **said}


def _derive(rows: list[dict[str, object]], **sources: Any) -> Workload:
    tally = RowExpectations()
    for row in rows:
        tally.add(row)
    derived = derive_workload(tally, ExpectationSources(**sources))
    assert derived is not None
    return derived.workload


EXPECTED = {"expected_tool": "expected_tool", "prompt_text": "prompt_text"}


def test_one_prompt_per_id_with_its_expected_outcome() -> None:
    rows = [
        _row("c1", 0, expected_tool=None, prompt_text="你好"),
        _row(
            "t1", 1, expected_tool="move_head", prompt_text="向左轉。", tool_calls=[{"name": "t"}]
        ),
        _row("c1", 2, expected_tool=None, prompt_text="你好"),  # a second trial
        _row("c2", 3, expected_tool=None, tool_calls=[{"name": "play_emotion"}]),
        _row("t2", 4, expected_tool="stop_motion"),
    ]
    workload = _derive(rows, lang="zh-TW", columns=EXPECTED)
    kinds = [(p.id, p.expect.kind, p.expect.tool) for p in workload.prompts]
    assert kinds == [("c1", "no_tool", None), ("t1", "tool", "move_head"),
                     ("c2", "no_tool", None), ("t2", "tool", "stop_motion")]  # fmt: skip
    assert sum(p.expect.kind == "no_tool" for p in workload.prompts) == 2
    assert workload.prompts[1].messages is not None
    assert workload.prompts[1].messages[0].content == "向左轉。"
    assert workload.prompts[3].messages is not None  # no text in the source: the id stands in
    assert workload.prompts[3].messages[0].content == "(prompt t2: text not in the source)"
    assert {p.lang for p in workload.prompts} == {"zh-TW"}
    # no --workload: the expected and the called tools, known by name only
    assert [t.name for t in workload.tools] == ["move_head", "stop_motion", "t", "play_emotion"]
    assert workload.tools[0].function.parameters == {"type": "object"}


def test_rows_that_contradict_are_refused_naming_the_prompt() -> None:
    tally = RowExpectations()
    tally.add(_row("c1", 0, expected_tool=None))
    with pytest.raises(UsageError) as info:
        tally.add(_row("c1", 7, expected_tool="play_emotion"))
    message = str(info.value)
    assert "\n" not in message
    assert "prompt 'c1'" in message and "expected tool" in message
    assert "none (no tool) at rows.json row 0" in message
    assert "'play_emotion' at rows.json row 7" in message
    tally.add(_row("t1", 1, prompt_text="向左轉。"))
    with pytest.raises(UsageError, match="prompt 't1': its rows disagree on the text"):
        tally.add(_row("t1", 2, prompt_text="向右轉。"))


def test_an_expectation_needs_a_prompt_id() -> None:
    with pytest.raises(UsageError, match=r"no prompt id.*--map COL=prompt_id"):
        RowExpectations().add(_row(None, 0, expected_tool="move_head"))


def test_nothing_asked_derives_nothing() -> None:
    tally = RowExpectations()
    tally.add(_row("p1", 0))
    assert derive_workload(tally, ExpectationSources()) is None


def test_workload_gives_tools_argument_checks_and_language() -> None:
    base = load_workload(TOOLS)
    rows = [
        # the workload's en-turn-left by text (another id): its argument check comes along
        _row("x1", 0, expected_tool="move_head", prompt_text="Turn your head to the left."),
        # same id as the workload's, different text: not that prompt
        _row("en-hello", 1, expected_tool=None, prompt_text="Good morning"),
        _row("x3", 2, expected_tool="stop_motion", lang="zh-TW"),
    ]
    workload = _derive(rows, base=base, preset_lang="en-US", preset="p",
                       columns={**EXPECTED, "lang": "lang"})  # fmt: skip
    first, second, third = workload.prompts
    assert first.expect.args is not None and first.expect.args["yaw"].sign == "negative"
    assert (first.lang, second.lang, third.lang) == ("en", "en-US", "zh-TW")
    assert workload.tools == base.tools and len(workload.tools) == 8
    assert workload.name == "import-reachy-tools"
    with pytest.raises(UsageError, match="expects tool 'dance', which workload 'reachy-tools'"):
        _derive([_row("t3", 0, expected_tool="dance")], base=base, columns=EXPECTED)


def test_lang_flag_wins_over_the_workload_and_the_preset() -> None:
    rows = [_row("x1", 0, expected_tool="move_head", prompt_text="Turn your head to the left.")]
    workload = _derive(rows, base=load_workload(TOOLS), lang="zh-TW", preset_lang="en")
    assert workload.prompts[0].lang == "zh-TW"


def test_a_prompt_id_a_workload_cannot_hold_is_one_line() -> None:
    with pytest.raises(UsageError, match="prompt id 'a b' cannot name a workload prompt"):
        _derive([_row("a b", 0, expected_tool=None)], columns=EXPECTED)


# --- the published voice-agent rows, end to end ---------------------------------------------


def _by_hand(path: Path) -> dict[str, tuple[int, int]]:
    """Tool accuracy and false fires of one v5 file, counted from its JSON: a tool prompt is
    right when the reply calls the expected tool with a JSON object holding the tool's
    required arguments (every schema here lists its parameters; none forbids others)."""
    rows = json.loads(path.read_text(encoding="utf-8"))["rows"]
    tools = json.loads(TOOLS.read_text(encoding="utf-8"))["tools"]
    required = {t["function"]["name"]: t["function"]["parameters"].get("required", [])
                for t in tools}  # fmt: skip

    def right(row: dict[str, Any]) -> bool:
        calls = [c for c in row["tool_calls"] if c["name"] == row["expected_tool"]]
        args = [json.loads(c["arguments"] or "{}") for c in calls]
        return any(isinstance(a, dict) and set(required[row["expected_tool"]]) <= set(a)
                   for a in args)  # fmt: skip

    expect = [r for r in rows if r["expected_tool"]]
    talk = [r for r in rows if not r["expected_tool"]]
    han = [r for r in rows if any("\u4e00" <= ch <= "\u9fff" for ch in r["text"])]
    return {
        "tool_accuracy": (sum(right(r) for r in expect), len(expect)),
        "false_fire_rate": (sum(bool(r["tool_calls"]) for r in talk), len(talk)),
        "han_replies": (len(han), len(rows)),
    }


def _rate(summary: dict[str, Any], arm: str, name: str) -> tuple[int, int]:
    rate = summary["quality"]["arms"][arm]["rates"][name]
    assert rate["ci_low"] <= rate["p"] <= rate["ci_high"]  # every rate carries its interval
    return rate["k"], rate["n"]


def test_v5_rows_scored_against_the_workload_file(tmp_path: Path) -> None:
    options = ImportOptions(preset="qwen36-vllm-v5", workload=str(TOOLS))
    result = import_results(V5_FILES, options, out=tmp_path / "run")
    stored = load_workload(tmp_path / "run" / "inputs" / "workload.json")
    assert result.workload is not None and result.workload.content_hash == stored.content_hash
    assert result.workload.prompts == 10
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["workload"]["content_hash"] == stored.content_hash
    kinds = [p.expect.kind for p in stored.prompts]
    assert (kinds.count("no_tool"), kinds.count("tool")) == (4, 6)
    assert {p.lang for p in stored.prompts} == {"zh-TW"}
    summary: dict[str, Any] = build_report(tmp_path / "run").summary.to_json()
    for path, arm in zip(V5_FILES, ("dense_27b_tp1", "moe_35b_mtp_tp2"), strict=True):
        hand = _by_hand(path)
        assert _rate(summary, arm, "tool_accuracy") == hand["tool_accuracy"]
        assert _rate(summary, arm, "false_fire_rate") == hand["false_fire_rate"]
        classes = summary["quality"]["arms"][arm]["script_classes"]
        assert sum(classes.values()) == hand["han_replies"][0]
    assert summary["quality"]["notes"] == []  # scored with expectations


def test_changed_stored_workload_is_not_trusted(tmp_path: Path) -> None:
    options = ImportOptions(preset="qwen36-vllm-v5", workload=str(TOOLS))
    import_results(V5_FILES, options, out=tmp_path / "run")
    stored = tmp_path / "run" / "inputs" / "workload.json"
    data = json.loads(stored.read_text(encoding="utf-8"))
    data["prompts"][0]["expect"] = {"kind": "tool", "tool": "play_emotion"}
    stored.write_text(json.dumps(data), encoding="utf-8")
    summary: dict[str, Any] = build_report(tmp_path / "run").summary.to_json()
    assert any("changed since the run" in n for n in summary["quality"]["notes"])


def test_import_without_expectations_stores_no_workload(tmp_path: Path) -> None:
    maps = ("pid=prompt_id", "ttft_ms=ttft_s", "e2e_ms=e2e_s", "out_tok=n_out")
    result = import_results(
        V5_FILES[:1], ImportOptions(maps=maps, rows_key="rows"), out=tmp_path / "run"
    )
    assert result.workload is None and not (tmp_path / "run" / "inputs").exists()
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text(encoding="utf-8"))
    assert "workload" not in manifest


def test_cli_import_then_report_gives_tool_accuracy_per_arm(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The Must-show: `servelab import` of the two published files with the preset alone (its
    workload is the built-in voice-agent), then `servelab report`; summary.json per arm."""
    out = tmp_path / "v5"
    argv = ["import", *map(str, V5_FILES), "--preset", "qwen36-vllm-v5", "--out", str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    assert "expectations: expected outcomes from column expected_tool" in capsys.readouterr().out
    assert main(["report", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    stored = load_workload(out / "inputs" / "workload.json")
    assert stored.tools == load_workload("voice-agent").tools
    for path, arm in zip(V5_FILES, ("dense_27b_tp1", "moe_35b_mtp_tp2"), strict=True):
        hand = _by_hand(path)
        assert _rate(summary, arm, "tool_accuracy") == hand["tool_accuracy"]
        assert _rate(summary, arm, "false_fire_rate") == hand["false_fire_rate"]
        classes = summary["quality"]["arms"][arm]["script_classes"]
        assert "traditional" in classes and sum(classes.values()) == hand["han_replies"][0]
    # dense 27B fired play_emotion on small talk; the exact test between the arms says so
    assert _by_hand(V5_FILES[0])["false_fire_rate"] == (7, 12)
    ff = summary["quality"]["comparisons"]["moe_35b_mtp_tp2"]["false_fire_rate"]
    assert ff["verdict"] == "better" and ff["p_value"] < 0.05


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--map", "nosuchcolumn=expected_tool"], "column 'nosuchcolumn' not found"),
        (["--map", "expected_tool=nosuchcolumn"], "unknown target 'nosuchcolumn'"),
        (["--workload", "no/such/workload.yaml"], "file not found"),
        (["--workload", "no-such-workload"], "unknown workload 'no-such-workload'"),
        (["--lang", "Traditional Chinese"], "--lang 'Traditional Chinese': not a language tag"),
    ],
)
def test_bad_expectation_options_are_one_line_exit_2(
    extra: list[str], needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    argv = ["import", *map(str, V5_FILES), "--preset", "qwen36-vllm-v5", "--out", str(out)]
    assert main([*argv, *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("servelab: error: ") and needle in err[0]
    assert not out.exists()  # a refused import leaves nothing behind


def test_contradicting_rows_refuse_the_import(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = json.loads(V5_FILES[0].read_text(encoding="utf-8"))
    doc["rows"][1]["expected_tool"] = "play_emotion"  # c1, trial 2
    path = tmp_path / "results_bad.json"
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    out = tmp_path / "run"
    argv = ["import", str(path), "--preset", "qwen36-vllm-v5", "--workload", str(TOOLS)]
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "prompt 'c1': its rows disagree on the expected tool" in err[0]
    assert "results_bad.json row 0" in err[0] and "results_bad.json row 1" in err[0]
    assert not out.exists()
