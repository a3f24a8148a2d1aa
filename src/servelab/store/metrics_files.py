"""The counter files under a run's ``metrics/``: what the engine's /metrics said around a block.

Owns their names and layout for both commands (docs/run-directory.md), and is the one writer
of their ``schema_version``:

- an experiment block: ``<arm>-b<block>-c<concurrency>.json`` with ``arm``, ``block``,
  ``concurrency`` and ``counter_deltas`` (after minus before, counters only); an open-loop
  block ``<arm>-b<block>-c<cap>-r<rate>.json`` with ``rate_rps`` too;
- a bench (a one-arm experiment of one block, whose files keep their documented names):
  ``bench-before.json`` / ``bench-after.json`` with the raw ``samples`` and their ``kinds``,
  and ``bench-deltas.json`` with ``counter_deltas``;
- every block of both (issue 13): ``client/<arm>-b<block>-<level>.json`` with ``arm``,
  ``block``, ``level`` (``c4``: closed loop at 4 in flight; ``r2``: open loop at 2 req/s) and
  ``client`` (``records.ClientLoad``: what driving the block cost the client itself);
- every block of both (issue 14): ``cache/<arm>-b<block>-<level>.json`` with ``arm``,
  ``block``, ``level``, ``restarted`` (the engine was started for this block) and ``emptied``
  (how the prefix cache was empty when the block's measured requests began).

Each file is written atomically. It must not scrape or subtract anything: callers pass figures.
Readers (``read_block_deltas``, ``read_client_loads``, ``read_block_caches``) skip a file they
cannot read: the figures are advisory, and a run written before a file existed has none.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from servelab.errors import StoreError
from servelab.records import ClientLoad
from servelab.store import SCHEMA_VERSION
from servelab.store.jsonl import write_json_atomic
from servelab.store.rundir import RunDir, arm_stem

__all__ = [
    "BlockCache",
    "BlockClientLoad",
    "BlockDeltas",
    "read_block_caches",
    "read_block_deltas",
    "read_client_loads",
    "write_block_cache",
    "write_block_deltas",
    "write_client_load",
    "write_counter_deltas",
    "write_counter_snapshot",
]
CLIENT_DIR = "client"  # under metrics/: apart from the counter files and their globs
CACHE_DIR = "cache"  # under metrics/: how each block's prefix cache was emptied


def write_block_deltas(
    run: RunDir, arm: str, block: int, concurrency: int, deltas: Mapping[str, float],
    rate_rps: float | None = None,
) -> Path:  # fmt: skip
    """An experiment block's counter deltas (an open-loop block's name ends ``-r<rate>``)."""
    path = run.block_metrics(arm, block, concurrency)
    level: dict[str, object] = {"concurrency": concurrency}
    if rate_rps is not None:
        path = path.with_name(f"{path.stem}-r{rate_rps:g}.json")
        level["rate_rps"] = rate_rps
    write_json_atomic(path, {
        "schema_version": SCHEMA_VERSION, "arm": arm, "block": block, **level,
        "counter_deltas": dict(deltas),
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


@dataclass(frozen=True, slots=True)
class BlockClientLoad:
    """One block's client load as stored: where in the plan, and the figures."""

    arm: str
    block: int
    level: str  # "c4" (closed loop, 4 in flight) or "r2" (open loop, 2 req/s); "" unknown
    load: ClientLoad


def _block_file(run: RunDir, subdir: str, arm: str, block: int, level: str) -> Path:
    """``metrics/<subdir>/<arm>-b<block>[-<level>].json``, its folder created."""
    folder = run.metrics_dir / subdir
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create {folder}: {exc.strerror}") from exc
    tag = f"-{level}" if level else ""
    return folder / f"{arm_stem(arm)}-b{block}{tag}.json"


def write_client_load(run: RunDir, arm: str, block: int, load: ClientLoad, level: str = "") -> Path:
    """What driving one block cost the client (``records.ClientLoad``)."""
    path = _block_file(run, CLIENT_DIR, arm, block, level)
    write_json_atomic(path, {
        "schema_version": SCHEMA_VERSION, "arm": arm, "block": block, "level": level,
        "client": load.to_json(),
    })  # fmt: skip
    return path


