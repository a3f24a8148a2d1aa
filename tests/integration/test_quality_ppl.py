"""``quality ppl`` for real: llama-perplexity on the packaged text, with the default model.

A hand-built experiment manifest holds three arms of SmolLM2-135M: the f16 baseline, an f16 arm
with flash attention on (the same numbers by another path: KL divergence ~0) and a q8_0 KV arm
(small but positive divergence). Runs through a local typer app as a user would; about 60 s on
two cores.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from servelab.cli.quality_cmd import quality_app
from servelab.engines.install import find_llama_binary
from servelab.models import resolve_model

from .conftest import DEFAULT_MODEL

pytestmark = pytest.mark.engine

ARMS = {"base": ("f16", "auto"), "f16": ("f16", "on"), "q8": ("q8_0", "on")}


def _effective(kv: str, fa: str) -> dict[str, Any]:
    return {
        "engine.kind": "llamacpp",
        "engine.binary": str(find_llama_binary("llama-server")),
        "model.path": str(resolve_model(DEFAULT_MODEL).path),
        "llama.cache-type-k": kv, "llama.cache-type-v": kv, "llama.flash-attn": fa,
        "llama.threads": "2", "llama.threads-batch": "same as --threads",
    }  # fmt: skip


@pytest.fixture(scope="module")
def run_dir(engine_ready: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ppl") / "kv-demo"
    root.mkdir()
    arms = {name: {"effective": _effective(kv, fa)} for name, (kv, fa) in ARMS.items()}
    arms["remote"] = {"effective": {"engine.kind": "openai"}}
    manifest = {"schema_version": 1, "kind": "experiment", "baseline": "base", "arms": arms}
    (root / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return root


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.add_typer(quality_app, name="quality")
    return app


@pytest.fixture(scope="module")
def measured(run_dir: Path) -> tuple[dict[str, Any], str]:
    result = CliRunner().invoke(_cli(), ["quality", "ppl", str(run_dir)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    doc = json.loads((run_dir / "quality" / "ppl.json").read_text(encoding="utf-8"))
    return doc, result.output


def test_every_llama_arm_has_a_plausible_perplexity(measured: tuple[dict[str, Any], str]) -> None:
    doc, output = measured
    assert doc["status"] == "complete" and doc["baseline"] == "base" and doc["ctx"] == 256
    assert set(doc["arms"]) == {"base", "f16", "q8"}
    for arm in doc["arms"].values():
        assert math.isfinite(arm["ppl"]) and 2 < arm["ppl"] < 100, arm
        assert arm["chunks"] >= 8 and (Path(doc["text"]["file"]).name in " ".join(arm["argv"]))
    assert "remote" in doc["skipped"] and "not a llama.cpp arm" in doc["skipped"]["remote"]
    assert "q8" in output and "KLD mean" in output


def test_kl_divergence_is_zero_for_the_same_numbers_and_small_for_q8(
    measured: tuple[dict[str, Any], str],
) -> None:
    doc, _ = measured
    assert doc["arms"]["base"]["kld"] is None
    same, q8 = doc["arms"]["f16"]["kld"], doc["arms"]["q8"]["kld"]
    assert same["mean"] < 1e-4 and same["same_top_p_pct"] > 99.5
    assert 0 <= q8["mean"] < 0.1 and q8["mean"] > same["mean"]
    assert 80 < q8["same_top_p_pct"] < 100
    assert "--kl-divergence" in doc["arms"]["q8"]["argv"]
    assert doc["arms"]["q8"]["argv"][doc["arms"]["q8"]["argv"].index("-ctv") + 1] == "q8_0"


def test_logits_are_deleted_and_the_text_is_recorded(
    measured: tuple[dict[str, Any], str], run_dir: Path
) -> None:
    doc, _ = measured
    assert not (run_dir / "quality" / "baseline-logits.kld").exists()
    assert doc["logits"]["kept"] is False and doc["logits"]["bytes"] > 1_000_000
    assert len(doc["text"]["sha256"]) == 64
    assert (run_dir / doc["arms"]["q8"]["log"]).is_file()


def test_a_finished_measurement_is_not_repeated(
    measured: tuple[dict[str, Any], str], run_dir: Path
) -> None:
    before = (run_dir / "quality" / "ppl.json").read_text(encoding="utf-8")
    result = CliRunner().invoke(_cli(), ["quality", "ppl", str(run_dir)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "--force" in result.output
    assert (run_dir / "quality" / "ppl.json").read_text(encoding="utf-8") == before
