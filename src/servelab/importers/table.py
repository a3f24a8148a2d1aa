"""Generic per-request rows: a JSON list (or a list at a key path), JSONL or CSV, plus a mapping.

Owns reading such files into source rows and turning each into a partial servelab row through
``FieldMap`` entries (with unit conversion). The arm comes from a column (``arm_column``) or from
the file (``FILE=ARM``, else the file stem). A value that cannot become its field skips that row,
counted with its reason; a mapped column that no row has is a one-line ``UsageError``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from servelab.errors import UsageError
from servelab.importers.common import (
    OUTCOMES,
    BadValue,
    FieldMap,
    Imported,
    SourceSpec,
    classify_error,
    is_missing,
    lookup,
    require_columns,
    to_number,
    tool_calls_of,
)


@dataclass(frozen=True, slots=True)
class TableOptions:
    maps: tuple[FieldMap, ...]
    arm_column: str | None = None
    rows_key: str | None = None
    n_out_source: str = "source"  # "usage" when a preset knows n_out is the server's count


@dataclass(frozen=True, slots=True)
class SourceRow:
    values: dict[str, Any]
    where: dict[str, Any]  # {"file", "line"} or {"file", "index"}


def read_csv(path: Path) -> list[SourceRow]:
    # newline="" lets the csv module handle CRLF files (the reference CSVs keep CRLF).
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        rows = []
        for values in reader:
            rows.append(SourceRow(dict(values), {"file": str(path), "line": reader.line_num}))
    return rows


def read_jsonl(path: Path) -> list[SourceRow]:
    rows = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UsageError(
                    f"{path}:{number}: not JSON ({exc.msg}); fix or drop that line"
                ) from exc
            if not isinstance(value, dict):
                raise UsageError(f"{path}:{number}: expected a JSON object per line")
            rows.append(SourceRow(value, {"file": str(path), "line": number}))
    return rows


def load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc


def find_rows(doc: Any, rows_key: str | None, path: Path) -> tuple[list[Any], str | None]:
    """The list of row objects in ``doc``: itself, the list at ``rows_key``, or the only one."""
    if isinstance(doc, list):
        return doc, None
    if not isinstance(doc, dict):
        raise UsageError(f"{path}: expected a JSON list or object of rows")
    if rows_key:
        found = lookup(doc, rows_key)
        if is_missing(found) or not isinstance(found, list):
            keys = ", ".join(_list_keys(doc)) or "(none)"
            raise UsageError(f"--rows-key {rows_key!r}: no list there in {path}; lists at: {keys}")
        return found, rows_key
    candidates = _list_keys(doc)
    if len(candidates) != 1:
        keys = ", ".join(candidates) or "(none)"
        raise UsageError(f"{path}: which list holds the rows? give --rows-key (lists at: {keys})")
    return lookup(doc, candidates[0]), candidates[0]


def _list_keys(doc: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key, value in doc.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            out.append(prefix + key)
        elif isinstance(value, dict) and not prefix:
            out.extend(_list_keys(value, f"{key}."))
    return out


def read_rows(path: Path, rows_key: str | None) -> tuple[list[SourceRow], dict[str, Any]]:
    """Source rows of one file and the file's other top-level values (its metadata)."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return read_csv(path), {}
    if suffix in (".jsonl", ".ndjson"):
        return read_jsonl(path), {}
    doc = load_json(path)
    items, key = find_rows(doc, rows_key, path)
    rows = []
    for index, value in enumerate(items):
        if not isinstance(value, dict):
            raise UsageError(f"{path}: row {index} is not an object; give --rows-key to the rows")
        rows.append(SourceRow(value, {"file": str(path), "index": index}))
    meta = {k: v for k, v in doc.items() if k != key} if isinstance(doc, dict) and key else {}
    if key and "." in key:
        meta = {k: v for k, v in doc.items() if k != key.split(".")[0]}
    return rows, meta


def stem_arms(specs: Sequence[SourceSpec]) -> list[str]:
    """Arm names from file stems, without the prefix all of them share (``results_``)."""
    stems = [s.path.stem for s in specs]
    if len(stems) > 1:
        common = _common_prefix(stems)
        cut = max(common.rfind(c) for c in "_-.") + 1 if common else 0
        if cut and all(len(s) > cut for s in stems):
            stems = [s[cut:] for s in stems]
    return [s.arm or stem for s, stem in zip(specs, stems, strict=True)]


def _common_prefix(names: list[str]) -> str:
    first, last = min(names), max(names)
    n = 0
    while n < min(len(first), len(last)) and first[n] == last[n]:
        n += 1
    return first[:n]


