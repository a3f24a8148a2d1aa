"""``servelab bench`` end to end, as a user runs it, including the ways it must fail well."""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from servelab.store.jsonl import read_jsonl
from tests.integration.conftest import children_named, error_lines, run_cli

pytestmark = pytest.mark.engine


def test_bench_writes_a_complete_run(engine_ready: None, tmp_path: Path) -> None:
    out = tmp_path / "run"
    res = run_cli("bench", "-n", "6", "--warmup", "2", "--max-tokens", "24", "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert f"results: {out}" in res.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["schema_version"] == 2 and manifest["status"] == "complete"
    assert manifest["workload"]["content_hash"].startswith("sha256:")
    desc = manifest["arms"]["bench"]["describe"]
    assert desc["commit"] == "0c1e57098" and desc["model_sha256"]
    assert manifest["host"]["cpu_count_logical"] >= 1
    assert manifest["stages"] == [
        "preflight", "launch", "healthy", "describe", "warmup", "measure", "scrape", "stop",
        "summarize",
    ]  # fmt: skip
    rows = read_jsonl(out / "requests.jsonl").rows
    assert [r["phase"] for r in rows] == ["warmup"] * 2 + ["trial"] * 6
    assert [r["seq"] for r in rows] == list(range(8))
    for r in rows:
        assert r["outcome"] == "ok", r["error"]
        assert r["ttft_s"] > 0 and r["e2e_s"] > r["ttft_s"]
        assert 1 <= r["n_out"] <= 24 and r["n_in"] > 0
        assert r["server_timings"]["cache_n"] == 0
        assert r["invalid_utf8_bytes"] == 0  # zh-TW replies included
    summary = json.loads((out / "summary.json").read_text())
    arm = summary["arms"]["bench"]
    assert arm["n_ok"] == 6 and arm["n_failed"] == 0 and arm["n_warmup"] == 2
    assert arm["metrics"]["ttft_s"]["n"] == 6
    assert (out / "metrics" / "bench-deltas.json").exists()
    assert "decode_tps" in res.stdout


def _wait_rows(path: Path, n: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= n:
            return
        time.sleep(0.2)
    raise AssertionError(f"{path} never reached {n} rows")


StartBench = Callable[[Path], "subprocess.Popen[str]"]


@pytest.fixture
def start_bench() -> Iterator[StartBench]:
    """Start ``servelab bench`` in the background; whatever happens, it is gone afterwards."""
    procs: list[subprocess.Popen[str]] = []

    def start(out: Path) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "servelab", "bench", "-n", "60", "--warmup", "1",
             "--max-tokens", "64", "--ignore-eos", "--quiet", "--out", str(out)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            # CI may start us with SIGINT ignored (a background job inherits SIG_IGN, and then
            # Python installs no Ctrl-C handler); give servelab the disposition a terminal has.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )  # fmt: skip
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()  # servelab stops its engine on SIGTERM
            try:
                proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()


def test_engine_killed_mid_run(engine_ready: None, tmp_path: Path, start_bench: StartBench) -> None:
    out = tmp_path / "killed"
    proc = start_bench(out)
    _wait_rows(out / "requests.jsonl", 4)
    servers = children_named(proc.pid, "llama-server")
    assert len(servers) == 1
    servers[0].kill()
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 5, stderr
    lines = error_lines(stderr)
    assert len(lines) == 1 and "exited" in lines[0] and "requests recorded" in lines[0]
    assert "Traceback" not in stderr
    read = read_jsonl(out / "requests.jsonl")
    assert read.bad_lines == []
    assert 4 <= len(read.rows) < 61
    assert any(r["outcome"] != "ok" for r in read.rows) or len(read.rows) >= 4
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "crashed"
    assert not psutil.pid_exists(servers[0].pid) or servers[0].status() == psutil.STATUS_ZOMBIE


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_no_orphan_engine_when_servelab_dies(
    engine_ready: None, tmp_path: Path, sig: signal.Signals, start_bench: StartBench
) -> None:
    out = tmp_path / f"sig{int(sig)}"
    proc = start_bench(out)
    _wait_rows(out / "requests.jsonl", 2)
    servers = children_named(proc.pid, "llama-server")
    assert len(servers) == 1
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    _gone, alive = psutil.wait_procs(servers, timeout=10)
    assert not alive, f"llama-server survived {sig.name} of servelab"
    assert read_jsonl(out / "requests.jsonl").bad_lines == []
    if sig == signal.SIGINT:
        assert proc.returncode == 130
        lines = error_lines(stderr)
        assert len(lines) == 1 and "interrupted" in lines[0] and str(out) in lines[0]
    if sig != signal.SIGKILL:
        assert proc.returncode != 0
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["status"] == "interrupted"


def test_port_already_taken(engine_ready: None, tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        res = run_cli("bench", "--port", str(port), "-n", "1", "--out", str(tmp_path / "p"))
    assert res.returncode == 3
    lines = error_lines(res.stderr)
    assert len(lines) == 1 and f"port {port}" in lines[0] and "--port" in lines[0]


def test_missing_model_file(engine_ready: None, tmp_path: Path) -> None:
    res = run_cli("bench", "--model", str(tmp_path / "nope.gguf"), "-n", "1")
    assert res.returncode == 2
    assert len(error_lines(res.stderr)) == 1 and "Traceback" not in res.stderr


def test_corrupt_model_file(engine_ready: None, tmp_path: Path) -> None:
    bad = tmp_path / "corrupt.gguf"
    bad.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + os.urandom(4096))
    res = run_cli("bench", "--model", str(bad), "-n", "1", "--out", str(tmp_path / "c"))
    assert res.returncode in (2, 5), res.stderr
    lines = error_lines(res.stderr)
    assert len(lines) == 1 and "Traceback" not in res.stderr
    assert not [
        p for p in psutil.process_iter(["cmdline"]) if str(bad) in " ".join(p.info["cmdline"] or [])
    ]


def test_not_a_gguf_file(engine_ready: None, tmp_path: Path) -> None:
    bad = tmp_path / "model.gguf"
    bad.write_text("hello")
    res = run_cli("bench", "--model", str(bad), "-n", "1")
    assert res.returncode == 2
    assert len(error_lines(res.stderr)) == 1


def test_bad_workload_file_is_one_line(engine_ready: None, tmp_path: Path) -> None:
    wl = tmp_path / "w.yaml"
    wl.write_text(
        "schema_version: 1\nname: x\nversion: '1'\ndescription: d\nprompts: []\nbogus: 1\n"
    )
    res = run_cli("bench", "--workload", str(wl), "-n", "1")
    assert res.returncode == 2
    assert len(error_lines(res.stderr)) == 1 and "w.yaml" in res.stderr


def test_closed_loop_keeps_two_in_flight(engine_ready: None, tmp_path: Path) -> None:
    out = tmp_path / "c2"
    res = run_cli(
        "bench", "-n", "6", "-c", "2", "--warmup", "0", "--max-tokens", "32", "--ignore-eos",
        "--quiet", "--out", str(out),
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["arms"]["bench"]["describe"]["total_slots"] == 2
    rows = read_jsonl(out / "requests.jsonl").rows
    assert len(rows) == 6 and all(r["outcome"] == "ok" and r["concurrency"] == 2 for r in rows)
    spans = sorted(
        (r["t_send_unix_s"], r["t_send_unix_s"] + r["e2e_s"] - r["wait_s"]) for r in rows
    )
    overlaps = sum(1 for (_, end), (start, _) in itertools.pairwise(spans) if start < end)
    assert overlaps >= 3  # requests really ran side by side
    assert all(0 <= r["wait_s"] < 0.5 for r in rows)


def test_long_prefill_workload_fits_and_is_measured(engine_ready: None, tmp_path: Path) -> None:
    out = tmp_path / "lp"
    res = run_cli(
        "bench", "--workload", "long-prefill", "-n", "2", "--warmup", "0", "--max-tokens", "8",
        "--quiet", "--out", str(out),
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    rows = read_jsonl(out / "requests.jsonl").rows
    assert all(r["outcome"] == "ok" for r in rows)
    assert all(r["n_in"] >= 2000 and r["server_timings"]["prompt_n"] >= 2000 for r in rows)
    assert all(r["cache_n"] == 0 for r in rows)  # prefill really measured
