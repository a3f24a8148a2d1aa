"""The effective configuration, built from the spec alone against the real llama-server.

Release 0.1.0's demo run (same llama.cpp commit, same model) recorded each arm's effective
configuration by building a whole engine; computing it now through the engine class, with the
binary's real ``--help``, must give the same keys in the same order and the same values, except
where this machine keeps its files. Nothing is launched and no socket is bound: only ``--help``
and ``--version`` run, in child processes.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from servelab.runner.resolve import canonical_names, effective_config
from servelab.spec.experiment import ExperimentSpec, resolve_arm
from servelab.workloads import load_workload

pytestmark = pytest.mark.engine

DEMO = Path(__file__).resolve().parents[1] / "fixtures" / "runs" / "release-0.1.0" / "demo"
# where this machine keeps its files (the release ran with the cache in ~/.cache/servelab)
LOCAL = ("engine.binary", "engine.binary_sha256", "model.path", "llama.model")
# keys added since the release (issue 14: what two engines cannot share); resume ignores them
ADDED = ("model.format", "model.weights", "model.chat_template_sha256", "sampling.engine_defaults")


@pytest.fixture
def no_bind(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: socket.socket, *args: Any) -> None:
        raise AssertionError(f"a socket was bound: {args}")

    monkeypatch.setattr(socket.socket, "bind", refuse)
    monkeypatch.setattr(socket.socket, "listen", refuse)


def test_effective_config_equals_what_the_release_recorded(
    engine_ready: None, no_bind: None
) -> None:
    stored = json.loads((DEMO / "manifest.json").read_text(encoding="utf-8"))
    spec = ExperimentSpec.model_validate(stored["spec_source"])
    workload = load_workload(spec.base.workload)
    arms = {a.name: resolve_arm(spec, a) for a in spec.expand()}
    for name, arm in arms.items():
        eff, argv = effective_config(spec, arm, workload)
        old = stored["arms"][name]
        assert [k for k in eff if k not in ADDED] == list(old["effective"])
        assert {k: v for k, v in eff.items() if k not in (*LOCAL, *ADDED)} == {
            k: v for k, v in old["effective"].items() if k not in LOCAL
        }
        assert eff["model.format"] == "gguf" and eff["model.weights"] == "Q4_1"
        assert (
            eff["sampling.engine_defaults"] == "top-k=40 top-p=0.95 min-p=0.05 repeat-penalty=1.00"
        )
        here = {old["effective"][k]: eff[k] for k in ("engine.binary", "model.path")}
        assert eff["llama.model"] == eff["model.path"]
        assert old["effective"]["llama.model"] == old["effective"]["model.path"]
        assert argv == [here.get(a, a) for a in old["argv"]]
    assert canonical_names(("-lv", "cram", "spec_type"), arms) == (
        "llama.verbosity", "llama.cache-ram", "spec_type"
    )  # fmt: skip
