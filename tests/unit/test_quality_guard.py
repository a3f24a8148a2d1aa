"""``run_ppl`` refuses what it cannot measure before starting any engine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from servelab.errors import UsageError
from servelab.runner.quality import run_ppl, text_bytes, text_info


def _run(tmp_path: Path, manifest: dict[str, Any]) -> Path:
    (tmp_path / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return tmp_path


def test_a_bench_run_is_refused(tmp_path: Path) -> None:
    run = _run(tmp_path, {"kind": "bench", "arms": {}})
    with pytest.raises(UsageError, match="is a bench run, not an experiment"):
        run_ppl(run)


def test_a_directory_without_manifest_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"no manifest\.json"):
        run_ppl(tmp_path)


def test_a_remote_baseline_is_refused(tmp_path: Path) -> None:
    arms = {"a": {"effective": {"engine.kind": "openai"}}}
    run = _run(tmp_path, {"kind": "experiment", "baseline": "a", "arms": arms})
    with pytest.raises(UsageError, match=r"baseline arm 'a' .* is not a llama\.cpp arm"):
        run_ppl(run)


def test_a_missing_baseline_model_names_the_fix(tmp_path: Path) -> None:
    eff = {"engine.kind": "llamacpp", "engine.binary": "/x/llama-server", "model.path": "/no.gguf"}
    run = _run(tmp_path, {"kind": "experiment", "baseline": "a", "arms": {"a": {"effective": eff}}})
    with pytest.raises(UsageError, match=r"/no.gguf is missing; pull it again"):
        run_ppl(run)
    assert not (tmp_path / "quality").exists()


def test_the_packaged_text_is_long_enough_and_identified() -> None:
    data = text_bytes()
    info = text_info(data)
    assert len(data.split()) > 3000  # ~4,000 SmolLM2 tokens: 15 chunks at --ctx 256
    assert info.name == "us-founding-documents" and len(info.sha256) == 64
