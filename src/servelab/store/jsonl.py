"""Append-only JSONL: every row written and flushed the moment it exists; tolerant reading.

Owns ``requests.jsonl`` I/O. The writer flushes after each line so a crash or ``kill -9`` of
servelab loses nothing already recorded; the reader accepts a torn final line (the one write a
hard kill can interrupt) and reports it instead of failing. Every writer here redacts registered
secrets (``servelab.redact``) before the bytes reach the disk.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from servelab.errors import StoreError
from servelab.redact import redact, redact_data
from servelab.store.request_row import RequestRow


class JsonlWriter:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._fh: IO[str] = path.open("a", encoding="utf-8")
        except OSError as exc:
            raise StoreError(f"cannot open {path} for appending: {exc.strerror}") from exc
        try:
            self._repair_torn_tail()
        except OSError as exc:
            self._close_quietly()
            raise StoreError(f"cannot write to {path}: {exc.strerror}") from exc

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

    def write(self, row: RequestRow | Mapping[str, object]) -> None:
        data = row.to_json() if isinstance(row, RequestRow) else row
        line = json.dumps(
            redact_data(data), ensure_ascii=False, separators=(",", ":"), allow_nan=False
        )
        try:
            self._fh.write(line + "\n")
            self._fh.flush()
        except OSError as exc:
            raise StoreError(f"cannot write to {self.path}: {exc.strerror}") from exc

    def close(self) -> None:
        """Flush, sync and close; a failure is a ``StoreError`` naming the file (the file is
        closed either way, so no second error follows at exit)."""
        if self._fh.closed:
            return
        try:
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except OSError as exc:
            self._close_quietly()
            raise StoreError(f"cannot write to {self.path}: {exc.strerror}") from exc
        self._close_quietly()

    def _close_quietly(self) -> None:
        """Close even when the buffer cannot be flushed: what it held is already reported
        (``write`` raised) or being reported by the caller."""
        try:
            self._fh.close()
        except OSError:
            with contextlib.suppress(OSError):
                self._fh.close()  # the first close flushed and failed; this one releases it

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc is None:
            self.close()
        else:  # the error already propagating names what went wrong; do not mask it
            with contextlib.suppress(StoreError):
                self.close()


@dataclass
class JsonlRead:
    rows: list[dict[str, Any]]  # JSON boundary: each line as parsed (any row version)
    bad_lines: list[int] = field(default_factory=list)  # 1-based numbers of unreadable lines


def iter_lines(path: Path) -> Iterator[tuple[int, str]]:
    try:
        with path.open(encoding="utf-8", errors="replace") as fh:
            for number, line in enumerate(fh, start=1):
                if line.strip():
                    yield number, line
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror}") from exc


# JSON boundary: rows of every version, as parsed; RequestRow is what this servelab writes.
def iter_rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | None]]:
    """``(line number, row)`` for each non-blank line of ``path``; the row is None where the line
    is not a JSON object (a torn last line after a crash)."""
    if not path.exists():
        raise StoreError(f"{path} does not exist; is this a servelab run directory?")
    for number, line in iter_lines(path):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        yield number, row if isinstance(row, dict) else None


def read_jsonl(path: Path) -> JsonlRead:
    """All rows of ``path``; unreadable lines are skipped and their numbers reported."""
    result = JsonlRead(rows=[])
    for number, row in iter_rows(path):
        if row is None:
            result.bad_lines.append(number)
        else:
            result.rows.append(row)
    return result


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temporary file beside ``path`` and rename it into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        text = json.dumps(redact_data(data), indent=2, ensure_ascii=False, default=str)
        tmp.write_text(text + "\n", "utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise StoreError(f"cannot write {path}: {exc.strerror}") from exc


def write_text_atomic(path: Path, text: str) -> None:
    """Write text to a temporary file beside ``path`` and rename it into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(redact(text), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise StoreError(f"cannot write {path}: {exc.strerror}") from exc
