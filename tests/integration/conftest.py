"""Shared fixtures for tests against the real llama-server and the real default model.

One server is shared by each module that needs it and stopped when the module ends, so no two
llama-servers ever run at once (on two cores they slow each other down many-fold); these tests
run serially. A missing engine or model stops the whole run before the first test
(``tests/conftest.py``), never a skip: CI must not pass without the real parts. Models come from
``tests/models.txt`` through ``tests.models``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import yaml

from servelab.engines.base import Engine
from servelab.engines.registry import create_engine
from servelab.errors import ServelabError
from servelab.spec.engine import EngineConfig
from tests.models import DEFAULT_MODEL, listed_model

__all__ = ["DEFAULT_MODEL", "listed_model"]


@pytest.fixture(scope="session")
def engine_ready() -> None:
    from servelab.engines.install import find_llama_binary
    from servelab.models import resolve_model

    try:
        find_llama_binary("llama-server")
        resolve_model(listed_model(DEFAULT_MODEL))
    except ServelabError as exc:
        pytest.fail(f"integration tests need the engine and model ({exc}); run `make test`")


@pytest.fixture(scope="module")
def server(engine_ready: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """One llama-server for a module; stopped before the next module may start its own."""
    log = tmp_path_factory.mktemp("server") / "engine.log"
    engine = create_engine(EngineConfig(model=listed_model(DEFAULT_MODEL)), log)
    engine.launch()
    try:
        engine.wait_healthy(120)
        yield engine
    finally:
        engine.stop()


@pytest.fixture(scope="session")
def vllm_python() -> Path:
    """The Python of the vLLM venv (`servelab engines install vllm`, or $SERVELAB_VLLM_PYTHON)."""
    from servelab.engines.installed import find_vllm_python

    try:
        return find_vllm_python()
    except ServelabError as exc:
        pytest.fail(f"vLLM tests need the vLLM venv ({exc}); run `make test`", pytrace=False)


@pytest.fixture(scope="session")
def smollm2_hf_dir(vllm_python: Path) -> Path:
    """SmolLM2 converted to an HF directory (`servelab models convert ... --to hf`)."""
    from servelab.models.convert import hf_model_dir

    try:
        return hf_model_dir(listed_model("smollm2-135m-instruct"))
    except ServelabError as exc:
        pytest.fail(f"vLLM tests need the HF copy of SmolLM2 ({exc}); run `make test`",
                    pytrace=False)  # fmt: skip


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def trimmed_example(folder: Path, example: str, **fields: object) -> Path:
    """``examples/EXAMPLE`` with top-level ``fields`` replaced (fewer blocks or requests: the
    same arms, engine and workload), written to ``folder``. The suite runs on a 2-core
    machine, where every request of a full example costs seconds."""
    spec = yaml.safe_load((EXAMPLES / example).read_text(encoding="utf-8"))
    spec.update(fields)
    path = folder / example
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``python -m servelab`` as a user would, in a child process."""
    return subprocess.run(
        [sys.executable, "-m", "servelab", *args],
        capture_output=True, text=True, timeout=timeout, check=False,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip


def llama_servers() -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["name", "cmdline", "status"]):
        if p.info["name"] == "llama-server" and p.info["status"] != psutil.STATUS_ZOMBIE:
            out.append(p)
    return out


def children_named(pid: int, name: str) -> list[psutil.Process]:
    try:
        return [c for c in psutil.Process(pid).children(recursive=True) if c.name() == name]
    except psutil.NoSuchProcess:
        return []


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("servelab: error:")]
