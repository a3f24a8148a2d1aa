"""The study-shaped examples end to end on the real llama-server: ``moe-vs-dense.yaml`` (the
confound guard lists what else differs between two models until each field is declared, then
the declared run) and ``batch-scaling.yaml`` (a concurrency sweep with the batch cost fit in
summary.json and the report). Each runs a trimmed copy of the shipped YAML (fewer blocks,
requests and tokens; the same arms and declarations). The MoE is made once for the module with
the command the examples give. One engine at a time: run this module under the engine lock.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import pytest
import yaml

from servelab.store.jsonl import read_jsonl
from tests.integration.conftest import error_lines, run_cli

pytestmark = pytest.mark.engine

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MOE_FILE = "qwen3-moe-2l.gguf"  # the name both examples give the synthetic MoE


@pytest.fixture(scope="module")
def moe_model(engine_ready: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("moe") / MOE_FILE
    done = run_cli("models", "synth", "--like", "qwen3-30b-a3b", "--layers", "2", "--out",
                   str(path), "--no-progress")  # fmt: skip
    assert done.returncode == 0, done.stderr
    return path


def trimmed(
    example: str, moe: Path, folder: Path, *, max_tokens: int | None = None, **changes: Any
) -> Path:
    """A copy of ``examples/EXAMPLE`` with the MoE's real path, ``base.max_tokens`` and the
    top-level ``changes`` applied (a value of None removes the key)."""
    spec = yaml.safe_load((EXAMPLES / example).read_text())
    if max_tokens is not None:
        spec["base"]["max_tokens"] = max_tokens
    for arm in spec["arms"].values():
        if arm.get("model") == MOE_FILE:
            arm["model"] = str(moe)
    for key, value in changes.items():
        if value is None:
            spec.pop(key, None)
        else:
            spec[key] = value
    out = folder / example
    out.write_text(yaml.safe_dump(spec, sort_keys=False))
    return out


def _median_gap_s(rows: list[dict[str, Any]], arm: str, concurrency: int) -> float:
    """The level's step as the fit defines it, recomputed from the rows: the median over its
    successful trial requests that measured gaps of each one's median inter-token gap."""
    return statistics.median(
        float(statistics.median(r["itl_s"])) for r in rows
        if r["arm"] == arm and r["concurrency"] == concurrency and r["phase"] == "trial"
        and r["outcome"] == "ok" and r["itl_s"]
    )  # fmt: skip


def _summary(run: Path) -> dict[str, Any]:
    return dict(json.loads((run / "summary.json").read_text()))


def test_the_guard_lists_every_model_field_the_spec_leaves_undeclared(
    moe_model: Path, tmp_path: Path
) -> None:
    spec = trimmed("moe-vs-dense.yaml", moe_model, tmp_path, declare=None)
    out = tmp_path / "run"
    done = run_cli("run", str(spec), "--out", str(out), "--quiet")
    assert done.returncode == 2, done.stderr
    lines = error_lines(done.stderr)
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    line = lines[0]
    # The first undeclared field with both values, then every other one; the model's identity
    # (path, sha256) is what `model:` declares and is not listed.
    assert "arms 'dense' and 'moe' differ in model.chat_template_sha256 (dense: " in line, line
    assert ", moe: " in line and "moe: (unset)" not in line, line  # two different templates
    assert "they also differ undeclared in model.synthetic, model.weights;" in line, line
    assert "model.path" not in line and "model.sha256" not in line, line
    assert "--allow-confound model.chat_template_sha256" in line, line
    assert not (out / "requests.jsonl").exists()


