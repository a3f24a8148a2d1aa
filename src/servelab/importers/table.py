"""Generic per-request rows: a JSON list (or a list at a key path), JSONL or CSV, plus a mapping.

Owns reading such files into source rows and turning each into a partial servelab row through
``FieldMap`` entries (with unit conversion). The arm comes from a column (``arm_column``) or from
the file (``FILE=ARM``, else the file stem). CSV and JSONL files are read row by row as the rows
are consumed, so an import of a million rows never holds them all. A value that cannot become
its field, a negative or non-finite metric, an empty required number and a ragged CSV row each
skip that row, counted with its reason; a mapped column the file lacks is a one-line
``UsageError``. Without a mapped ``block`` column, a row's block is its repetition: how many rows
of its arm with the same ``prompt_id`` came before it (one pass through the prompts is block 0),
or, when no column is mapped to ``prompt_id``, the row's index within its arm.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from servelab.errors import UsageError
from servelab.importers.common import (
    CONTEXT_NUMBERS,
    METRIC_NAMES,
    OUTCOMES,
    BadValue,
    FieldMap,
    Imported,
    Partial,
    SourceRef,
    SourceSpec,
    check_values,
    classify_error,
    column_names,
    is_empty,
    is_missing,
    lookup,
    missing_column,
    to_number,
    tool_calls_of,
)
from servelab.store import as_json_object

# Targets whose empty value in a successful row skips the row (unless the map is optional).
NUMBER_TARGETS = frozenset({*METRIC_NAMES, *CONTEXT_NUMBERS, "block"} - {"itl_s"})


@dataclass(frozen=True, slots=True)
class TableOptions:
    maps: tuple[FieldMap, ...]
    arm_column: str | None = None
    rows_key: str | None = None
    n_out_source: str = "source"  # "usage" when a preset knows n_out is the server's count


@dataclass(frozen=True, slots=True)
class SourceRow:
    values: Mapping[str, object]  # JSON boundary: one foreign row (CSV cells or JSON values)
    where: SourceRef  # {"file", "line"} or {"file", "index"}
    ragged: BadValue | None = None  # a CSV row whose cells do not match the header


def _ragged(values: Mapping[str | None, object], n_header: int) -> BadValue | None:
    """csv.DictReader files extra cells under the key None and fills missing ones with None."""
    cells = values.get(None)
    if isinstance(cells, list):
        extra = len(cells)
        return BadValue("long_row", f"{n_header + extra} cells, the header has {n_header}")
    short = sum(1 for v in values.values() if v is None)
    if short:
        return BadValue("short_row", f"{n_header - short} cells, the header has {n_header}")
    return None


def iter_csv(path: Path) -> Iterator[SourceRow]:
    # newline="" lets the csv module handle CRLF files (the reference CSVs keep CRLF).
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        n_header = len(reader.fieldnames or ())
        for values in reader:
            where: SourceRef = {"file": str(path), "line": reader.line_num}
            ragged = _ragged(values, n_header)
            cells = {k: v for k, v in values.items() if isinstance(k, str)} if ragged else values
            yield SourceRow(cells, where, ragged)


def csv_header(path: Path) -> list[str]:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        return next(csv.reader(fh), [])


def iter_jsonl(path: Path) -> Iterator[SourceRow]:
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
            yield SourceRow(value, {"file": str(path), "line": number})


def load_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc


def find_rows(doc: object, rows_key: str | None, path: Path) -> tuple[list[object], str | None]:
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
    found = lookup(doc, candidates[0])
    assert isinstance(found, list)
    return found, candidates[0]


def _list_keys(doc: Mapping[str, object], prefix: str = "") -> list[str]:
    out = []
    for key, value in doc.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            out.append(prefix + key)
        elif isinstance(value, dict) and not prefix:
            out.extend(_list_keys(value, f"{key}."))
    return out


def _json_rows(path: Path, rows_key: str | None) -> tuple[list[SourceRow], dict[str, object]]:
    doc = load_json(path)
    items, key = find_rows(doc, rows_key, path)
    rows = []
    for index, value in enumerate(items):
        if not isinstance(value, dict):
            raise UsageError(f"{path}: row {index} is not an object; give --rows-key to the rows")
        rows.append(SourceRow(value, {"file": str(path), "index": index}))
    meta: dict[str, object] = {}
    if isinstance(doc, dict) and key:  # a list given whole has no metadata
        top = key.split(".")[0]
        meta = {k: v for k, v in doc.items() if k != top}
    return rows, meta


@dataclass
class SourceFile:
    """One input file of rows: CSV and JSONL are streamed on each ``rows()``; a JSON document
    is parsed once (it has to be whole to be parsed at all)."""

    path: Path
    kind: str  # "csv", "jsonl" or "json"
    loaded: list[SourceRow] = field(default_factory=list)
    meta: dict[str, object] = field(default_factory=dict)  # a JSON file's other top-level values

    def rows(self) -> Iterator[SourceRow]:
        if self.kind == "csv":
            return iter_csv(self.path)
        if self.kind == "jsonl":
            return iter_jsonl(self.path)
        return iter(self.loaded)

    def check_columns(self, flags: list[tuple[str, str]]) -> None:
        """Each (column, flag) must be in the CSV header, or in at least one JSON row."""
        if self.kind == "csv":
            header = csv_header(self.path)
            for path, flag in flags:
                if path not in header:
                    raise missing_column(path, flag, str(self.path), header)
            return
        missing = {path: flag for path, flag in flags}
        for row in self.rows():
            for path in [p for p in missing if not is_missing(lookup(row.values, p))]:
                del missing[path]
            if not missing:
                return
        for path, flag in missing.items():
            columns = column_names(r.values for r in self.rows())
            raise missing_column(path, flag, str(self.path), columns)


def open_source(path: Path, rows_key: str | None) -> SourceFile:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return SourceFile(path, "csv")
    if suffix in (".jsonl", ".ndjson"):
        return SourceFile(path, "jsonl")
    rows, meta = _json_rows(path, rows_key)
    return SourceFile(path, "json", rows, meta)


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


def _outcome(value: object) -> str:
    if isinstance(value, bool):
        return "ok" if value else "http_error"
    text = str(value).strip().lower()
    if text in OUTCOMES:
        return text
    if text in ("success", "succeeded", "true", "1", "pass", "passed", "done", "complete"):
        return "ok"
    return "http_error"


def _error_text(value: object) -> str | None:
    if value is None or value is False or (isinstance(value, str) and not value.strip()):
        return None
    return value if isinstance(value, str) else json.dumps(value)


def convert(fm: FieldMap, value: object) -> object:
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
            raise BadValue("bad_value", f"{what}: phase {value!r} is neither warmup nor trial")
        return value
    if t in ("expected_tool", "lang"):
        return None if is_empty(value) else str(value).strip()
    if t in ("prompt_id", "finish_reason", "text", "reasoning", "prompt_text"):
        return None if value is None else str(value)
    if t == "block":
        return None if is_empty(value) else value  # ranked later over the whole import
    number = to_number(value, what)
    if number is None:
        return None
    if t in ("concurrency", "http_status"):
        return int(number)
    return number / fm.divisor


def map_row(row: SourceRow, maps: Sequence[FieldMap]) -> Partial:
    """Mapped fields of one source row (``BadValue`` if one cannot be converted, or if a
    required number column is empty in a successful row)."""
    out: Partial = {}
    empty: list[str] = []
    for fm in maps:
        value = lookup(row.values, fm.source)
        if not is_missing(value):
            out[fm.target] = convert(fm, value)
        if not fm.optional and fm.target in NUMBER_TARGETS and out.get(fm.target) is None:
            empty.append(fm.source)
    if out.get("error") and out.get("outcome") in (None, "ok"):
        out["outcome"] = classify_error(str(out["error"]))
    if empty and out.get("outcome") in (None, "ok"):  # failed rows carry no latency anyway
        raise BadValue(
            "empty", f"column {empty[0]}: no value in a successful row (optional: {empty[0]}?=)"
        )
    return out


def _used_keys(opts: TableOptions) -> set[str]:
    keys = {fm.source.split(".")[0] for fm in opts.maps if "." in fm.source}
    keys |= {fm.source for fm in opts.maps}
    return keys | ({opts.arm_column} if opts.arm_column else set())


def _partial(row: SourceRow, opts: TableOptions, arm: str | None, used: set[str]) -> Partial:
    """One source row as a reader's partial row; ``BadValue`` if it cannot be imported."""
    if row.ragged is not None:
        raise row.ragged
    fields = map_row(row, opts.maps)
    if opts.arm_column:
        value = lookup(row.values, opts.arm_column)
        arm = None if is_missing(value) or value in (None, "") else str(value)
        if arm is None:
            raise BadValue("no_arm", f"column {opts.arm_column}: no arm value")
    assert arm is not None
    check_values(fields)
    raw = {k: v for k, v in row.values.items() if k not in used}
    return {
        **fields,
        "arm": arm,
        "source": row.where,
        "raw": raw,
        "n_out_source": opts.n_out_source,
    }


