"""Shared pieces for the run-loop tests: a spec over the replay engine and a seam around it.

The replay engine (``servelab.engines.replay``) serves the recorded llama-server streams in
``tests/fixtures/streams`` through the real client; its ``ReplayLab`` holds the fake clock the
run measures with, so every figure, and so every verdict, is fixed by the recordings and the
script. Preflight is a ``ScriptedPreflight``: no machine lock, no look at this shared machine's
CPU or processes, so these tests cannot be made flaky by what else runs here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from servelab.engines.replay import ReplayLab
from servelab.runner.lifecycle import Finding, ScriptedPreflight, Seam, Stage
from servelab.store.jsonl import read_jsonl

STREAMS = Path(__file__).resolve().parents[1] / "fixtures" / "streams"


def spec_text(
    *,
    arms: str = 'a: {}\n  b: {flags: ["--speed", "2"]}',
    declare: str = "[replay.speed]",
    extra: str = "",
) -> str:
    return f"""\
name: replay-test
hardware: none
base:
  engine: {{kind: replay, model: "{STREAMS}"}}
  workload: structured
  max_tokens: 16
arms:
  {arms}
declare: {declare}
blocks: 2
requests_per_block: 2
warmup: 1
{extra}"""


def write_spec(tmp_path: Path, **kw: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(spec_text(**kw), encoding="utf-8")
    return path


def make_seam(
    lab: ReplayLab,
    *,
    on_stage: Callable[[Stage], None] | None = None,
    findings: tuple[Finding, ...] = (),
) -> Seam:
    return Seam(
        engine_factory=lab.create_engine,
        clock=lab.clock,
        preflight=ScriptedPreflight(findings),
        on_stage=on_stage or (lambda stage: None),
    )


def interrupt_at(stage: Stage, nth: int = 1, exc: type[BaseException] = KeyboardInterrupt
                 ) -> Callable[[Stage], None]:  # fmt: skip
    """An observer that raises ``exc`` the ``nth`` time ``stage`` begins."""
    seen = [0]

    def observe(s: Stage) -> None:
        if s is stage:
            seen[0] += 1
            if seen[0] == nth:
                raise exc

    return observe


def manifest(run: Path) -> dict[str, object]:
    data = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def trial_ids(run: Path) -> list[str]:
    path = run / "requests.jsonl"
    rows = read_jsonl(path).rows if path.exists() else []
    return [str(r["request_id"]) for r in rows if r["phase"] == "trial"]


def planned_ids(run: Path, per_block: int = 2) -> set[str]:
    plan = manifest(run)["plan"]
    assert isinstance(plan, list)
    return {
        f"b{p['block']}/{p['arm']}/c{p['concurrency']}/{i}" for p in plan for i in range(per_block)
    }
