"""Reading a run directory as one typed record, and writing its manifest.

Owns ``read_run`` (the manifest, upgraded to the current format, and the request rows held as
columns: ``store.columns``, so a million rows fit in memory), ``read_manifest`` and
``write_manifest``. The one place a ``manifest.json`` is parsed or written; every error is one
line that names the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from servelab.store.columns import read_row_table
from servelab.store.jsonl import write_json_atomic
from servelab.store.manifest import Manifest
from servelab.store.rundir import RunDir, read_manifest_json

Row = Mapping[str, Any]  # one request row, read-only (a ``columns.TableRow``)


@dataclass(frozen=True, slots=True)
class Run:
    """A run directory as read: its manifest, its rows (file order) and unreadable lines."""

    dir: RunDir
    manifest: Manifest
    rows: list[Row] = field(default_factory=list)
    bad_lines: list[int] = field(default_factory=list)  # 1-based numbers of unreadable lines


def _as_dir(run: RunDir | Path) -> RunDir:
    return run if isinstance(run, RunDir) else RunDir(run)


def read_manifest(run: RunDir | Path) -> Manifest:
    """The run's manifest in the current format (older versions upgraded in memory)."""
    run = _as_dir(run)
    return Manifest.from_json(read_manifest_json(run), str(run.manifest))


def write_manifest(run: RunDir | Path, manifest: Manifest) -> None:
    """Write ``manifest.json`` atomically (a crash leaves the previous one whole)."""
    write_json_atomic(_as_dir(run).manifest, manifest.to_json())


def read_run(root: RunDir | Path) -> Run:
    """The run directory at ``root``: manifest and rows (none before the first request)."""
    run = _as_dir(root)
    manifest = read_manifest(run)
    if not run.requests.exists():
        return Run(run, manifest)
    table = read_row_table(run.requests)
    rows: list[Row] = list(table.rows)
    return Run(run, manifest, rows, table.bad_lines)
