"""Probes of `servelab import` as a user runs it: bad files in, one line or a counted skip out.

Each probe writes a small CSV or JSON file, runs the real CLI in a child process
(``python -m servelab import ...``) and checks the exit code, that stderr is one line without a
traceback, ``manifest.json``'s ``source.skipped`` counts by reason, and that ``servelab report``
leaves the skipped rows out of every statistic. No engine; a few seconds in all.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

MAPS = ("--map", "ttft_ms=ttft_s", "--map", "e2e_ms=e2e_s", "--map", "out=n_out")


def _servelab(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "servelab", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _import(tmp_path: Path, name: str, body: str, *extra: str) -> tuple[Path, Any]:
    src = tmp_path / name
    src.write_text(body, encoding="utf-8")
    out = tmp_path / "run"
    return out, _servelab("import", src, "--arm-column", "cfg", *MAPS, *extra, "--out", out)


def _ok(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr


def _one_line_error(proc: subprocess.CompletedProcess[str], code: int) -> str:
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def _manifest(run: Path) -> dict[str, Any]:
    manifest: dict[str, Any] = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    return manifest


def _rows(run: Path) -> list[dict[str, Any]]:
    lines = (run / "requests.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def _summary(run: Path) -> dict[str, Any]:
    _ok(_servelab("report", run))
    summary: dict[str, Any] = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    return summary


# One file holds every kind of impossible row, so one import and one report serve the probes.
# Line numbers (the header is line 1) are the ones manifest.source.skipped names.
BAD_ROWS = {
    "cfg,ttft_ms,e2e_ms,out,err,note": 1,
    "a,10,100,20,,x": 0,
    "a,-2.5,100,20,,x": 3,  # negative latency
    "a,12,110,20,,x": 0,
    "a,11,-5,20,,x": 5,  # negative e2e
    "a,13,120,-3,,x": 6,  # negative token count
    "a,nan,100,20,,x": 7,  # not finite
    "a,inf,100,20,,x": 8,
    "a,14,NaN,20,,x": 9,
    "a,,100,20,,x": 10,  # empty required cell in a successful row
    "a,11,105,,,x": 11,
    "a,,,,timed out,x": 0,  # a failed row: empty latency is right, it is kept
    "a,11,105": 13,  # short row
    "a,12,110,20,,x,extra": 14,  # long row
    "b,9,90,20,,x": 0,
    "b,8,95,20,,y": 0,
    "b,-1,80,20,,y": 17,
}


@pytest.fixture(scope="module")
def bad_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    tmp_path = tmp_path_factory.mktemp("bad")
    run, proc = _import(tmp_path, "bad.csv", "\n".join(BAD_ROWS) + "\n", "--map", "err?=error")
    _ok(proc)
    return run, _summary(run)


def test_impossible_rows_are_skipped_and_counted_by_reason(
    bad_run: tuple[Path, dict[str, Any]],
) -> None:
    run, _ = bad_run
    skipped = _manifest(run)["source"]["skipped"]
    assert skipped["reasons"] == {
        "negative": 4, "not_finite": 3, "empty": 2, "short_row": 1, "long_row": 1,
    }  # fmt: skip
    assert skipped["count"] == 11
    assert [e["line"] for e in skipped["examples"]] == [n for n in BAD_ROWS.values() if n > 1][:10]
    assert any(n.startswith("skipped_rows: 11 source rows") for n in _manifest(run)["notes"])


def test_kept_rows_hold_only_possible_values(bad_run: tuple[Path, dict[str, Any]]) -> None:
    run, _ = bad_run
    rows = _rows(run)
    assert [(r["arm"], r["ttft_s"], r["outcome"]) for r in rows] == [
        ("a", 0.01, "ok"), ("a", 0.012, "ok"), ("a", None, "timeout"),
        ("b", 0.009, "ok"), ("b", 0.008, "ok"),
    ]  # fmt: skip
    ok = [r for r in rows if r["outcome"] == "ok"]
    assert all(r[m] > 0 for r in ok for m in ("ttft_s", "e2e_s", "n_out", "tpot_s"))


def test_statistics_leave_the_skipped_rows_out(bad_run: tuple[Path, dict[str, Any]]) -> None:
    _, summary = bad_run
    a, b = summary["arms"]["a"], summary["arms"]["b"]
    assert a["n_ok"] == 2 and a["n_failed"] == 1 and b["n_ok"] == 2
    assert a["metrics"]["ttft_s"]["median"] == 0.011 and a["metrics"]["ttft_s"]["min"] > 0
    assert b["metrics"]["ttft_s"]["min"] == 0.008
    assert a["metrics"]["e2e_s"]["n"] == 2 and a["metrics"]["n_out"]["min"] == 20


def test_ragged_csv_with_a_missing_mapped_column_is_one_line(tmp_path: Path) -> None:
    body = "cfg,ttft_ms,e2e_ms,out\na,10,100,20,surplus\na,11\n"
    run, proc = _import(tmp_path, "ragged.csv", body, "--map", "tpot_ms=tpot_s")
    line = _one_line_error(proc, 2)
    assert "--map tpot_ms=tpot_s: column 'tpot_ms' not found" in line
    assert "columns: cfg, ttft_ms, e2e_ms, out" in line and "tpot_ms?=" in line
    assert not run.exists()  # nothing half-written is left behind


def test_missing_column_in_json_rows_is_one_line(tmp_path: Path) -> None:
    rows = [{"cfg": "a", "ttft_ms": 10, "e2e_ms": 100}]
    src = tmp_path / "rows.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    proc = _servelab("import", src, "--arm-column", "cfg", *MAPS, "--out", tmp_path / "run")
    line = _one_line_error(proc, 2)
    assert "column 'out' not found in" in line and "columns: cfg, ttft_ms, e2e_ms" in line


def test_every_row_bad_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    run, proc = _import(tmp_path, "bad.csv", "cfg,ttft_ms,e2e_ms,out\na,-1,100,20\na,nan,1,2\n")
    line = _one_line_error(proc, 2)
    assert "no rows imported" in line and "negative (1)" in line and "not_finite (1)" in line
    assert not run.exists()


def test_json_null_nan_and_negative_values(tmp_path: Path) -> None:
    src = tmp_path / "rows.json"
    # Python's json writes NaN and Infinity; other harnesses do too.
    src.write_text(
        '[{"cfg": "a", "ttft_ms": 10, "e2e_ms": 100, "out": 20},'
        ' {"cfg": "a", "ttft_ms": NaN, "e2e_ms": 100, "out": 20},'
        ' {"cfg": "a", "ttft_ms": null, "e2e_ms": 100, "out": 20},'
        ' {"cfg": "a", "ttft_ms": 12, "e2e_ms": Infinity, "out": 20},'
        ' {"cfg": "a", "ttft_ms": 11, "e2e_ms": 100, "out": -20}]',
        encoding="utf-8",
    )
    run = tmp_path / "run"
    _ok(_servelab("import", src, "--arm-column", "cfg", *MAPS, "--out", run))
    reasons = _manifest(run)["source"]["skipped"]["reasons"]
    assert reasons == {"not_finite": 2, "empty": 1, "negative": 1}
    assert _summary(run)["arms"]["a"]["metrics"]["ttft_s"]["median"] == 0.01


@pytest.mark.parametrize(
    ("suffix", "good", "bad"),
    [
        (".csv", "cfg,ttft_ms,e2e_ms,out\na,10,20,5\n", "caf\xe9,10,20,5\n"),
        (".jsonl", '{"cfg": "a", "ttft_ms": 10, "e2e_ms": 20, "out": 5}\n',
         '{"cfg": "caf\xe9", "ttft_ms": 10, "e2e_ms": 20, "out": 5}\n'),
    ],
)  # fmt: skip
def test_a_file_that_is_not_utf8_is_one_line_and_leaves_nothing(
    tmp_path: Path, suffix: str, good: str, bad: str
) -> None:
    src = tmp_path / f"latin1{suffix}"
    src.write_bytes(good.encode() + bad.encode("latin-1") * 3)  # Latin-1 bytes after a good row
    out = tmp_path / "run"
    proc = _servelab("import", src, "--arm-column", "cfg", *MAPS, "--out", out)
    line = _one_line_error(proc, 2)
    assert str(src) in line and "not UTF-8" in line and "iconv" in line
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_import_is_one_line_and_leaves_no_half_run(
    tmp_path: Path, sig: signal.Signals
) -> None:
    src = tmp_path / "big.csv"
    with src.open("w", encoding="utf-8") as fh:
        fh.write("cfg,ttft_ms,e2e_ms,out\n")
        fh.writelines(f"a{i % 2},{10 + i % 7},{40 + i % 11},{5 + i % 3}\n" for i in range(400_000))
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "servelab", "import", str(src), "--arm-column", "cfg", *MAPS]
    proc = subprocess.Popen(
        [*argv, "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    while not (out / "requests.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # rows are being written: the import is under way
    proc.send_signal(sig)
    started = time.monotonic()
    _, stderr = proc.communicate(timeout=30)
    assert time.monotonic() - started < 5
    assert proc.returncode == 130, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("servelab: error: interrupted"), stderr
    assert not out.exists() or not any(out.iterdir())
