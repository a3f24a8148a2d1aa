"""The CLI against hostile endpoints: deadlines, Ctrl-C, SIGTERM, size caps, the fd limit.

Each test runs ``servelab`` in a child process, as a user would, against a server from
``hostile.py`` (no engine needed). Times are measured from the moment the server saw the
request, so the child's start-up (several seconds on a loaded 2-core machine) does not count.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from servelab.client.assemble import STORED_TEXT_LIMIT
from servelab.client.sse import MAX_LINE_BYTES
from servelab.store.jsonl import read_jsonl
from tests.integration.conftest import error_lines, run_cli
from tests.integration.hostile import LONG_REPLY_CHARS, HostileServer, hostile_server


def bench_args(server: HostileServer, out: Path, *more: str) -> list[str]:
    return ["bench", "--engine", "openai", "--endpoint", server.url, "--model", "x",
            "--warmup", "0", "--max-tokens", "8", "-q", "--out", str(out), *more]  # fmt: skip


@contextmanager
def started(
    args: list[str], preexec: Callable[[], None] | None = None
) -> Iterator[subprocess.Popen[str]]:
    """``servelab ARGS`` in a child process, killed and reaped if the test ends first."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "servelab", *args], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "200"},
        preexec_fn=preexec,
    )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            proc.communicate()


def first_row_at(rows_file: Path, timeout_s: float = 30.0) -> float:
    """When the first row was written (monotonic, to within 20 ms)."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if rows_file.exists() and rows_file.stat().st_size > 0:
            return time.monotonic()
        time.sleep(0.02)
    raise TimeoutError(f"no row in {rows_file} after {timeout_s} s")


def manifest(run: Path) -> dict[str, object]:
    loaded: dict[str, object] = json.loads((run / "manifest.json").read_text())
    return loaded


@pytest.mark.parametrize("mode", ["stall", "silent"])
def test_a_stalled_request_times_out_when_timeout_says(mode: str, tmp_path: Path) -> None:
    out = tmp_path / "run"
    with (
        hostile_server(mode) as server,
        started(bench_args(server, out, "--timeout", "3", "-n", "1")) as proc,
    ):
        posted = server.wait_posts(1)
        written = first_row_at(out / "requests.jsonl")
        _, stderr = proc.communicate(timeout=60)
    assert written - posted < 4.0, f"timeout took {written - posted:.1f} s, --timeout 3"
    rows = read_jsonl(out / "requests.jsonl").rows
    assert [r["outcome"] for r in rows] == ["timeout"]
    assert "within 3 s" in rows[0]["error"]
    assert "Traceback" not in stderr


@pytest.mark.parametrize("mode", ["stall", "silent"])
def test_ctrl_c_during_a_stall_stops_at_once_and_keeps_rows(mode: str, tmp_path: Path) -> None:
    out = tmp_path / "run"
    with (
        hostile_server(mode, good_posts=1) as server,
        started(bench_args(server, out, "--timeout", "60", "-n", "3")) as proc,
    ):
        server.wait_posts(2)
        time.sleep(0.5)  # well inside the stalled wait
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
        took = time.monotonic() - sent
    assert took < 2.0, f"Ctrl-C took {took:.1f} s to act"
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    lines = error_lines(stderr)
    assert len(lines) == 1 and "interrupted" in lines[0] and str(out) in lines[0], stderr
    assert manifest(out)["status"] == "interrupted"
    rows = read_jsonl(out / "requests.jsonl").rows
    assert [r["outcome"] for r in rows] == ["ok"]  # the request that completed is kept


SPEC = """\
name: probe
base:
  engine: {{kind: openai, endpoint: "{url}", model: x}}
  workload: chat-tools
  max_tokens: 8
  request_timeout_s: 60
arms: {{a: {{}}, b: {{}}}}
baseline: a
blocks: 2
requests_per_block: 2
warmup: 0
hardware: none
"""


def test_sigterm_interrupts_a_run_that_resume_completes(tmp_path: Path) -> None:
    spec, out = tmp_path / "spec.yaml", tmp_path / "run"
    with hostile_server("stall", good_posts=1) as server:
        spec.write_text(SPEC.format(url=server.url + "/v1"))
        with started(["run", str(spec), "--out", str(out), "--force", "-q"]) as proc:
            server.wait_posts(2)
            time.sleep(0.5)
            sent = time.monotonic()
            proc.terminate()
            _, stderr = proc.communicate(timeout=60)
            took = time.monotonic() - sent
        assert took < 2.0, f"SIGTERM took {took:.1f} s to act"
        assert proc.returncode == 130, stderr
        lines = error_lines(stderr)
        assert len(lines) == 1 and f"servelab resume {out}" in lines[0], stderr
        assert "Traceback" not in stderr
        assert manifest(out)["status"] == "interrupted"
        assert len(read_jsonl(out / "requests.jsonl").rows) == 1

        server.good_posts = 10**9  # the endpoint has recovered
        resumed = run_cli("resume", str(out), "--force", "-q", timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert manifest(out)["status"] == "complete"
    rows = read_jsonl(out / "requests.jsonl").rows
    assert len(rows) == 8 and len({r["request_id"] for r in rows}) == 8
    assert all(r["outcome"] == "ok" for r in rows)


def test_an_enormous_sse_line_gives_bounded_rows(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with hostile_server("huge_line") as server:
        res = run_cli(*bench_args(server, out, "--timeout", "30", "-n", "2"), timeout=120)
    assert "Traceback" not in res.stderr
    rows = read_jsonl(out / "requests.jsonl").rows
    assert [r["outcome"] for r in rows] == ["invalid_stream"] * 2
    assert all(f"exceeded {MAX_LINE_BYTES} bytes" in r["error"] for r in rows)
    assert (out / "requests.jsonl").stat().st_size < 64 * 1024


def test_a_long_reply_is_stored_capped_and_flagged(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with hostile_server("long_reply") as server:
        res = run_cli(*bench_args(server, out, "--timeout", "30", "-n", "1"), timeout=120)
    assert res.returncode == 0, res.stderr
    (row,) = read_jsonl(out / "requests.jsonl").rows
    assert row["outcome"] == "ok"
    assert row["text_truncated"] is True and row["text_chars"] == LONG_REPLY_CHARS
    assert len(row["text"]) == STORED_TEXT_LIMIT


def _nofile(soft: int, hard: int) -> Callable[[], None]:
    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_hard_fd_limit_below_the_concurrency_is_refused_in_one_line(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with hostile_server("good") as server:
        args = bench_args(server, out, "-c", "400", "-n", "400")
        with started(args, _nofile(128, 128)) as proc:
            _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 3, stderr
    lines = error_lines(stderr)
    assert len(lines) == 1 and "ulimit -n 464" in lines[0], stderr
    assert not out.exists() and server.posts == 0


def test_a_low_soft_fd_limit_is_raised_so_every_request_gets_a_socket(tmp_path: Path) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 400:
        pytest.fail(f"this test needs a hard open-files limit of 400 or more, not {hard}")
    out = tmp_path / "run"
    with hostile_server("slow") as server:  # all 150 connections are open at once
        args = bench_args(server, out, "-c", "150", "-n", "150")
        with started(args, _nofile(100, hard)) as proc:
            _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    rows = read_jsonl(out / "requests.jsonl").rows
    assert len(rows) == 150 and all(r["outcome"] == "ok" for r in rows), {
        r["error"] for r in rows if r["outcome"] != "ok"
    }
