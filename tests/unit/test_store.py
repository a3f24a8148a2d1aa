"""Tests for the append-only JSONL store and the run-directory layout, on real files."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from servelab.errors import StoreError, UsageError
from servelab.store.jsonl import JsonlWriter, iter_lines, read_jsonl, write_json_atomic
from servelab.store.rundir import RunDir, create_run_dir, new_run_dir, plan_run_dir

# --- JsonlWriter / read_jsonl -----------------------------------------------------------------


def test_each_row_is_readable_before_close(tmp_path: Path) -> None:
    path = tmp_path / "requests.jsonl"
    writer = JsonlWriter(path)
    try:
        for seq in range(3):
            writer.write({"seq": seq, "text": "台北 😀"})
            # another reader, through its own file handle, sees every row already written
            assert [r["seq"] for r in read_jsonl(path).rows] == list(range(seq + 1))
            assert path.read_bytes().endswith(b"\n")
    finally:
        writer.close()
    writer.close()  # closing twice is harmless


def test_rows_are_compact_utf8_one_per_line(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    with JsonlWriter(path) as writer:
        writer.write({"a": 1, "b": "é"})
    assert path.read_bytes() == '{"a":1,"b":"é"}\n'.encode()


def test_appends_to_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    with JsonlWriter(path) as w:
        w.write({"seq": 0})
    with JsonlWriter(path) as w:
        w.write({"seq": 1})
    result = read_jsonl(path)
    assert result.rows == [{"seq": 0}, {"seq": 1}]
    assert result.bad_lines == []
    assert path.read_text(encoding="utf-8").count("\n") == 2  # no stray blank line


@pytest.mark.parametrize(
    "torn",
    [
        b'{"seq": 2, "text": "half',
        '{"seq": 2, "text": "台'.encode()[:-1],  # killed inside a multibyte character
        b"{",
    ],
)
def test_torn_last_line_is_reported_and_the_next_writer_starts_fresh(
    tmp_path: Path, torn: bytes
) -> None:
    path = tmp_path / "requests.jsonl"
    with JsonlWriter(path) as w:
        w.write({"seq": 0})
        w.write({"seq": 1})
    with path.open("ab") as fh:  # what a kill -9 in the middle of a write leaves
        fh.write(torn)
    result = read_jsonl(path)
    assert result.rows == [{"seq": 0}, {"seq": 1}]
    assert result.bad_lines == [3]

    with JsonlWriter(path) as w:
        w.write({"seq": 3})
    result = read_jsonl(path)
    assert result.rows == [{"seq": 0}, {"seq": 1}, {"seq": 3}]
    assert result.bad_lines == [3]
    assert path.read_bytes().endswith(b'\n{"seq":3}\n')


def test_reader_skips_blank_lines_and_reports_non_objects(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text('{"a": 1}\n\n   \n[1, 2]\n"text"\nnot json\n{"b": 2}\n', encoding="utf-8")
    result = read_jsonl(path)
    assert result.rows == [{"a": 1}, {"b": 2}]
    assert result.bad_lines == [4, 5, 6]
    assert [n for n, _ in iter_lines(path)] == [1, 4, 5, 6, 7]


def test_reader_of_a_missing_file_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        read_jsonl(tmp_path / "nope.jsonl")


def test_writer_in_a_missing_directory_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot open"):
        JsonlWriter(tmp_path / "missing" / "r.jsonl")


def test_nan_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    with JsonlWriter(path) as w:
        w.write({"ok": 1})
        with pytest.raises((ValueError, StoreError)):
            w.write({"ttft_s": float("nan")})
    assert read_jsonl(path).rows == [{"ok": 1}]
    assert path.read_bytes() == b'{"ok":1}\n'


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(deadline=None, max_examples=50)
@given(rows=st.lists(st.dictionaries(st.text(), json_values, max_size=5), max_size=5))
def test_any_rows_round_trip(tmp_path_factory: pytest.TempPathFactory, rows: list[Any]) -> None:
    # any text: line separators (U+2028, U+0085), CR, control characters, emoji
    path = tmp_path_factory.mktemp("rt") / "r.jsonl"
    with JsonlWriter(path) as w:
        for row in rows:
            w.write(row)
    result = read_jsonl(path)
    assert result.rows == rows
    assert result.bad_lines == []


def test_line_separators_inside_strings_do_not_split_rows(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    row = {"text": "a\u2028b\u2029c\x85d\re\nf\x1cg"}
    with JsonlWriter(path) as w:
        w.write(row)
        w.write({"seq": 2})
    assert read_jsonl(path).rows == [row, {"seq": 2}]


# --- write_json_atomic ------------------------------------------------------------------------


def test_write_json_atomic_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "manifest.json"
    write_json_atomic(target, {"schema_version": 1, "path": Path("/x"), "name": "台"})
    assert json.loads(target.read_text(encoding="utf-8")) == {
        "schema_version": 1,
        "path": "/x",
        "name": "台",
    }
    assert target.read_text(encoding="utf-8").endswith("}\n")
    write_json_atomic(target, {"schema_version": 2})
    assert json.loads(target.read_text(encoding="utf-8")) == {"schema_version": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]


def test_write_json_atomic_failure_is_a_store_error(tmp_path: Path) -> None:
    target = tmp_path / "missing" / "summary.json"
    with pytest.raises(StoreError, match="cannot write"):
        write_json_atomic(target, {"a": 1})
    assert not target.parent.exists()
    assert list(tmp_path.iterdir()) == []


# --- run directories --------------------------------------------------------------------------


def test_rundir_paths(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "demo-20261122T000000Z")
    assert run.run_id == "demo-20261122T000000Z"
    assert run.manifest == run.root / "manifest.json"
    assert run.requests == run.root / "requests.jsonl"
    assert run.metrics_dir == run.root / "metrics"
    assert run.summary == run.root / "summary.json"
    assert run.engine_log("A") == run.root / "engine-A.log"


def test_plan_run_dir_names_and_does_not_create(tmp_path: Path) -> None:
    run = plan_run_dir("my run: spec/draft!", parent=tmp_path)
    assert run.root.parent == tmp_path
    assert re.fullmatch(r"my-run-spec-draft-\d{8}T\d{6}Z", run.run_id)
    assert not run.root.exists()
    assert re.fullmatch(r"run-\d{8}T\d{6}Z", plan_run_dir("!!!", parent=tmp_path).run_id)


def test_new_run_dir_creates_the_layout(tmp_path: Path) -> None:
    run = new_run_dir("x", out=tmp_path / "out")
    assert run.root == tmp_path / "out"
    assert run.metrics_dir.is_dir()
    assert not run.requests.exists()


def test_plan_run_dir_refuses_a_directory_that_holds_requests(tmp_path: Path) -> None:
    out = tmp_path / "old"
    run = new_run_dir("x", out=out)
    run.requests.write_text("", encoding="utf-8")
    assert plan_run_dir("x", out=out).root == out  # an empty requests.jsonl holds no run
    with JsonlWriter(run.requests) as w:
        w.write({"seq": 0})
    before = run.requests.read_bytes()
    with pytest.raises(UsageError, match="already holds a run"):
        plan_run_dir("x", out=out)
    with pytest.raises(UsageError):
        new_run_dir("x", out=out)
    assert run.requests.read_bytes() == before


def test_create_run_dir_failure_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory", encoding="utf-8")
    with pytest.raises(StoreError, match="cannot create run directory"):
        create_run_dir(RunDir(blocker / "run"))
