"""``servelab bench --ray local:2 --workers 2`` against the real llama-server and the default
model, on a real two-node Ray cluster on 127.0.0.1: the measured requests go out from client
workers on both nodes, and the driver merges them into one run with the workers' clock offsets
recorded. Closed loop and open loop; kept small (4 requests of 16 tokens each). And
``servelab selftest --ray``: the client ceiling ramp split over the two nodes' workers."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import DEFAULT_MODEL, listed_model, run_cli

pytestmark = pytest.mark.engine

N = 4


def _bench(out: Path, *extra: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    res = run_cli(
        "bench", "--model", listed_model(DEFAULT_MODEL), "--ray", "local:2", "--workers", "2",
        "-n", str(N), "--max-tokens", "16", "--warmup", "1", "-o", str(out), "-q", *extra,
        timeout=240,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    rows = [json.loads(line) for line in (out / "requests.jsonl").read_text().splitlines()]
    return manifest, rows


def _check_merged(manifest: dict[str, Any], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One run: every row once, seq in arrival order, trials from both nodes, offsets small."""
    assert manifest["status"] == "complete"
    assert [r["seq"] for r in rows] == list(range(len(rows)))  # one writer, no duplicate
    trials = [r for r in rows if r["phase"] == "trial"]
    assert len(trials) == N and all(r["outcome"] == "ok" for r in trials)
    assert Counter(r["node"] for r in trials) == {"n0": N // 2, "n1": N // 2}
    for r in trials:  # ``node`` right after ``request_id``, as a spread run's rows
        keys = list(r)
        assert keys[keys.index("request_id") + 1] == "node"
    assert all("node" not in r for r in rows if r["phase"] == "warmup")  # the driver's own
    workers = manifest["load_workers"]
    assert set(workers) == {"n0", "n1"}
    for w in workers.values():  # one machine: the clocks agree to well under a second
        assert abs(w["offset_s"]) < 0.5 and abs(w["offset_after_s"]) < 0.5
        assert 0 < w["rtt_s"] < 0.5 and w["requests"] == N // 2
    assert all(r["t_send_unix_s"] > manifest["created_unix_s"] for r in trials)
    return trials


def test_closed_loop_from_two_nodes_is_one_run(engine_ready: None, tmp_path: Path) -> None:
    manifest, rows = _bench(tmp_path / "closed", "-c", "2")
    trials = _check_merged(manifest, rows)
    assert all(r["concurrency"] == 2 for r in trials)  # in flight in all, over both workers
    for label in ("n0", "n1"):  # one in flight per worker: each send follows the last reply
        mine = sorted((r for r in trials if r["node"] == label), key=lambda r: r["t_send_unix_s"])
        for a, b in itertools.pairwise(mine):
            assert b["t_send_unix_s"] >= a["t_send_unix_s"] + a["e2e_s"] - 0.05


def test_open_loop_schedule_is_dealt_round_robin(engine_ready: None, tmp_path: Path) -> None:
    manifest, rows = _bench(tmp_path / "open", "--rate", "2", "--arrival", "constant")
    trials = _check_merged(manifest, rows)
    by_sched = sorted(trials, key=lambda r: r["t_sched_unix_s"])
    # request i of the one schedule went to worker i % 2, at its time on the driver's clock
    assert [r["node"] for r in by_sched] == ["n0", "n1"] * (N // 2)
    gaps = [b["t_sched_unix_s"] - a["t_sched_unix_s"] for a, b in itertools.pairwise(by_sched)]
    assert all(abs(g - 0.5) < 0.05 for g in gaps), gaps
    assert all(r["lag_s"] > -0.005 for r in trials)
    assert all(r["t_send_unix_s"] >= r["t_sched_unix_s"] - 0.005 for r in trials)


def test_selftest_ramps_again_over_two_workers(tmp_path: Path) -> None:
    """The selftest's ceiling ramp split over two local Ray workers, beside the one-process
    ramp (a cache of its own: its machine lock is not the one a run elsewhere holds)."""
    env = {**os.environ, "SERVELAB_CACHE_DIR": str(tmp_path / "cache"), "COLUMNS": "200"}
    res = subprocess.run(
        [sys.executable, "-m", "servelab", "selftest", "--quick", "--no-save", "--json",
         "--ray", "local:2", "--workers", "2"],
        capture_output=True, text=True, timeout=240, check=False, env=env,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    data = json.loads(res.stdout)
    split = data["ray"]
    assert split["address"] == "local:2" and set(split["workers"]) == {"n0", "n1"}
    assert all(abs(w["offset_s"]) < 0.5 for w in split["workers"].values())
    assert split["skipped_streams"] == [1]  # fewer streams than workers
    assert split["steps"] and split["steps"][0]["streams"] == 4
    assert split["error_p99_ms_used"] == data["bounds"]["error_p99_ms_used"]
    step = split["steps"][0]
    assert step["requests"] > 0 and step["tokens"] > 0
    assert sum(w["requests"] for w in split["workers"].values()) >= step["requests"]
