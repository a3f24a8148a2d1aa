"""requests.jsonl as columns: every row reads back as json.loads gave it, every figure the same.

The report reads runs through ``store.columns`` so that a million-row import fits in memory;
these tests hold it to the rows it replaces: a ``TableRow`` equals the line's dict (values,
types, missing keys), and ``build_report`` over a run directory gives the same summary,
Markdown and HTML as the plain dict rows did.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from servelab.analysis import analyze
from servelab.importers import ImportOptions, import_results
from servelab.report.build import build_report
from servelab.report.markdown import render_markdown
from servelab.store import Manifest
from servelab.store.columns import TableRow, read_row_table
from servelab.store.jsonl import read_jsonl
from tests.unit.test_report_render import make_rows

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
V5 = FIXTURES / "reference" / "qwen3.6-vllm-2x3090" / "v5_2026_05_17" / "data"

ODD_ROWS: list[dict[str, Any]] = [
    {"a": 1, "b": 0.5, "c": "x", "d": [0.1, 0.2], "e": {"k": [1]}, "f": True, "g": None},
    {"a": None, "b": 2, "c": None, "d": [], "e": {}, "f": False, "h": "new key"},  # b: an int
    {"a": 2**70, "b": float("nan"), "c": "x", "d": None, "e": "text now", "f": None},
    {"b": -0.0, "c": "", "d": [{"n": 1}], "e": {"long": "y" * 100}, "g": [True], "h": 3},
]


def _write(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{torn\n", encoding="utf-8")


def test_rows_read_back_exactly(tmp_path: Path) -> None:
    _write(tmp_path / "r.jsonl", ODD_ROWS)
    table = read_row_table(tmp_path / "r.jsonl")
    assert table.bad_lines == [5] and table.n_rows == 4
    plain = read_jsonl(tmp_path / "r.jsonl").rows
    for got, want in zip(table.rows, plain, strict=True):
        assert set(got) == set(want) and len(got) == len(want)
        for key, value in want.items():
            if isinstance(value, float) and math.isnan(value):
                assert math.isnan(got[key])
                continue
            assert got[key] == value and type(got[key]) is type(value), key
        assert got.get("zzz") is None and "zzz" not in got
    with pytest.raises(KeyError):
        table.rows[0]["h"]
    assert table.rows[1] == dict(plain[1]) and table.rows[0] is table.rows[0]
    assert isinstance(table.rows[0], TableRow) and table.rows[0] != table.rows[1]


def test_values_read_back_are_fresh_objects(tmp_path: Path) -> None:
    _write(tmp_path / "r.jsonl", ODD_ROWS)
    row = read_row_table(tmp_path / "r.jsonl").rows[0]
    row["d"].append(9.0)
    assert row["d"] == [0.1, 0.2]


def test_analyze_gives_the_same_summary_from_columns(tmp_path: Path) -> None:
    rows = make_rows({"none": 120.0, "ngram": 141.0, "broken": 0.0}, levels=(1, 4))
    rows[3]["itl_s"] = [0.01, 0.02]
    rows[4]["server_timings"] = {"cache_n": 3}
    _write(tmp_path / "requests.jsonl", rows)
    manifest = Manifest.from_json(
        json.loads((FIXTURES / "report" / "manifest-experiment.json").read_text())
    )
    columns = read_row_table(tmp_path / "requests.jsonl").rows
    plain = read_jsonl(tmp_path / "requests.jsonl").rows
    want = analyze(manifest, plain, n_resamples=200)
    assert analyze(manifest, columns, n_resamples=200) == want
    assert render_markdown(want, manifest, columns) == render_markdown(want, manifest, plain)


def test_report_of_an_import_is_unchanged(tmp_path: Path) -> None:
    files = sorted(V5.glob("results_*.json"))
    run = import_results(files, ImportOptions(preset="qwen36-vllm-v5"), out=tmp_path / "run")
    report = build_report(run.run_dir.root)
    plain = read_jsonl(run.run_dir.requests).rows
    want = analyze(report.manifest, plain)
    got = {k: v for k, v in report.summary.to_json().items() if k in want.to_json()}
    assert json.dumps(got, sort_keys=True) == json.dumps(want.to_json(), sort_keys=True)
    assert report.summary.arms["dense_27b_tp1"].n_ok == 30
