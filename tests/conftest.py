"""Stops the test run at once when a test that needs the engine or a listed model cannot have it.

``make test`` builds llama-server and pulls every model in ``tests/models.txt`` before pytest
starts. Someone who runs ``pytest`` directly on a machine without them would otherwise get one
setup error per test; instead the run ends before the first test with one line naming the fix.
Unit-only selections (``pytest tests/unit``) need neither and are not checked.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.models import missing

# Fixtures through which a test loads the real engine or a model.
_ENGINE_FIXTURES = frozenset(
    {"engine_ready", "server", "models_ready", "vllm_python", "smollm2_hf_dir"}
)


def _needs_engine(item: pytest.Item) -> bool:
    names = set(getattr(item, "fixturenames", ()))
    return bool(names & _ENGINE_FIXTURES) or item.get_closest_marker("engine") is not None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.option.collectonly or not any(_needs_engine(item) for item in items):
        return
    reasons = missing()
    if reasons:
        pytest.exit(
            f"{'; '.join(reasons)}: run `make test`, which builds the engine and pulls "
            "tests/models.txt before running pytest",
            returncode=3,
        )


class Immutable:
    """Makes files immutable with ``chattr +i`` (even root cannot write them), and undoes it."""

    def __init__(self) -> None:
        self.paths: list[Path] = []

    def make(self, path: Path) -> None:
        done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)
        if done.returncode != 0:
            pytest.fail(f"chattr +i {path} failed: {done.stderr.decode().strip()}")
        self.paths.append(path)

    def release(self, path: Path) -> None:
        subprocess.run(["chattr", "-i", str(path)], check=True)


@pytest.fixture
def immutable() -> Iterator[Immutable]:
    """For write-failure probes; every file made immutable is released after the test."""
    if shutil.which("chattr") is None:
        pytest.fail("chattr is needed for the write-failure tests (Debian's e2fsprogs)")
    files = Immutable()
    yield files
    for path in files.paths:
        subprocess.run(["chattr", "-i", str(path)], check=False)
