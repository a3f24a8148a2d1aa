"""``verify`` checks readiness first: it refuses while another run really holds the machine lock
(fcntl, in this process), runs anyway with ``force`` and records what it went past in the bench
run, and holds the lock itself while it measures. The run is the replay engine's."""

from __future__ import annotations

import fcntl
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from servelab.engines.replay import ReplayLab
from servelab.errors import EnvironmentProblem
from servelab.runner.experiment import run_experiment
from servelab.runner.lifecycle import Finding, PreflightCheck
from servelab.runner.preflight import MachineLock
from servelab.runner.promote import promote, verify
from tests.unit.replay_harness import make_seam, write_spec


def _promoted(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run_experiment(write_spec(tmp_path), run, seam=make_seam(ReplayLab()))
    registry = tmp_path / "roles.yaml"
    registry.write_text("roles:\n  quick: {rules: ['decode_tps >= 0.001']}\n", encoding="utf-8")
    promote(run, "b", "quick", registry=registry)
    return registry


def test_verify_refuses_while_the_machine_is_locked_unless_forced(tmp_path: Path) -> None:
    registry = _promoted(tmp_path)
    lock_path = tmp_path / "machine.lock"
    with lock_path.open("a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write(json.dumps({"pid": 4242, "run_dir": "/runs/other"}))
        held.flush()
        with pytest.raises(EnvironmentProblem) as refused:
            verify(registry, "quick", requests=2, warmup=0, out=tmp_path / "v1",
                   seam=make_seam(ReplayLab()), lock=MachineLock(lock_path))  # fmt: skip
        message = str(refused.value)
        assert "role 'quick' is not ready to verify" in message and "pid 4242" in message
        assert "--force" in message and "\n" not in message
        assert not (tmp_path / "v1").exists()  # nothing ran
        done = verify(registry, "quick", requests=2, warmup=0, out=tmp_path / "v2",
                      seam=make_seam(ReplayLab()), lock=MachineLock(lock_path),
                      force=True)  # fmt: skip
    assert done.readiness is not None and not done.readiness.ready
    manifest = json.loads((done.bench_dir / "manifest.json").read_text(encoding="utf-8"))
    (recorded,) = [f for f in manifest["preflight"] if f["kind"] == "machine_lock"]
    assert recorded["blocking"] and "pid 4242, run /runs/other" in recorded["detail"]


class _LockProbe:
    """The bench's preflight, asked while verify runs: is the machine lock taken then?"""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.taken: bool | None = None

    def check(self, request: PreflightCheck) -> tuple[list[Finding], Callable[[], None]]:
        with self.path.open("a+") as probe:
            try:
                fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(probe, fcntl.LOCK_UN)
                self.taken = False
            except BlockingIOError:
                self.taken = True
        return [], lambda: None


def test_verify_holds_the_machine_lock_while_it_measures(tmp_path: Path) -> None:
    registry = _promoted(tmp_path)
    lock_path = tmp_path / "machine.lock"
    probe = _LockProbe(lock_path)
    seam = replace(make_seam(ReplayLab()), preflight=probe)
    done = verify(registry, "quick", requests=2, warmup=0, out=tmp_path / "v",
                  seam=seam, lock=MachineLock(lock_path))  # fmt: skip
    assert probe.taken is True and done.readiness is not None and done.readiness.ready
    assert json.loads(lock_path.read_text())["run_dir"] == str((tmp_path / "v").absolute())
    with lock_path.open("a+") as after:  # released when verify returned
        fcntl.flock(after, fcntl.LOCK_EX | fcntl.LOCK_NB)
