"""Experiments end to end with the real llama-server: the shipped examples, the confound guard,
preflight, and ``resume`` after ``kill -9``. One engine at a time; these run serially."""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
import pytest

from servelab.runner.preflight import MachineLock
from servelab.store.jsonl import read_jsonl
from tests.integration.conftest import error_lines, llama_servers, run_cli
from tests.integration.conftest import trimmed_example as trimmed

pytestmark = pytest.mark.engine

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _summary(run: Path) -> dict[str, Any]:
    return dict(json.loads((run / "summary.json").read_text()))


def _verdicts(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Comparisons by "metric.statistic" (every decision statistic of every metric)."""
    return {f"{c['metric']}.{c['statistic']}": c for c in summary["comparisons"]}


def _trial_ids(run: Path) -> list[str]:
    return [r["request_id"] for r in read_jsonl(run / "requests.jsonl").rows
            if r["phase"] == "trial"]  # fmt: skip


def test_aa_experiment_finds_no_difference(engine_ready: None, tmp_path: Path) -> None:
    out = tmp_path / "aa"
    # 4 blocks of 4 requests per arm (the example: 6 of 6), at the example's 99 % confidence
    spec = trimmed(tmp_path, "aa.yaml", blocks=4, requests_per_block=4, warmup=1)
    done = run_cli("run", str(spec), "--out", str(out), "--quiet", timeout=900)
    assert done.returncode == 0, done.stderr
    summary = _summary(out)
    for metric, c in _verdicts(summary).items():
        assert c["verdict"] in ("no_difference", "inconclusive"), (metric, c)
        assert c["ci_low"] <= 1.0 <= c["ci_high"] or c["verdict"] == "no_difference"
    assert summary["arms"]["a"]["n_ok"] == summary["arms"]["b"]["n_ok"] == 16
    assert (out / "report.html").stat().st_size > 10_000
    assert "report:" in done.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["config_diff"] == {}
    ids = _trial_ids(out)
    assert len(ids) == len(set(ids)) == 32
    quality = summary["quality"]  # identical arms at temperature 0 answer alike
    assert quality["arms"]["a"]["n_rows"] == 16
    assert quality["arms"]["a"]["rates"]["tool_accuracy"]["n"] > 0  # chat-tools expects tools
    for metric, c in quality["comparisons"]["b"].items():
        assert c["verdict"] in ("no_difference", "inconclusive"), (metric, c)
    scores = read_jsonl(out / "quality" / "scores.jsonl").rows
    assert len(scores) == 32 and all("coherence" in s for s in scores)
    assert "## Quality" in (out / "report.md").read_text()


def test_threads_effect_has_the_right_direction(engine_ready: None, tmp_path: Path) -> None:
    out = tmp_path / "threads"
    done = run_cli("run", str(EXAMPLES / "threads.yaml"), "--out", str(out), "--quiet",
                   timeout=900)  # fmt: skip
    assert done.returncode == 7, done.stderr  # the required arm t1 fails its speed gate
    lines = error_lines(done.stderr)
    assert len(lines) == 1 and "t1: decode_tps >= baseline * 0.9" in lines[0], done.stderr
    summary = _summary(out)
    assert summary["gates"]["t2"]["decode_tps >= baseline * 0.9"]["passed"] is True
    assert summary["gates"]["t1"]["error_rate <= 20%"]["passed"] is True
    assert "FAIL" in (out / "report.md").read_text().split("## Verdicts")[0]  # gates come first
    decode = _verdicts(summary)["decode_tps.pooled"]
    assert decode["candidate"] == "t1" and decode["baseline"] == "t2"
    assert decode["verdict"] == "worse", decode  # one thread decodes slower on two cores
    assert decode["ci_high"] < 1.0
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["config_diff"]) == {"llama.threads"}
    argv = manifest["arms"]["t1"]["starts"][0]["describe"]["argv"]
    assert argv[-2:] == ["--threads", "1"]


def test_undeclared_difference_is_refused_before_any_request(
    engine_ready: None, tmp_path: Path
) -> None:
    out = tmp_path / "confound"
    done = run_cli("run", str(EXAMPLES / "confound.yaml"), "--out", str(out), "--quiet")
    assert done.returncode == 2, done.stderr
    lines = error_lines(done.stderr)
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert "llama.cache-ram" in lines[0] and "none: 0" in lines[0]
    assert "ngram-simple: 8192" in lines[0] and "--allow-confound cache-ram" in lines[0]
    assert not (out / "requests.jsonl").exists()


def test_allowed_confound_is_flagged_first(engine_ready: None, tmp_path: Path) -> None:
    out = tmp_path / "allowed"
    spec = trimmed(tmp_path, "confound.yaml", requests_per_block=1)
    done = run_cli("run", str(spec), "--out", str(out), "--quiet",
                   "--allow-confound", "cache-ram")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("CONFOUNDED"), done.stdout
    summary = _summary(out)
    assert summary["allowed_confounds"][0]["field"] == "llama.cache-ram"
    assert summary["warnings"][0]["kind"] == "allowed_confound"
    md = (out / "report.md").read_text()
    first = "\n".join(md.splitlines()[:8])
    assert "cache-ram" in first, first


def _busy_loop() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def test_preflight_refuses_a_busy_machine_and_force_records_it(
    engine_ready: None, tmp_path: Path
) -> None:
    spec = str(trimmed(tmp_path, "confound.yaml", requests_per_block=1))
    busy = _busy_loop()
    try:
        time.sleep(0.5)
        done = run_cli("run", spec, "--out", str(tmp_path / "x"),
                       "--allow-confound", "cache-ram", "--quiet")  # fmt: skip
        assert done.returncode == 3, done.stderr
        line = error_lines(done.stderr)[0]
        assert f"pid {busy.pid}" in line and "--force" in line
        assert not (tmp_path / "x" / "requests.jsonl").exists()
    finally:
        busy.kill()
        busy.wait()
    lock = MachineLock()
    assert lock.acquire(tmp_path / "holder") is None
    try:
        out = tmp_path / "forced"
        done = run_cli("run", spec, "--out", str(out), "--quiet",
                       "--allow-confound", "cache-ram")  # fmt: skip
        assert done.returncode == 3 and "holds the machine" in done.stderr
        done = run_cli("run", spec, "--out", str(out), "--quiet",
                       "--allow-confound", "cache-ram", "--force")  # fmt: skip
        assert done.returncode == 0, done.stderr
    finally:
        lock.release()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["forced"] is True
    assert manifest["preflight"][0]["kind"] == "machine_locked"
    assert any(w["kind"] == "preflight" for w in _summary(out)["warnings"])


RESUME_SPEC = """
name: resume
base:
  engine: {model: smollm2-135m-instruct, flags: ["--cache-ram", "0"]}
  workload: chat-tools
  max_tokens: 48
arms: {a: {}, b: {threads: 1}}
blocks: 3
requests_per_block: 4
warmup: 1
"""


def test_resume_after_kill_9_completes_without_duplicates(
    engine_ready: None, tmp_path: Path
) -> None:
    spec = tmp_path / "resume.yaml"
    spec.write_text(RESUME_SPEC)
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "servelab", "run", str(spec), "--out", str(out), "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            rows = out / "requests.jsonl"
            if rows.exists() and len(rows.read_text().splitlines()) >= 9:
                break
            time.sleep(0.1)
        servers = [c for c in psutil.Process(proc.pid).children(recursive=True)
                   if c.name() == "llama-server"]  # fmt: skip
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    psutil.wait_procs(servers, timeout=10)  # the engine dies with servelab (PDEATHSIG)
    assert not any(s.is_running() and s.status() != psutil.STATUS_ZOMBIE for s in servers)
    before = _trial_ids(out)
    assert 0 < len(before) < 24
    assert json.loads((out / "manifest.json").read_text())["status"] == "running"
    done = run_cli("resume", str(out), "--quiet", timeout=600)
    assert done.returncode == 0, done.stderr
    ids = _trial_ids(out)
    assert len(ids) == 24 and Counter(ids).most_common(1)[0][1] == 1
    assert set(before) <= set(ids)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and len(manifest["resumes"]) == 1
    assert _summary(out)["arms"]["a"]["n_ok"] + _summary(out)["arms"]["b"]["n_ok"] == 24
    assert llama_servers() == []
    again = run_cli("resume", str(out), "--quiet")
    assert again.returncode == 2 and "already complete" in again.stderr


def test_demo_spec_runs_to_a_verdict(engine_ready: None, tmp_path: Path) -> None:
    out = tmp_path / "demo"
    # 4 rounds of 3 prompts (the demo: 8 of 6, about 9 minutes here: structured prompts take
    # 2-8 s each to prefill on two cores); the same arms, workload and stopping rule
    spec = trimmed(tmp_path, "demo.yaml", blocks=4, requests_per_block=3)
    done = run_cli("run", str(spec), "--out", str(out), "--quiet", timeout=900)
    assert done.returncode == 0, done.stderr
    summary = _summary(out)
    assert {c["metric"] for c in summary["comparisons"]} == {"decode_tps", "ttft_s", "e2e_s"}
    assert all(c["verdict"] in ("better", "worse", "no_difference", "inconclusive")
               for c in summary["comparisons"])  # fmt: skip
    assert "ngram-simple vs none:" in done.stdout
    assert (out / "report.html").exists() and (out / "report.md").exists()
    theory = summary["theory"]
    assert theory["hardware"]["source"] == "measured"  # a CPU run measures this machine
    base = theory["arms"]["none"]
    assert 0.05 < base["pct_of_roofline"] < 1.5
    assert base["kv_matches"] is True  # predicted KV == llama-server's own report
    spec = theory["arms"]["ngram-simple"]["spec"]
    assert spec["predicted_speedup"] > 0 and spec["measured_speedup"] > 0
    assert 0 < spec["acceptance"] <= 1


def test_report_rebuilds_from_the_run_directory_alone(engine_ready: None, tmp_path: Path) -> None:
    out = tmp_path / "small"
    spec = tmp_path / "small.yaml"
    spec.write_text(RESUME_SPEC.replace("blocks: 3", "blocks: 2").replace("threads: 1", "")
                    + "restart: arm_change\n")  # fmt: skip
    assert run_cli("run", str(spec), "--out", str(out), "--quiet").returncode == 0
    first = (out / "summary.json").read_text()
    # A B | B A: b's engine served both of its blocks, and the report says so
    manifest = json.loads((out / "manifest.json").read_text())
    assert [len(manifest["arms"][arm]["starts"]) for arm in ("a", "b")] == [2, 1]
    shared = [w for w in _summary(out)["warnings"] if w["kind"] == "shared_engine_starts"]
    assert [(w["arm"], w["detail"][:6]) for w in shared] == [("b", "1 of 2")], shared
    for name in ("summary.json", "report.md", "report.html"):
        (out / name).unlink()
    done = run_cli("report", str(out))
    assert done.returncode == 0, done.stderr
    assert (out / "summary.json").read_text() == first
    copy = tmp_path / "compare"
    done = run_cli("compare", str(out), str(out), "--arm-a", "a", "--arm-b", "b",
                   "--out", str(copy))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "not interleaved" in done.stdout
    kinds = [w["kind"] for w in _summary(copy)["warnings"]]
    assert "not_interleaved" in kinds, kinds


SWEEP_SPEC = """
name: sweep
base:
  engine: {model: smollm2-135m-instruct, flags: ["--cache-ram", "0"]}
  workload: chat-tools
  max_tokens: 32
  length_matched: true
arms: {a: {}, b: {batch: 1024}}
blocks: 2
requests_per_block: 4
warmup: 1
concurrency: [1, 2]
"""


def test_concurrency_sweep_is_measured_and_plotted(engine_ready: None, tmp_path: Path) -> None:
    spec = tmp_path / "sweep.yaml"
    spec.write_text(SWEEP_SPEC)
    out = tmp_path / "sweep"
    done = run_cli("run", str(spec), "--out", str(out), "--quiet", timeout=600)
    assert done.returncode == 0, done.stderr
    summary = _summary(out)
    for arm in ("a", "b"):
        points = {p["concurrency"]: p for p in summary["sweep"][arm]}
        assert set(points) == {1, 2}
        assert points[1]["efficiency"] == pytest.approx(1.0)
        # Whether two slots beat one on two shared cores is what a sweep measures, not a given;
        # the invariants are the definition of efficiency and a plausible range.
        ideal = 2 * points[1]["aggregate_tps"]
        assert points[2]["efficiency"] == pytest.approx(points[2]["aggregate_tps"] / ideal)
        assert 0.3 < points[2]["efficiency"] <= 1.2
    assert {c["concurrency"] for c in summary["comparisons"]} == {1, 2}
    rows = read_jsonl(out / "requests.jsonl").rows
    assert {r["n_out"] for r in rows if r["outcome"] == "ok"} == {32}  # length-matched
    # Concurrency 2 really had two requests in flight: in every block, some pair overlaps.
    for arm in ("a", "b"):
        for block in (0, 1):
            spans = sorted(
                (r["t_send_unix_s"], r["t_send_unix_s"] + r["e2e_s"] - r["wait_s"])
                for r in rows
                if r["arm"] == arm and r["block"] == block and r["concurrency"] == 2
                and r["phase"] == "trial" and r["outcome"] == "ok"
            )  # fmt: skip
            assert any(b[0] < a[1] for a, b in itertools.pairwise(spans)), (arm, block, spans)
    html = (out / "report.html").read_text()
    assert "Aggregate tok/s and scaling efficiency" in html
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["arms"]["a"]["engine_config"]["parallel"] == 2


def test_kv_cache_types_report_perplexity_kld_and_gates(engine_ready: None, tmp_path: Path) -> None:
    out = tmp_path / "kv"
    spec = trimmed(tmp_path, "kv.yaml", blocks=2)  # the example: 4 blocks
    done = run_cli("run", str(spec), "--out", str(out), "--quiet", timeout=900)
    assert done.returncode == 0, done.stderr  # only the baseline is required, and it passes
    summary = _summary(out)
    ppl = summary["quality"]["ppl"]["arms"]
    assert set(ppl) == {"kv=f16", "kv=q8_0", "kv=q4_0"}
    assert ppl["kv=f16"]["kld"] is None and 5 < ppl["kv=f16"]["ppl"] < 50
    q8, q4 = ppl["kv=q8_0"]["kld"]["mean"], ppl["kv=q4_0"]["kld"]["mean"]
    assert 0 <= q8 < q4  # a coarser cache strays further from f16's distributions
    gates = summary["gates"]
    assert gates["kv=q8_0"]["kld <= 0.05"]["passed"] is True
    assert gates["kv=q4_0"]["kld <= 0.05"]["passed"] is False
    assert {c["candidate"] for c in summary["comparisons"]} == {"kv=q8_0", "kv=q4_0"}
    md = (out / "report.md").read_text()
    assert md.index("## Gates") < md.index("## Verdicts") and "KLD mean" in md
    assert "gates kv=q4_0: FAIL" in done.stdout
