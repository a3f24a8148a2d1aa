"""``requests.jsonl`` read into compact columns, for reports over runs of a million rows.

Owns ``read_row_table``: each line is parsed and split at once into one column per field, so
no row stays a dict. Numbers live in typed arrays (8 bytes a row), text in a table of distinct
strings with a 4-byte code per row, lists and objects as their compact JSON text (empty ones
as a code only). ``RowTable.rows`` gives one read-only ``TableRow`` mapping per line that looks
its values up in the columns: ``row.get(field)`` returns what ``json.loads`` of the line would
have held (same value, same type; a missing key stays missing), so every reader written for
plain row dicts gives the same figures. Reads files; writes nothing.
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from servelab.store.jsonl import iter_rows

_ABSENT: Any = object()  # the row has no such key (rows of older versions)
_INT_NONE = -(2**63)  # an int column's null
_NO_CODE = -1  # a coded column's null
_EMPTY_LIST, _EMPTY_DICT = -2, -3  # JSON columns: [] and {} need no text
_SHARED_JSON = 24  # JSON texts this short are stored once per distinct text


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "json"
    if isinstance(value, int):
        return "int" if _INT_NONE < value < 2**63 else "json"
    if isinstance(value, float):
        return "float"
    return "str" if isinstance(value, str) else "json"


class Column:
    """One field over every row. The first non-null value sets the kind (int, float, str or
    json); a value of another kind, or a NaN in a float column, is kept aside by row index."""

    __slots__ = ("absent", "codes", "data", "kind", "n", "other", "pending", "read", "texts")

    def __init__(self) -> None:
        self.kind: str | None = None
        self.data: array[Any] = array("b")
        self.texts: list[str] = []
        self.codes: dict[str, int] = {}
        self.other: dict[int, Any] = {}
        self.absent: set[int] = set()
        self.n = 0
        self.pending = 0  # nulls before the kind was known
        self.read: Callable[[int], Any] = self.get

    def extend(self, values: list[Any]) -> None:
        """Append many values; those of the column's kind go in at C speed."""
        if not values:
            return
        if self.kind is None:
            first = next((v for v in values if v is not None and v is not _ABSENT), None)
            if first is not None:
                self._start(_kind(first))
        kind = self.kind
        pytype = _PYTYPE.get(kind or "")
        if pytype is not None and all(type(v) is pytype for v in values):
            if kind == "str":
                codes = self.codes
                self.data.extend([codes[v] if v in codes else self._code(v) for v in values])
                self.n += len(values)
                return
            fits = min(values) > _INT_NONE and max(values) < 2**63 if kind == "int" else True
            if fits and (kind == "int" or all(v == v for v in values)):
                self.data.extend(values)
                self.n += len(values)
                return
        for value in values:
            self.append(value)

    def freeze(self) -> None:
        """Choose the fastest reader for what the column holds (after the last append)."""
        if self.absent or self.other or self.kind not in ("float", "int", "str"):
            self.read = self.get
            return
        data, texts = self.data, self.texts
        if self.kind == "float":
            self.read = lambda i: None if (v := data[i]) != v else v
        elif self.kind == "int":
            self.read = lambda i: None if (v := data[i]) == _INT_NONE else v
        else:
            self.read = lambda i: None if (v := data[i]) < 0 else texts[v]

    def append(self, value: Any) -> None:
        i = self.n
        self.n += 1
        if value is _ABSENT:
            self.absent.add(i)
            value = None
        if value is None:
            self._null()
            return
        kind = _kind(value)
        if self.kind is None:
            self._start(kind)
        if kind != self.kind or value != value:  # NaN: null is already the float column's NaN
            self._null()
            self.other[i] = value
        elif kind in ("int", "float"):
            self.data.append(value)
        elif kind == "str":
            self.data.append(self._code(value))
        elif isinstance(value, list | dict) and not value:
            self.data.append(_EMPTY_LIST if isinstance(value, list) else _EMPTY_DICT)
        else:
            text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
            if len(text) <= _SHARED_JSON:  # true, [1], {"a":1}: common, so stored once
                self.data.append(self._code(text))
            else:
                self.texts.append(text)
                self.data.append(len(self.texts) - 1)

    def _code(self, text: str) -> int:
        code = self.codes.get(text)
        if code is None:
            code = self.codes[text] = len(self.texts)
            self.texts.append(text)
        return code

    def _null(self) -> None:
        if self.kind is None:
            self.pending += 1
        else:
            self.data.append(_NULL[self.kind])

    def _start(self, kind: str) -> None:
        self.kind = kind
        self.data = array(_TYPECODE[kind], [_NULL[kind]]) * self.pending

    def get(self, i: int) -> Any:
        """The value of row ``i``: None for null, ``_ABSENT`` when the row lacks the key."""
        if self.absent and i in self.absent:
            return _ABSENT
        if self.other and i in self.other:
            return self.other[i]
        kind = self.kind
        if kind is None:
            return None
        v = self.data[i]
        if kind == "float":
            return None if v != v else v
        if kind == "int":
            return None if v == _INT_NONE else v
        if v < 0:
            return None if v == _NO_CODE else [] if v == _EMPTY_LIST else {}
        return self.texts[v] if kind == "str" else json.loads(self.texts[v])