def read_table(
    specs: Sequence[SourceSpec], opts: TableOptions, result: Imported
) -> Iterator[Partial]:
    """The partial rows of every file, in file order, read as they are consumed.

    Every file's columns are checked first (a mapped column no row has is a ``UsageError``),
    so nothing is yielded from a mapping that cannot work. Rows that cannot be imported are
    counted in ``result.skipped``.
    """
    arms = [None if opts.arm_column else arm for arm in stem_arms(specs)]
    files = [open_source(spec.path, opts.rows_key) for spec in specs]
    flags = [(fm.source, f"--map {fm.source}={fm.target}") for fm in opts.maps if not fm.optional]
    if opts.arm_column:
        flags.append((opts.arm_column, "--arm-column"))
    for source, file_arm in zip(files, stem_arms(specs), strict=True):
        source.check_columns(flags)
        if source.meta:
            result.arm_with(file_arm, source_meta=as_json_object(source.meta))
    result.map_with(
        maps=tuple(fm.as_record() for fm in opts.maps), arm_column=opts.arm_column,
        rows_key=opts.rows_key,
    )  # fmt: skip
    used = _used_keys(opts)
    rank = None
    if any(fm.target == "block" for fm in opts.maps):
        rank = _block_ranks(files, arms, opts, used) or None
    if rank is not None:
        result.map_with(block_values={str(v): i for v, i in rank.items()})
    elif _has_prompt_ids(opts):
        result.map_with(block_values=BLOCK_IS_REPETITION)
    else:
        result.map_with(block_values=BLOCK_IS_INDEX)
    return _rows(files, arms, opts, used, rank, result)


