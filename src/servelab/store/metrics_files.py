"""The counter files under a run's ``metrics/``: what the engine's /metrics said around a block.

Owns their names and layout for both commands (docs/run-directory.md), and is the one writer
of their ``schema_version``:

- an experiment block: ``<arm>-b<block>-c<concurrency>.json`` with ``arm``, ``block``,
  ``concurrency`` and ``counter_deltas`` (after minus before, counters only);
- a bench (a one-arm experiment of one block, whose files keep their documented names):
  ``bench-before.json`` / ``bench-after.json`` with the raw ``samples`` and their ``kinds``,
  and ``bench-deltas.json`` with ``counter_deltas``.

Each file is written atomically. It must not scrape or subtract anything: callers pass figures.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from servelab.store import SCHEMA_VERSION
from servelab.store.jsonl import write_json_atomic
from servelab.store.rundir import RunDir, arm_stem

__all__ = ["write_block_deltas", "write_counter_deltas", "write_counter_snapshot"]


def write_block_deltas(
    run: RunDir, arm: str, block: int, concurrency: int, deltas: Mapping[str, float]
) -> Path:
    """An experiment block's counter deltas."""
    path = run.block_metrics(arm, block, concurrency)
    write_json_atomic(path, {
        "schema_version": SCHEMA_VERSION, "arm": arm, "block": block,
        "concurrency": concurrency, "counter_deltas": dict(deltas),
    })  # fmt: skip
    return path


def write_counter_snapshot(
    run: RunDir, arm: str, label: str, samples: Mapping[str, float], kinds: Mapping[str, str]
) -> Path:
    """One raw /metrics snapshot (``label``: ``before`` or ``after``)."""
    path = run.metrics_dir / f"{arm_stem(arm)}-{label}.json"
    write_json_atomic(path, {
        "schema_version": SCHEMA_VERSION, "samples": dict(samples), "kinds": dict(kinds),
    })  # fmt: skip
    return path


def write_counter_deltas(run: RunDir, arm: str, deltas: Mapping[str, float]) -> Path:
    """The counter deltas of a run's one block, beside its snapshots."""
    path = run.metrics_dir / f"{arm_stem(arm)}-deltas.json"
    write_json_atomic(path, {"schema_version": SCHEMA_VERSION, "counter_deltas": dict(deltas)})
    return path
