"""Experiments spread over a real Ray cluster on 127.0.0.1, with the real llama-server and
SmolLM2 on every node (issue 17): ``servelab run SPEC --ray local:2`` (the cluster started by
the run), and a cluster the test starts itself so it can kill a node mid-run: the lost node's
rows stay, its block runs again elsewhere, no planned request is lost or recorded twice; with
nowhere else to go the run fails resumable and ``servelab resume`` finishes it once the node
is back. Two nodes share this 2-core machine, so each engine runs with one thread.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from servelab.store.jsonl import read_jsonl
from tests.integration.conftest import error_lines, llama_servers, run_cli

pytestmark = pytest.mark.engine

REPO = Path(__file__).resolve().parents[2]
AA = REPO / "examples" / "aa.yaml"


def spec_file(tmp: Path, name: str, **extra: Any) -> Path:
    """examples/aa.yaml (one thread per engine) trimmed for a test: 2 rounds, short replies."""
    import yaml

    spec = yaml.safe_load(AA.read_text(encoding="utf-8"))
    assert spec["base"]["engine"]["flags"][-2:] == ["-t", "1"]  # two engines on 2 cores
    spec["base"]["max_tokens"] = 24
    spec.update({"blocks": 2, "requests_per_block": 4, "warmup": 1, "kv_probe": False, **extra})
    path = tmp / f"{name}.yaml"
    path.write_text(json.dumps(spec), encoding="utf-8")
    return path


def trials(run: Path) -> list[dict[str, Any]]:
    return [r for r in read_jsonl(run / "requests.jsonl").rows if r["phase"] == "trial"]


def planned_ids(run: Path) -> list[str]:
    manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    spec = manifest["spec"]
    return [f"b{p['block']}/{p['arm']}/c{p['concurrency']}/{i}" for p in manifest["plan"]
            for i in range(spec["requests_per_block"])]  # fmt: skip


def manifest_of(run: Path) -> dict[str, Any]:
    return dict(json.loads((run / "manifest.json").read_text(encoding="utf-8")))


def test_an_aa_run_spreads_its_blocks_over_two_local_nodes(
    engine_ready: None, tmp_path: Path
) -> None:
    out = tmp_path / "aa"
    done = run_cli("run", str(spec_file(tmp_path, "aa")), "--ray", "local:2", "--out", str(out),
                   "--quiet", timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = trials(out)
    ids = [r["request_id"] for r in rows]
    assert sorted(ids) == sorted(planned_ids(out)) and len(set(ids)) == len(ids)
    everything = read_jsonl(out / "requests.jsonl").rows
    assert [r["seq"] for r in everything] == list(range(len(everything)))
    assert len({r["request_id"] for r in everything}) == len(everything)  # warm-ups too
    # each round's two blocks ran side by side on the two nodes, and arms swap nodes
    where = {(r["block"], r["arm"]): r["node"] for r in rows}
    assert {where[0, "a"], where[0, "b"]} == {"n0", "n1"}
    assert where[1, "a"] == where[0, "b"] and where[1, "b"] == where[0, "a"]
    manifest = manifest_of(out)
    assert manifest["status"] == "complete" and manifest["ray"]["address"] == "local:2"
    nodes = manifest["ray"]["nodes"]
    assert set(nodes) == {"n0", "n1"} and all(n["ip"] == "127.0.0.1" for n in nodes.values())
    assert all(n["builds"]["a"] == manifest["arms"]["a"]["effective"]["engine.build"]
               for n in nodes.values())  # fmt: skip
    assert manifest["arms"]["a"]["effective"]["node.hardware"].startswith("cpu: ")
    starts = [s["describe"]["node"] for a in ("a", "b") for s in manifest["arms"][a]["starts"]]
    assert Counter(starts) == {"n0": 2, "n1": 2}
    assert any("ran at the same time on different nodes" in n for n in manifest["notes"])
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    verdicts = [c["verdict"] for c in summary["comparisons"]]
    assert verdicts and set(verdicts) <= {"no_difference", "inconclusive"}, verdicts  # A/A
    assert (out / "nodes" / "n0" / "engine-a.log").is_file()
    assert not llama_servers()


@pytest.fixture
def cluster() -> Iterator[Any]:
    """A 2-node cluster on 127.0.0.1 that this test controls (and may kill nodes of)."""
    from servelab.runner.distributed.cluster import RayCluster, parse_target

    with RayCluster(parse_target("local:2")) as c:
        yield c


def start_run(spec: Path, out: Path, address: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "servelab", "run", str(spec), "--ray", address, "--out", str(out),
         "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def kill_when_it_has_rows(proc: subprocess.Popen[str], run: Path, cluster: Any, label: str
                          ) -> int:  # fmt: skip
    """Kill node ``label`` once it has recorded a trial row; return the rows it had then."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if (run / "requests.jsonl").exists():
            mine = [r for r in trials(run) if r["node"] == label]
            if mine:
                cluster.kill_node(int(label[1:]))
                return len(mine)
        time.sleep(0.2)
    raise AssertionError(f"node {label} never recorded a row: {proc.communicate()[1]}")


def test_a_node_killed_mid_block_keeps_its_rows_and_its_block_runs_elsewhere(
    engine_ready: None, tmp_path: Path, cluster: Any
) -> None:
    out = tmp_path / "killed"
    proc = start_run(spec_file(tmp_path, "killed", requests_per_block=6), out, cluster.address)
    had = kill_when_it_has_rows(proc, out, cluster, "n1")
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr
    rows = trials(out)
    ids = [r["request_id"] for r in rows]
    assert sorted(ids) == sorted(planned_ids(out)) and len(set(ids)) == len(ids)
    assert sum(r["node"] == "n1" for r in rows) >= had  # what it sent before it died stays
    manifest = manifest_of(out)
    assert manifest["status"] == "complete" and manifest["ray"]["nodes"]["n1"]["lost"]
    assert not llama_servers()


def test_with_nowhere_else_to_go_the_run_fails_resumable_and_resume_finishes_it(
    engine_ready: None, tmp_path: Path, cluster: Any
) -> None:
    out = tmp_path / "pinned"
    spec = spec_file(tmp_path, "pinned", requests_per_block=6, placement={"b": ["n1"]})
    proc = start_run(spec, out, cluster.address)
    kill_when_it_has_rows(proc, out, cluster, "n1")
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 3, stderr
    lines = error_lines(stderr)
    assert len(lines) == 1 and "no live node may run arm 'b'" in lines[0], stderr
    assert "servelab resume" in lines[0]
    kept = trials(out)
    assert manifest_of(out)["status"] == "failed" and kept
    cluster.add_node(1)  # the node is back
    done = run_cli("resume", str(out), "--quiet", timeout=600)
    assert done.returncode == 0, done.stderr
    rows = trials(out)
    ids = [r["request_id"] for r in rows]
    assert sorted(ids) == sorted(planned_ids(out)) and len(set(ids)) == len(ids)
    assert rows[: len(kept)] == kept  # nothing already recorded was touched
    assert {r["node"] for r in rows if r["arm"] == "b"} == {"n1"}  # placement held
    manifest = manifest_of(out)
    assert manifest["status"] == "complete" and len(manifest["resumes"]) == 1
    assert not llama_servers()