BLOCK_IS_REPETITION = "repetition of the row's prompt_id within its arm (0 = its first row)"
BLOCK_IS_INDEX = "index of the row within its arm"


def _has_prompt_ids(opts: TableOptions) -> bool:
    return any(fm.target == "prompt_id" for fm in opts.maps)


def _rows(
    files: list[SourceFile], arms: list[str | None], opts: TableOptions, used: set[str],
    rank: dict[object, int] | None, result: Imported,
) -> Iterator[Partial]:  # fmt: skip
    seen: dict[tuple[str, object], int] = {}
    by_prompt = _has_prompt_ids(opts)
    for source, arm in zip(files, arms, strict=True):
        for row in source.rows():
            try:
                partial = _partial(row, opts, arm, used)
            except BadValue as exc:
                result.skipped.add(exc, row.where)
                continue
            if rank is not None:
                partial["block"] = rank.get(partial.get("block"), 0)
            else:  # the prompt's repetition within its arm, else the row's index there
                key = (str(partial["arm"]), partial.get("prompt_id") if by_prompt else None)
                block = seen.get(key, 0)
                partial["block"], seen[key] = block, block + 1
            yield partial


def _block_ranks(
    files: list[SourceFile], arms: list[str | None], opts: TableOptions, used: set[str]
) -> dict[object, int]:
    """Blocks from a trial column become 0, 1, ... in the order of its values (a first pass
    over the rows that will be imported, so the ranks do not depend on reading order)."""
    values: set[object] = set()
    for source, arm in zip(files, arms, strict=True):
        for row in source.rows():
            try:
                block = _partial(row, opts, arm, used).get("block")
            except BadValue:
                continue
            if block is not None:
                values.add(block)
    return {v: i for i, v in enumerate(sorted(values, key=_sort_key))}


def _sort_key(value: object) -> tuple[int, float, str]:
    try:
        if isinstance(value, int | float | str):
            return (0, float(value), "")
    except ValueError:
        pass
    return (1, 0.0, str(value))