def read_client_loads(run: RunDir) -> list[BlockClientLoad]:
    """Every block's client load, in (arm, block, level) order; unreadable files are skipped
    (the figures are advisory: a torn file must not stop a report)."""
    folder = run.metrics_dir / CLIENT_DIR
    if not folder.is_dir():
        return []
    out: list[BlockClientLoad] = []
    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            out.append(BlockClientLoad(
                str(data["arm"]), int(data["block"]), str(data.get("level") or ""),
                ClientLoad.from_json(data["client"]),
            ))  # fmt: skip
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return sorted(out, key=lambda c: (c.arm, c.block, c.level))


@dataclass(frozen=True, slots=True)
class BlockDeltas:
    """One block's counter deltas as stored (a bench's run-level deltas: block 0)."""

    arm: str
    block: int
    level: str  # "c4" / "r2"; "" when the file does not say (a bench)
    deltas: dict[str, float]


def _json_object(path: Path) -> dict[str, object] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _level(data: Mapping[str, object]) -> str:
    rate, concurrency = data.get("rate_rps"), data.get("concurrency")
    if isinstance(rate, int | float) and not isinstance(rate, bool):
        return f"r{rate:g}"
    return f"c{concurrency}" if isinstance(concurrency, int) else ""


def _numbers(value: object) -> dict[str, float] | None:
    if not isinstance(value, dict):
        return None
    return {
        str(k): float(v) for k, v in value.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }  # fmt: skip


def read_block_deltas(run: RunDir, arm: str) -> list[BlockDeltas]:
    """The counter deltas of each of ``arm``'s blocks, in (block, level) order: the
    experiment's block files, else (a bench) the run-level ``<arm>-deltas.json`` as block 0."""
    out: list[BlockDeltas] = []
    for path in run.arm_block_metrics(arm):
        data = _json_object(path)
        deltas = _numbers(data.get("counter_deltas")) if data else None
        if data is None or deltas is None or data.get("arm", arm) != arm:
            continue
        block = data.get("block")
        out.append(BlockDeltas(arm, block if isinstance(block, int) else 0, _level(data), deltas))
    if not out:
        data = _json_object(run.metrics_dir / f"{arm_stem(arm)}-deltas.json")
        deltas = _numbers(data.get("counter_deltas")) if data else None
        if deltas is not None:
            out.append(BlockDeltas(arm, 0, "", deltas))
    return sorted(out, key=lambda d: (d.block, d.level))


@dataclass(frozen=True, slots=True)
class BlockCache:
    """How one block's prefix cache was emptied before its measured requests."""

    arm: str
    block: int
    level: str
    restarted: bool  # the engine was started for this block (its warm-up ran after the start)
    emptied: str  # "restart", the engine's reset ("POST /reset_prefix_cache"), "caching off"


def write_block_cache(
    run: RunDir, arm: str, block: int, level: str, *, restarted: bool, emptied: str
) -> Path:
    """How the block's prefix cache was emptied (``runner.lifecycle.BlockExecutor``)."""
    path = _block_file(run, CACHE_DIR, arm, block, level)
    write_json_atomic(path, {
        "schema_version": SCHEMA_VERSION, "arm": arm, "block": block, "level": level,
        "restarted": restarted, "emptied": emptied,
    })  # fmt: skip
    return path


def read_block_caches(run: RunDir) -> list[BlockCache]:
    """Every block's cache record, in (arm, block, level) order; none for a run written
    before issue 14, and unreadable files are skipped."""
    folder = run.metrics_dir / CACHE_DIR
    out: list[BlockCache] = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else ():
        data = _json_object(path)
        block = data.get("block") if data else None
        if data is None or not isinstance(block, int) or "arm" not in data:
            continue
        out.append(BlockCache(
            str(data["arm"]), block, str(data.get("level") or ""),
            bool(data.get("restarted")), str(data.get("emptied") or ""),
        ))  # fmt: skip
    return sorted(out, key=lambda c: (c.arm, c.block, c.level))
