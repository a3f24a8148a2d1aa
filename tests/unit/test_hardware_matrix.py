"""The cross-hardware matrix of a run spread over Ray nodes: summary key, figures and section.

A small run directory is written by hand: two arms over two rounds on two nodes of different
hardware labels and rooflines (round 0: a on n0, b on n1; round 1 the other way round), one
warm-up and two trials per block, one failed trial, every trial of 11 tokens after a 100-token
prompt, so every group decodes at the same position and its ceiling is the node's bandwidth
over the bytes per token the run's own theory section reports.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from servelab.analysis.hardware_matrix import hardware_matrix, pooled_decode
from servelab.analysis.predictions import TheoryInputs
from servelab.report.build import build_report
from servelab.store.manifest import Manifest
from servelab.store.summary import HardwareMatrixRow, Summary
from servelab.theory.arch_yaml import architecture_from_yaml

ARCH = {
    "layers": 4, "embedding": 256, "vocab": 2000, "ffn": 512, "weight_bits": 8,
    "attention": {"heads": 4, "kv_heads": 2, "head_dim": 64},
}  # fmt: skip
GPU, CPU = "gpu: toy-100", "cpu: Toy x4"


def roofline(name: str, gbs: float) -> dict[str, Any]:
    return {"name": name, "bandwidth_gbs": gbs, "memory_bytes": 2**34, "fp16_tflops": 1.0,
            "note": "", "source": "measured"}  # fmt: skip


def node(hardware: str, gbs: float | None) -> dict[str, Any]:
    roof = roofline(f"{hardware} roof", gbs) if gbs is not None else None
    return {"node_id": f"id-{hardware}", "ip": "127.0.0.1", "hardware": hardware,
            "roofline": roof, "builds": {}}  # fmt: skip


def manifest(model: Path, nodes: dict[str, Any] | None) -> dict[str, Any]:
    effective = {"engine.kind": "llamacpp", "model.path": str(model), "ctx_per_slot": 4096,
                 "parallel": 1}  # fmt: skip
    m: dict[str, Any] = {
        "schema_version": 2, "kind": "experiment", "run_id": "spread", "status": "complete",
        "spec": {"name": "spread", "baseline": "a", "blocks": 2, "seed": 0},
        "arms": {"a": {"effective": effective}, "b": {"effective": effective}},
        "hardware": roofline("driver", 50.0),
    }  # fmt: skip
    if nodes is not None:
        m["ray"] = {"address": "local:2", "nodes": nodes}
    return m


# (arm, block, node) -> the two trials' (decode tok/s, TTFT s)
TRIALS = {
    ("a", 0, "n0"): ((40.0, 0.1), (20.0, 0.3)),
    ("b", 0, "n1"): ((8.0, 0.4), (12.0, 0.6)),
    ("a", 1, "n1"): ((10.0, 0.5), (30.0, 0.7)),
    ("b", 1, "n0"): ((50.0, 0.2), (50.0, 0.2)),
}


def row(arm: str, block: int, node: str, seq: int, tps: float, ttft: float, **kw: Any
        ) -> dict[str, Any]:  # fmt: skip
    r = {
        "schema_version": 2, "run_id": "spread", "arm": arm, "block": block, "phase": "trial",
        "seq": seq, "prompt_id": f"p{seq % 2}", "concurrency": 1, "t_send_unix_s": 1.8e9 + seq,
        "request_id": f"{arm}/{block}/{seq}", "node": node, "outcome": "ok", "error": None,
        "finish_reason": "length", "n_in": 100, "n_out": 11, "decode_tps": tps,
        "ttft_s": ttft, "e2e_s": ttft + 10 / tps,
    }  # fmt: skip
    r.update(kw)
    return r


def rows() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for (arm, block, label), trials in TRIALS.items():
        out.append(row(arm, block, label, len(out), 999.0, 9.0, phase="warmup"))
        for tps, ttft in trials:
            out.append(row(arm, block, label, len(out), tps, ttft))
    out.append(row("a", 0, "n0", len(out), 1.0, 9.0, outcome="error", error="timeout",
                   decode_tps=None, n_out=0))  # fmt: skip
    return out


def write_run(tmp_path: Path, nodes: dict[str, Any] | None) -> Path:
    model = tmp_path / "toy.yaml"
    model.write_text(yaml.safe_dump(ARCH), encoding="utf-8")
    run = tmp_path / "spread"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps(manifest(model, nodes)), encoding="utf-8")
    lines = "".join(json.dumps(r) + "\n" for r in rows())
    (run / "requests.jsonl").write_text(lines, encoding="utf-8")
    return run


TWO_NODES = {"n0": node(GPU, 100.0), "n1": node(CPU, 25.0)}


def test_the_matrix_has_one_row_per_hardware_and_arm_with_hand_computed_figures(
    tmp_path: Path,
) -> None:
    run = write_run(tmp_path, TWO_NODES)
    build_report(run)
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    matrix = summary["hardware_matrix"]
    assert [(r["hardware"], r["arm"]) for r in matrix] == [(GPU, "a"), (GPU, "b"),
                                                           (CPU, "a"), (CPU, "b")]  # fmt: skip
    by = {(r["hardware"], r["arm"]): r for r in matrix}
    # bytes per decoded token at position 100 + 11 / 2, as the run's own theory reports it
    theory = summary["theory"]["arms"]["a"]
    assert theory["position"] == 105 and theory["decode_ceiling_tps"] == pytest.approx(
        50e9 / theory["bytes_per_token"]
    )
    bpt = theory["bytes_per_token"]
    # (nodes, blocks, n, median decode, pooled = 10 + 10 tokens / Σ 10 / rate, median TTFT)
    want = {
        (GPU, "a"): (["n0"], [0], 2, 30.0, 20 / (10 / 40 + 10 / 20), 0.2, 100.0),
        (GPU, "b"): (["n0"], [1], 2, 50.0, 50.0, 0.2, 100.0),
        (CPU, "a"): (["n1"], [1], 2, 20.0, 20 / (10 / 10 + 10 / 30), 0.6, 25.0),
        (CPU, "b"): (["n1"], [0], 2, 10.0, 20 / (10 / 8 + 10 / 12), 0.5, 25.0),
    }
    for key, (nodes, blocks, n, median, pooled, ttft, gbs) in want.items():
        r = by[key]
        assert (r["nodes"], r["blocks"], r["n_requests"]) == (nodes, blocks, n), key
        assert r["decode_tps_median"] == pytest.approx(median)
        assert r["decode_tps_pooled"] == pytest.approx(pooled)
        assert r["ttft_s_median"] == pytest.approx(ttft)
        assert r["ceiling_tps"] == pytest.approx(gbs * 1e9 / bpt)
        assert r["roofline_pct"] == pytest.approx(median / (gbs * 1e9 / bpt))
    # the same model on a node of four times the bandwidth: four times the ceiling
    assert by[(GPU, "a")]["ceiling_tps"] == pytest.approx(4 * by[(CPU, "a")]["ceiling_tps"])
    assert Summary.from_json(summary).to_json() == summary  # read back: the same bytes


def test_the_report_has_the_section_with_where_blocks_ran(tmp_path: Path) -> None:
    run = write_run(tmp_path, TWO_NODES)
    build_report(run)
    md = (run / "report.md").read_text(encoding="utf-8")
    html = (run / "report.html").read_text(encoding="utf-8")
    assert "## Hardware matrix" in md and "Hardware matrix" in html
    section = md.split("## Hardware matrix", 1)[1].split("\n## ", 1)[0]
    assert f"arm a: block 0 on {GPU} (node n0), block 1 on {CPU} (node n1)" in section
    assert "not paired comparisons" in section
    assert f"| {GPU} | a | n0 | 0 | 2 | 30.0 | 26.7 | 0.200 |" in section
    assert "100.00 GB/s" in section and "25.00 GB/s" in section


def test_a_run_without_ray_keeps_its_summary_without_the_key(tmp_path: Path) -> None:
    run = write_run(tmp_path, None)
    build_report(run)
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    assert "hardware_matrix" not in summary
    assert "Hardware matrix" not in (run / "report.md").read_text(encoding="utf-8")
    assert Summary.from_json(summary).hardware_matrix is None


def test_nodes_of_one_label_pool_and_weigh_their_ceilings_by_requests(tmp_path: Path) -> None:
    """n0 and n1 share a label but measured 100 and 50 GB/s; n2 has no roofline; rows from a
    node the manifest does not know go under "(unrecorded)"."""
    nodes = {"n0": node(CPU, 100.0), "n1": node(CPU, 50.0), "n2": node(GPU, None)}
    m = Manifest.from_json(manifest(tmp_path / "toy.yaml", nodes))
    data = [row("a", 0, "n0", 0, 10.0, 0.1)] + [row("a", 1, "n1", i, 20.0, 0.2)
                                                  for i in range(1, 4)]  # fmt: skip
    data += [row("a", 0, "n2", 4, 5.0, 0.3), row("a", 1, "n9", 5, 7.0, 0.4)]
    arch = architecture_from_yaml(ARCH, name="toy")
    matrix = hardware_matrix(m, data, {"a": TheoryInputs(arch)}, ["a"])
    assert matrix is not None
    cpu, gpu, unknown = matrix
    assert (cpu.hardware, cpu.nodes, cpu.blocks, cpu.n_requests) == (CPU, ("n0", "n1"), (0, 1), 4)
    one = hardware_matrix(Manifest.from_json(manifest(tmp_path / "toy.yaml", {
        "n0": node(CPU, 1.0)})), data[:1], {"a": TheoryInputs(arch)}, ["a"])  # fmt: skip
    assert one is not None and one[0].ceiling_tps is not None
    bytes_per_token = 1e9 / one[0].ceiling_tps  # same position (all rows 100 + 11 / 2)
    assert cpu.ceiling_tps == pytest.approx((100e9 * 1 + 50e9 * 3) / 4 / bytes_per_token)
    assert cpu.decode_tps_median == 20.0 and cpu.roofline_pct == pytest.approx(
        20.0 / cpu.ceiling_tps
    )
    assert (gpu.hardware, gpu.ceiling_tps, gpu.roofline_pct) == (GPU, None, None)
    assert gpu.decode_tps_median == 5.0
    assert (unknown.hardware, unknown.nodes) == ("(unrecorded)", ("n9",))


def test_no_matrix_without_nodes_and_no_ceiling_without_a_model(tmp_path: Path) -> None:
    plain = Manifest.from_json(manifest(tmp_path / "toy.yaml", None))
    assert hardware_matrix(plain, rows(), {}) is None
    spread = Manifest.from_json(manifest(tmp_path / "toy.yaml", TWO_NODES))
    matrix = hardware_matrix(spread, rows(), {})
    assert matrix is not None and all(r.ceiling_tps is None for r in matrix)
    assert all(isinstance(r, HardwareMatrixRow) and r.roofline_pct is None for r in matrix)
    assert pooled_decode([]) is None
