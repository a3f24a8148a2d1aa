"""Selecting and grouping request rows, the same way in every part of the analysis and report.

A row is one line of ``requests.jsonl`` (docs/run-directory.md) read as a read-only mapping
(``servelab.store.read_run`` holds them as columns). Statistics, warnings, theory, gates and
plots all use *trial* rows only (warm-ups never count) and, for latency and throughput, only the
ones whose ``outcome`` is ``ok``; these helpers are that rule, written once. Rows group by
load level (``load_level``: a concurrency, or an open-loop rate). Pure.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from servelab.spec.load import LoadLevel

Row = Mapping[str, Any]


def in_order(rows: Iterable[Row]) -> list[Row]:
    """Rows in plan order (``seq``), so that sums and lists do not depend on file order."""
    return sorted(rows, key=lambda r: int(r.get("seq") or 0))


def block_of(row: Row) -> int:
    return int(row.get("block") or 0)


def level_of(row: Row) -> int:
    """The row's concurrency level (1 when the row does not say)."""
    return int(row.get("concurrency") or 1)


def load_level(row: Row) -> LoadLevel:
    """The row's load level: its open-loop rate (``rate_rps``) or its concurrency."""
    rate = row.get("rate_rps")
    if isinstance(rate, int | float) and not isinstance(rate, bool):
        return LoadLevel(int(row.get("concurrency") or 0), float(rate))
    return LoadLevel(level_of(row))


def trials(rows: Iterable[Row], arm: str | None = None) -> list[Row]:
    """Trial rows (warm-ups excluded), of one arm when ``arm`` is given."""
    return [r for r in rows if r.get("phase") == "trial" and (arm is None or r.get("arm") == arm)]


def ok_trials(rows: Iterable[Row], arm: str | None = None) -> list[Row]:
    """Successful trial rows, of one arm when ``arm`` is given."""
    return [r for r in trials(rows, arm) if r.get("outcome") == "ok"]


def by_arm(rows: Iterable[Row]) -> dict[str, list[Row]]:
    out: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        out[str(row.get("arm"))].append(row)
    return out


def cells(rows: Iterable[Row]) -> dict[str, dict[LoadLevel, dict[int, list[Row]]]]:
    """ok trial rows as ``{arm: {load level: {block: rows}}}``."""
    out: dict[str, dict[LoadLevel, dict[int, list[Row]]]] = {}
    for row in ok_trials(rows):
        arm = out.setdefault(str(row.get("arm")), {})
        arm.setdefault(load_level(row), {}).setdefault(block_of(row), []).append(row)
    return out


def positive(rows: Iterable[Row], metric: str) -> list[float]:
    """The metric's finite, positive values (a missing or zero figure is not a measurement)."""
    values = (r.get(metric) for r in rows)
    return [
        float(v)
        for v in values
        if isinstance(v, int | float) and not isinstance(v, bool) and 0 < v < float("inf")
    ]


def blocks_of(cell: Mapping[int, list[Row]], metric: str) -> dict[int, list[float]]:
    """``{block: values}`` of one arm and level, blocks without a value left out."""
    values = {b: positive(rows, metric) for b, rows in cell.items()}
    return {b: v for b, v in sorted(values.items()) if v}


def n_rounds(rows: Sequence[Row]) -> int:
    blocks = [block_of(r) for r in trials(rows)]
    return max(blocks) + 1 if blocks else 0
