"""Append-only JSONL: every row written and flushed the moment it exists; tolerant reading.

Owns ``requests.jsonl`` I/O. The writer flushes after each line so a crash or ``kill -9`` of
servelab loses nothing already recorded; the reader accepts a torn final line (the one write a
hard kill can interrupt) and reports it instead of failing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from servelab.errors import StoreError


class JsonlWriter:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._fh: IO[str] = path.open("a", encoding="utf-8")
        except OSError as exc:
            raise StoreError(f"cannot open {path} for appending: {exc.strerror}") from exc
        self._repair_torn_tail()

    def _repair_torn_tail(self) -> None:
        """Start on a fresh line if a previous writer was killed mid-line."""
        size = self.path.stat().st_size
        if size == 0:
            return
        with self.path.open("rb") as fh:
            fh.seek(size - 1)
            if fh.read(1) != b"\n":
                self._fh.write("\n")
                self._fh.flush()

    def write(self, row: dict[str, Any]) -> None:
        line = json.dumps(row, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        try:
            self._fh.write(line + "\n")
            self._fh.flush()
        except OSError as exc:
            raise StoreError(f"cannot write to {self.path}: {exc.strerror}") from exc

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class JsonlRead:
    rows: list[dict[str, Any]]
    bad_lines: list[int] = field(default_factory=list)  # 1-based numbers of unreadable lines


def iter_lines(path: Path) -> Iterator[tuple[int, str]]:
    with path.open(encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, start=1):
            if line.strip():
                yield number, line


def read_jsonl(path: Path) -> JsonlRead:
    """All rows of ``path``; unreadable lines are skipped and their numbers reported."""
    if not path.exists():
        raise StoreError(f"{path} does not exist; is this a servelab run directory?")
    result = JsonlRead(rows=[])
    for number, line in iter_lines(path):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            result.bad_lines.append(number)
            continue
        if isinstance(row, dict):
            result.rows.append(row)
        else:
            result.bad_lines.append(number)
    return result


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temporary file beside ``path`` and rename it into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", "utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise StoreError(f"cannot write {path}: {exc.strerror}") from exc


def write_text_atomic(path: Path, text: str) -> None:
    """Write text to a temporary file beside ``path`` and rename it into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise StoreError(f"cannot write {path}: {exc.strerror}") from exc
