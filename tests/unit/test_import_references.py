"""Imports keep the source's own reference, refuse undeclared differences, block = repetition.

The published llama.cpp matrix (tests/fixtures/reference, README there) compares its 1000-token
arms with ``baseline-1000tok`` and the others with ``baseline``; its companion file
``summary_by_config.csv`` says so. Small hand-written CSVs cover the rest. No engine.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from servelab.cli.main import main
from servelab.errors import UsageError
from servelab.importers import ImportOptions, import_results
from servelab.importers.pairing import ReferencesSpec, read_references
from servelab.store import ArmEntry, Manifest
from servelab.store.manifest import compared_pairs

ANALYSIS = Path(__file__).parents[1] / "fixtures" / "reference" / (
    "qwen3.6-speculative-decoding-rtx3090/analysis"
)  # fmt: skip
SUMMARY_CSV = ANALYSIS / "summary.csv"
COMPANION = ANALYSIS / "summary_by_config.csv"
PRESET = ("--preset", "qwen36-llamacpp-summary")
MAPS = ("--arm-column", "cfg", "--map", "tok_s=decode_tps", "--map", "prompt=prompt_id")


def _manifest(run: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    return data


def _rows(run: Path) -> list[dict[str, Any]]:
    lines = (run / "requests.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def _csv(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("servelab: error: ")
    return err[0]


def _notes(manifest: dict[str, Any], kind: str) -> list[str]:
    return [n for n in manifest["notes"] if n.startswith(kind + ":")]


# A two-arm source whose arms differ in max_tokens (and name their file one-to-one).
TWO_ARMS = (
    "cfg,prompt,tok_s,max_tokens,file\n"
    "a,p1,100,300,a.json\na,p2,101,300,a.json\n"
    "b,p1,90,1000,b.json\nb,p2,91,1000,b.json\n"
)


def test_the_preset_finds_the_companion_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert main(["import", str(SUMMARY_CSV), *PRESET, "--out", str(out)]) == 0
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "summary_by_config.csv" in err[0] and "--references none" in err[0]
    assert "ngcache-1000tok: 10 rows (compared with baseline-1000tok)" in captured.out
    assert "baseline-1000tok: 10 rows (reference)" in captured.out
    manifest = _manifest(out)
    refs = manifest["references"]
    assert len(refs) == 17  # 19 arms, two of them their own reference
    assert refs["draft-q35-08b-max8"] == "baseline"
    assert {a for a, r in refs.items() if r == "baseline-1000tok"} == {
        "ngmod-n24-1000tok", "draft-q35-08b-1000tok", "ngcache-1000tok",
    }  # fmt: skip
    assert "baseline" not in refs and "baseline-1000tok" not in refs
    source = manifest["source"]["references"]
    assert source["path"] == str(COMPANION) and source["found_by_preset"] is True
    assert (source["config_column"], source["reference_column"]) == ("config", "reference")
    assert len(source["sha256"]) == 64 and "declared" not in manifest["source"]
    # the record keeps which columns differ and what the comparisons make of them
    assert set(manifest["config_diff"]) == {"kv_q8", "max_tokens"}
    kv, max_tokens = _notes(manifest, "arm_config_differs")
    assert "kv_q8" in kv and "as the source pairs them (ngcache-kv-fp16 vs baseline)" in kv
    assert "max_tokens" in max_tokens and "no compared pair differs in it" in max_tokens
    assert "allowed_confounds" not in manifest  # the source's own pairing is no confound


def test_without_references_the_matrix_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    argv = ["import", str(SUMMARY_CSV), *PRESET, "--references", "none", "--out", str(out)]
    assert main(argv) == 2
    line = _one_line_error(capsys)
    assert "'baseline' and 'baseline-1000tok'" in line
    assert "max_tokens (baseline: 300, baseline-1000tok: 1000)" in line
    assert "--declare max_tokens --declare kv_q8" in line and "--references FILE" in line
    assert "5 compared pairs" in line
    assert not out.exists()  # nothing half-written


def test_declare_lets_the_difference_through(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    declare = ("--declare", "max_tokens", "--declare", "kv_q8")
    argv = ["import", str(SUMMARY_CSV), *PRESET, "--references", "none", *declare]
    assert main([*argv, "--out", str(out)]) == 0
    assert capsys.readouterr().err == ""
    manifest = _manifest(out)
    assert "references" not in manifest and "references" not in manifest["source"]
    assert manifest["source"]["declared"] == ["max_tokens", "kv_q8"]
    notes = _notes(manifest, "arm_config_differs")
    assert any("declared with --declare max_tokens (baseline-1000tok vs baseline" in n
               for n in notes)  # fmt: skip


def test_declaring_one_column_is_not_enough(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["import", str(SUMMARY_CSV), *PRESET, "--references", "none", "--declare", "max_tokens"]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 2
    line = _one_line_error(capsys)
    assert "'baseline' and 'ngcache-kv-fp16' differ in column kv_q8" in line
    assert "(baseline: True, ngcache-kv-fp16: False)" in line and "--declare kv_q8)" in line


def test_declare_of_a_column_the_source_lacks_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = _csv(tmp_path, "rows.csv", TWO_ARMS)
    argv = ["import", str(src), *MAPS, "--declare", "max_token", "--out", str(tmp_path / "r")]
    assert main(argv) == 2
    line = _one_line_error(capsys)
    assert "--declare max_token: the source has no such column" in line and "max_tokens" in line
    assert not (tmp_path / "r").exists()


def test_a_references_file_with_named_columns(tmp_path: Path) -> None:
    src = _csv(tmp_path, "rows.csv", TWO_ARMS)
    refs = _csv(tmp_path, "refs.csv", "name,against\na,a\nb,a\nzzz,a\n")  # zzz: not imported
    run = import_results([src], _options(references=f"{refs}:name:against"), out=tmp_path / "r")
    assert run.references == {"b": "a"}  # a is its own reference: left out
    manifest = _manifest(tmp_path / "r")
    assert manifest["references"] == {"b": "a"}
    assert manifest["source"]["references"]["found_by_preset"] is False
    assert manifest["config_diff"] == {"max_tokens": {"a": "300", "b": "1000"}}  # file: a label


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("config,ref\nb,a\n", r"no column 'reference'; columns: config, ref"),
        ("config,reference\nb,c\n", r"'b' is compared with 'c', which is not among the imported"),
        ("config,reference\nx,y\n", r"names none of the imported arms \(a, b\)"),
        ("config,reference\nb,a\nb,b\n", r"'b' has two references \('a' and 'b', line 3\)"),
        ("config,reference\nb,\n", r"no configuration with a reference"),
    ],
)
def test_bad_references_files_are_one_line(tmp_path: Path, text: str, message: str) -> None:
    src = _csv(tmp_path, "rows.csv", TWO_ARMS)
    refs = _csv(tmp_path, "refs.csv", text)
    with pytest.raises(UsageError, match=message):
        import_results([src], _options(references=str(refs)), out=tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_references_option_syntax(tmp_path: Path) -> None:
    refs = _csv(tmp_path, "refs.csv", "config,reference\nb,a\n")
    assert ReferencesSpec.parse(str(refs)).config_column == "config"
    spec = ReferencesSpec.parse(f"{refs}:c:r")
    assert (spec.path, spec.config_column, spec.reference_column) == (refs, "c", "r")
    with pytest.raises(UsageError, match="no such file"):
        ReferencesSpec.parse(str(tmp_path / "nope.csv"))
    assert read_references(ReferencesSpec(COMPANION))["ngcache-1000tok"] == "baseline-1000tok"


def _options(**kw: Any) -> ImportOptions:
    return ImportOptions(maps=("tok_s=decode_tps", "prompt=prompt_id"), arm_column="cfg", **kw)


@pytest.mark.parametrize(
    ("column", "a", "b"),
    [("kv_q8", "True", "False"), ("model", "qwen-27b", "qwen-35b"), ("threads", "1", "2")],
)
def test_any_setting_column_that_differs_is_refused(
    tmp_path: Path, column: str, a: str, b: str
) -> None:
    body = f"cfg,prompt,tok_s,{column}\nx,p1,100,{a}\nx,p2,100,{a}\ny,p1,90,{b}\ny,p2,91,{b}\n"
    src = _csv(tmp_path, "rows.csv", body)
    with pytest.raises(UsageError, match=rf"'x' and 'y' differ in column {column} \(x: {a}, y"):
        import_results([src], _options(), out=tmp_path / "r")
    import_results([src], _options(declare=(column,)), out=tmp_path / "ok")


def test_a_column_mapped_to_context_counts(tmp_path: Path) -> None:
    body = "cfg,prompt,tok_s,conc\nx,p1,100,1\nx,p2,100,1\ny,p1,90,4\ny,p2,91,4\n"
    src = _csv(tmp_path, "rows.csv", body)
    opts = ImportOptions(
        maps=("tok_s=decode_tps", "prompt=prompt_id", "conc=concurrency"), arm_column="cfg"
    )
    with pytest.raises(UsageError, match=r"differ in column conc \(x: 1, y: 4\)"):
        import_results([src], opts, out=tmp_path / "r")


def test_columns_that_vary_within_an_arm_or_label_it_are_not_settings(tmp_path: Path) -> None:
    body = (
        "cfg,prompt,tok_s,seed,source_file\n"
        "x,p1,100,1,x.json\nx,p2,100,2,x.json\ny,p1,90,3,y.json\ny,p2,91,3,y.json\n"
    )
    src = _csv(tmp_path, "rows.csv", body)
    import_results([src], _options(), out=tmp_path / "r")  # seed varies in x; file labels
    assert _manifest(tmp_path / "r")["config_diff"] == {}


def test_compared_pairs_follow_the_settings_rule() -> None:
    arms = ["base", "b1000", "c", "c1000", "self"]
    refs = {"c": "base", "c1000": "b1000"}
    assert compared_pairs(arms, "base", refs) == [("base", "c"), ("b1000", "c1000"),
                                                 ("base", "self")]  # fmt: skip


def test_block_is_the_repetition_of_the_prompt(tmp_path: Path) -> None:
    body = (
        "cfg,prompt,tok_s\n"
        "x,p1,100\nx,p2,100\nx,p1,101\nx,p2,102\nx,p3,99\n"
        "y,p2,90\ny,p1,91\ny,p2,92\n"
    )
    src = _csv(tmp_path, "rows.csv", body)
    import_results([src], _options(), out=tmp_path / "r")
    got = [(r["arm"], r["prompt_id"], r["block"]) for r in _rows(tmp_path / "r")]
    assert got == [
        ("x", "p1", 0), ("x", "p2", 0), ("x", "p1", 1), ("x", "p2", 1), ("x", "p3", 0),
        ("y", "p2", 0), ("y", "p1", 0), ("y", "p2", 1),
    ]  # fmt: skip
    mapping = _manifest(tmp_path / "r")["source"]["mapping"]
    assert mapping["block_values"].startswith("repetition of the row's prompt_id")
    # without prompt ids a row's block is still its index within its arm
    plain = ImportOptions(maps=("tok_s=decode_tps",), arm_column="cfg")
    import_results([src], plain, out=tmp_path / "plain")
    assert [r["block"] for r in _rows(tmp_path / "plain")] == [0, 1, 2, 3, 4, 0, 1, 2]


def test_the_matrix_is_one_round_per_arm(tmp_path: Path) -> None:
    import_results([SUMMARY_CSV], ImportOptions(preset="qwen36-llamacpp-summary"),
                   out=tmp_path / "r")  # fmt: skip
    rows = _rows(tmp_path / "r")
    assert {r["block"] for r in rows} == {0} and len(rows) == 190
    note = next(n for n in _manifest(tmp_path / "r")["notes"] if n.startswith("source_summary"))
    assert "every row is block 0" in note and "baseline-1000tok" in note


def test_the_manifest_refuses_references_to_unknown_arms() -> None:
    arms = {"a": ArmEntry(), "b": ArmEntry()}
    assert Manifest(kind="import", arms=arms, references={"b": "a"}).references == {"b": "a"}
    with pytest.raises(ValueError, match="references: 'c' is not an arm; arms: a, b"):
        Manifest(kind="import", arms=arms, references={"b": "c"})
    with pytest.raises(ValueError, match="'a' is its own reference"):
        Manifest(kind="import", arms=arms, references={"a": "a"})
