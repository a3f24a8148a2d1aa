"""The ``openai`` engine kind, driven against a real llama-server acting as the endpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from servelab.engines.base import Engine
from servelab.store.jsonl import read_jsonl
from tests.integration.conftest import error_lines, run_cli

pytestmark = pytest.mark.engine


def test_openai_kind_drives_an_existing_endpoint(server: Engine, tmp_path: Path) -> None:
    out = tmp_path / "oa"
    res = run_cli(
        "bench", "--engine", "openai", "--endpoint", server.base_url + "/v1", "--model", "x",
        "-n", "3", "--warmup", "0", "--max-tokens", "12", "--unique-prefix", "--out", str(out),
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    rows = read_jsonl(out / "requests.jsonl").rows
    assert len(rows) == 3 and all(r["outcome"] == "ok" for r in rows)
    # no per-chunk timings from a generic endpoint: counts are checked against usage instead
    assert all(r["chunk_tokens_source"] in ("verified", "estimated") for r in rows)
    assert all(r["n_out_source"] == "usage" for r in rows)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["arms"]["bench"]["describe"]["kind"] == "openai"


def test_api_key_is_read_from_env_and_never_written(server: Engine, tmp_path: Path) -> None:
    out = tmp_path / "key"
    secret = "sk-servelab-test-0123456789"
    env = {**os.environ, "SERVELAB_TEST_KEY": secret}
    res = subprocess.run(
        [sys.executable, "-m", "servelab", "bench", "--engine", "openai", "--endpoint",
         server.base_url, "--model", "x", "--api-key-env", "SERVELAB_TEST_KEY", "-n", "1",
         "--warmup", "0", "--max-tokens", "4", "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    for f in out.rglob("*"):
        if f.is_file():
            assert secret not in f.read_text(errors="replace"), f
    missing = run_cli("bench", "--engine", "openai", "--endpoint", server.base_url,
                      "--api-key-env", "SERVELAB_UNSET_KEY_X", "-n", "1")  # fmt: skip
    assert missing.returncode == 2
    assert len(error_lines(missing.stderr)) == 1 and "SERVELAB_UNSET_KEY_X" in missing.stderr