def test_moe_vs_dense_runs_with_each_difference_declared(moe_model: Path, tmp_path: Path) -> None:
    spec = trimmed("moe-vs-dense.yaml", moe_model, tmp_path, blocks=2, requests_per_block=3)
    out = tmp_path / "run"
    done = run_cli("run", str(spec), "--out", str(out), "--quiet", timeout=600)
    assert done.returncode == 0, done.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    diff = manifest["config_diff"]
    assert diff["model.weights"] == {"dense": "Q4_1", "moe": "Q4_K_M"}
    assert diff["model.synthetic"] == {"dense": None, "moe": "qwen3-30b-a3b"}
    templates = diff["model.chat_template_sha256"]
    assert templates["dense"] and templates["moe"] and templates["dense"] != templates["moe"]
    summary = _summary(out)
    assert summary["arms"]["dense"]["n_ok"] == summary["arms"]["moe"]["n_ok"] == 6
    rows = read_jsonl(out / "requests.jsonl").rows
    assert {r["n_out"] for r in rows if r["outcome"] == "ok"} == {32}  # length-matched
    warned = [w for w in summary["warnings"] if w["kind"] == "synthetic_model"]
    assert [w["arm"] for w in warned] == ["moe"]
    decode = [c for c in summary["comparisons"] if c["metric"] == "decode_tps"]
    assert decode and decode[0]["candidate"] == "moe" and decode[0]["ratio"] > 0
    theory = summary["theory"]["arms"]
    assert theory["moe"]["bytes_per_token"] > theory["dense"]["bytes_per_token"]
    report = (out / "report.md").read_text()
    config = report.split("## Configuration differences")[1].split("\n## ")[0]
    for field in ("model.weights", "model.chat_template_sha256", "model.synthetic"):
        line = next(x for x in config.splitlines() if x.startswith(f"| {field} "))
        assert line.rstrip(" |").endswith("declared"), line


def test_batch_scaling_fits_the_batch_cost_model(moe_model: Path, tmp_path: Path) -> None:
    spec = trimmed("batch-scaling.yaml", moe_model, tmp_path, concurrency=[1, 2, 4], blocks=2,
                   requests_per_block=4, max_tokens=16)  # fmt: skip
    out = tmp_path / "run"
    done = run_cli("run", str(spec), "--out", str(out), "--quiet", timeout=600)
    assert done.returncode == 0, done.stderr
    summary = _summary(out)
    rows = read_jsonl(out / "requests.jsonl").rows
    fits = summary["batch_fit"]
    assert set(fits) == {"dense", "moe"}
    moe, dense = fits["moe"], fits["dense"]
    assert (moe["model"], moe["n_expert"], moe["n_expert_used"]) == ("union", 128, 8)
    assert (dense["model"], dense["n_expert"]) == ("linear", 0)
    assert dense["verdict"] == "linear"
    assert moe["verdict"] in ("union", "linear", "indistinguishable")
    for arm, fit in fits.items():
        assert [p["concurrency"] for p in fit["points"]] == [1, 2, 4]
        assert fit["per_unit_s"] > 0  # more sequences (or experts) cost more per step
        assert fit["r2"] <= 1.0 and fit["linear_r2"] <= 1.0
        for p in fit["points"]:
            b = p["concurrency"]
            assert p["step_s"] == pytest.approx(_median_gap_s(rows, arm, b))
            assert p["aggregate_tps"] == pytest.approx(b / p["step_s"])
            # the model reproduces what it was fitted to: each level within 30 %
            assert p["fitted_aggregate_tps"] == pytest.approx(p["aggregate_tps"], rel=0.3)
    for fit in fits.values():  # the gaps, not the decode rate, which counts prefill stalls
        assert fit["step_measure"] == "median inter-token gap"
    assert moe["points"][0]["cost_units"] == pytest.approx(8.0)  # N(1) = k
    assert moe["points"][2]["cost_units"] == pytest.approx(29.123, rel=1e-3)  # N(4)
    report = (out / "report.md").read_text()
    section = report.split("## Concurrency")[1].split("\n## ")[0]
    assert "Batch cost model" in section and "union (E=128, k=8)" in section
    assert "| dense | linear (dense) |" in section