def _outcome(value: Any) -> str:
    if isinstance(value, bool):
        return "ok" if value else "http_error"
    text = str(value).strip().lower()
    if text in OUTCOMES:
        return text
    if text in ("success", "succeeded", "true", "1", "pass", "passed", "done", "complete"):
        return "ok"
    return "http_error"


def _error_text(value: Any) -> str | None:
    if value is None or value is False or (isinstance(value, str) and not value.strip()):
        return None
    return value if isinstance(value, str) else json.dumps(value)


def convert(fm: FieldMap, value: Any) -> Any:
    """One source value as the field it is mapped to."""
    t = fm.target
    what = f"column {fm.source}"
    if t == "tool_calls":
        return tool_calls_of(value)
    if t == "outcome":
        return None if value is None else _outcome(value)
    if t == "error":
        return _error_text(value)
    if t == "phase":
        if value not in (None, "warmup", "trial"):
            raise BadValue(f"{what}: phase {value!r} is neither warmup nor trial")
        return value
    if t in ("prompt_id", "finish_reason", "text", "reasoning"):
        return None if value is None else str(value)
    if t == "block":
        return value  # ranked later over the whole import
    number = to_number(value, what)
    if number is None:
        return None
    if t in ("concurrency", "http_status"):
        return int(number)
    return number / fm.divisor


def map_row(row: SourceRow, maps: Sequence[FieldMap]) -> dict[str, Any]:
    """Mapped fields of one source row (``BadValue`` if one cannot be converted)."""
    out: dict[str, Any] = {}
    for fm in maps:
        value = lookup(row.values, fm.source)
        if not is_missing(value):
            out[fm.target] = convert(fm, value)
    if out.get("error") and out.get("outcome") in (None, "ok"):
        out["outcome"] = classify_error(out["error"])
    return out


def _used_keys(opts: TableOptions) -> set[str]:
    keys = {fm.source.split(".")[0] for fm in opts.maps if "." in fm.source}
    keys |= {fm.source for fm in opts.maps}
    return keys | ({opts.arm_column} if opts.arm_column else set())


def read_table(specs: Sequence[SourceSpec], opts: TableOptions, result: Imported) -> None:
    """Append the partial rows of every file to ``result``."""
    arms = stem_arms(specs)
    used = _used_keys(opts)
    for spec, file_arm in zip(specs, arms, strict=True):
        rows, meta = read_rows(spec.path, opts.rows_key)
        flags = [
            (fm.source, f"--map {fm.source}={fm.target}") for fm in opts.maps if not fm.optional
        ]
        if opts.arm_column:
            flags.append((opts.arm_column, "--arm-column"))
        require_columns([r.values for r in rows], flags, str(spec.path))
        _read_file(rows, opts, file_arm if not opts.arm_column else None, used, result)
        if meta:
            result.arms.setdefault(file_arm, {})["source_meta"] = meta
    result.mapping.update(
        maps=[fm.as_dict() for fm in opts.maps],
        arm_column=opts.arm_column,
        rows_key=opts.rows_key,
    )
    _rank_blocks(result)


def _read_file(
    rows: list[SourceRow], opts: TableOptions, arm: str | None, used: set[str], result: Imported
) -> None:
    for row in rows:
        try:
            fields = map_row(row, opts.maps)
        except BadValue as exc:
            result.skipped.add(str(exc), row.where)
            continue
        row_arm = arm
        if opts.arm_column:
            value = lookup(row.values, opts.arm_column)
            row_arm = None if is_missing(value) or value in (None, "") else str(value)
            if row_arm is None:
                result.skipped.add(f"column {opts.arm_column}: no arm value", row.where)
                continue
        raw = {k: v for k, v in row.values.items() if k not in used}
        assert row_arm is not None
        result.rows.append(
            {**fields, "arm": row_arm, "source": row.where, "raw": raw}
            | {"n_out_source": opts.n_out_source}
        )


def _rank_blocks(result: Imported) -> None:
    """Blocks from a trial column become 0, 1, ... in the order of its values; else the index."""
    values = [r["block"] for r in result.rows if r.get("block") is not None]
    if values:
        order = sorted(set(values), key=_sort_key)
        rank = {v: i for i, v in enumerate(order)}
        result.mapping["block_values"] = {str(v): i for v, i in rank.items()}
        for row in result.rows:
            row["block"] = rank.get(row.get("block"), 0)
        return
    seen: dict[str, int] = {}
    for row in result.rows:
        row["block"] = seen.get(row["arm"], 0)
        seen[row["arm"]] = row["block"] + 1
    result.mapping["block_values"] = "index of the row within its arm"


def _sort_key(value: Any) -> tuple[int, float, str]:
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(value))