_TYPECODE = {"int": "q", "float": "d", "str": "i", "json": "i"}
_PYTYPE: dict[str, type] = {"int": int, "float": float, "str": str}
_NULL: dict[str, int | float] = {
    "int": _INT_NONE,
    "float": float("nan"),
    "str": _NO_CODE,
    "json": _NO_CODE,
}


class TableRow(Mapping[str, Any]):
    """One row of a ``RowTable``: a read-only mapping over its columns."""

    __slots__ = ("_columns", "_i")

    def __init__(self, columns: dict[str, Column], i: int) -> None:
        self._columns = columns
        self._i = i

    def get(self, key: str, default: Any = None) -> Any:
        column = self._columns.get(key)
        if column is None:
            return default
        value = column.read(self._i)
        return default if value is _ABSENT else value

    def __getitem__(self, key: str) -> Any:
        value = self.get(key, _ABSENT)
        if value is _ABSENT:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key, _ABSENT) is not _ABSENT

    def __iter__(self) -> Iterator[str]:
        return (k for k, c in self._columns.items() if c.get(self._i) is not _ABSENT)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, TableRow) and other._columns is self._columns:
            return other._i == self._i
        return Mapping.__eq__(self, other)

    def __hash__(self) -> int:
        return hash((id(self._columns), self._i))

    def __repr__(self) -> str:
        return f"TableRow({dict(self)!r})"


_CHUNK = 4096  # rows gathered per column before they are packed


@dataclass
class RowTable:
    """Every readable line of a ``requests.jsonl``, column by column."""

    columns: dict[str, Column] = field(default_factory=dict)
    n_rows: int = 0
    bad_lines: list[int] = field(default_factory=list)  # 1-based numbers of unreadable lines
    _rows: list[TableRow] | None = None
    _keys: tuple[str, ...] = ()  # the keys of the last row, in order
    _pending: dict[str, list[Any]] = field(default_factory=dict)  # values not yet packed

    def append(self, row: Mapping[str, Any]) -> None:
        keys = tuple(row)
        pending = self._pending
        if keys == self._keys and len(pending) == len(keys):  # the usual case: same keys
            for values, value in zip(pending.values(), row.values(), strict=True):
                values.append(value)
        else:
            pending = self._new_keys(keys)
            for key, values in pending.items():
                values.append(row.get(key, _ABSENT))
        self.n_rows += 1
        self._rows = None
        if len(next(iter(pending.values()), ())) >= _CHUNK:
            self._pack()

    def _new_keys(self, keys: tuple[str, ...]) -> dict[str, list[Any]]:
        self._pack()
        for key in keys:
            if key not in self.columns:
                column = self.columns[key] = Column()
                column.extend([_ABSENT] * self.n_rows)
        # Pending lists in the row's key order first, so the fast path can zip them.
        order = [*keys, *(k for k in self.columns if k not in keys)]
        self._pending = {key: [] for key in order}
        self._keys = keys
        return self._pending

    def _pack(self) -> None:
        for key, values in self._pending.items():
            if values:
                self.columns[key].extend(values)
                values.clear()

    def finish(self) -> RowTable:
        """Pack what is pending and pick each column's reader; call after the last append."""
        self._pack()
        for column in self.columns.values():
            column.freeze()
        return self

    @property
    def rows(self) -> list[TableRow]:
        """One ``TableRow`` per row, in file order: the same objects on every call, so rows
        can be told apart by identity as dicts can."""
        self._pack()
        if self._rows is None or len(self._rows) != self.n_rows:
            self._rows = [TableRow(self.columns, i) for i in range(self.n_rows)]
        return list(self._rows)


def read_row_table(path: Path) -> RowTable:
    """All rows of ``path`` as columns; unreadable lines are skipped and their numbers kept."""
    table = RowTable()
    for number, row in iter_rows(path):
        if row is None:
            table.bad_lines.append(number)
        else:
            table.append(row)
    return table.finish()
