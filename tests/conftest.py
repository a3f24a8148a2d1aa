"""Stops the test run at once when a test that needs the engine or a listed model cannot have it.

``make test`` builds llama-server and pulls every model in ``tests/models.txt`` before pytest
starts. Someone who runs ``pytest`` directly on a machine without them would otherwise get one
setup error per test; instead the run ends before the first test with one line naming the fix.
Unit-only selections (``pytest tests/unit``) need neither and are not checked.
"""

from __future__ import annotations

import pytest

from tests.models import missing

# Fixtures through which a test loads the real engine or a model.
_ENGINE_FIXTURES = frozenset({"engine_ready", "server", "models_ready"})


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
