"""The one list of models the test suite may load (``tests/models.txt``), read by the Makefile too.

Owns reading that list and checking it: ``listed_model`` is how a test names a model, and it
fails with the list's path when the model is not on it; ``missing`` says which listed models are
not pulled (the session check in ``tests/conftest.py`` stops the run at once on that).
Must not pull anything: pulling is ``make test``'s job, so that what CI has is what a user gets.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from servelab.errors import ServelabError

MODELS_LIST = Path(__file__).with_name("models.txt")


def read_models_list(path: Path = MODELS_LIST) -> tuple[str, ...]:
    """The model names in ``path``: one per line, ``#`` comments and blank lines ignored."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text("utf-8").splitlines())
    return tuple(line for line in lines if line)


TEST_MODELS = read_models_list()
DEFAULT_MODEL = TEST_MODELS[0]


def listed_model(name: str) -> str:
    """``name`` if ``tests/models.txt`` lists it; a test failure naming that list otherwise."""
    if name not in TEST_MODELS:
        pytest.fail(
            f"model {name!r} is not in tests/models.txt, the list `make test` pulls: "
            "add it there so that every machine has it",
            pytrace=False,
        )
    return name


def missing() -> list[str]:
    """The listed models (and the engine) that are not ready on this machine, as short reasons."""
    from servelab.engines.install import find_llama_binary
    from servelab.engines.installed import find_vllm_python
    from servelab.models import resolve_model
    from servelab.models.convert import hf_model_dir

    reasons = []
    try:
        find_llama_binary("llama-server")
    except ServelabError:
        reasons.append("llama-server is not built")
    for name in TEST_MODELS:
        try:
            resolve_model(name)
        except ServelabError:
            reasons.append(f"model {name!r} is not pulled")
    try:
        find_vllm_python()
    except ServelabError:
        reasons.append("the vLLM venv is not installed")
    try:
        hf_model_dir(DEFAULT_MODEL)
    except ServelabError:
        reasons.append(f"{DEFAULT_MODEL} has no HF copy for vLLM")
    if importlib.util.find_spec("ray") is None:
        reasons.append("Ray (the ray extra) is not installed")
    return reasons
