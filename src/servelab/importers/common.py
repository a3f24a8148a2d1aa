"""What every importer shares: field mappings, units, source values, notes and skipped rows.

Owns the ``--map SRC=TARGET[:UNIT]`` syntax, unit conversion, the checks on source values, the
fixed set of note kinds an import can leave for the report, and ``Imported`` (what a reader
produced). Foreign files are read as ``object`` values and narrowed here (``number_or_none``,
``text_or_none``); the finished row is ``importers.imported_row``. Reads files; writes nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from servelab.errors import UsageError
from servelab.metrics import METRICS
from servelab.store import ArmEntry, FieldMapRecord, ImportMapping, SkippedRows, as_json_object

Partial = dict[str, object]
"""A reader's partial row: mapped fields (``TARGETS``) plus ``arm``, ``source`` and ``raw``."""
SourceRef = dict[str, str | int]
"""Where a row came from: ``{"file", "line"}`` or ``{"file", "index"}`` (+ repetition, ...)."""
ToolCallJson = dict[str, str | int | None]
"""A tool call as servelab rows hold it: ``{index, id, name, arguments}``."""

METRIC_NAMES = tuple(m.name for m in METRICS)
LATENCY = ("ttft_s", "ttft_content_s", "ttft_tool_s", "e2e_s", "tpot_s", "decode_tps", "e2e_tps")
COUNTS = ("n_out", "n_in", "cache_n", "draft_n", "draft_accepted")
CONTEXT_NUMBERS = ("block", "concurrency", "t_send_unix_s", "http_status")
CONTEXT_TEXT = ("prompt_id", "outcome", "error", "finish_reason", "text", "reasoning", "phase")
# Checked in every imported row: never negative (but a wall-clock time), always finite.
CHECKED = (*METRIC_NAMES, "chunk_t_s", "concurrency", "http_status", "t_send_unix_s")
# What a prompt asked and expected: not row fields, but the workload an import derives
# (``importers.expectations``). ``expected_tool``: a tool name, empty/null = no tool expected.
EXPECTATION_TARGETS = ("expected_tool", "prompt_text", "lang")
TARGETS = (*METRIC_NAMES, *CONTEXT_NUMBERS, *CONTEXT_TEXT, "tool_calls", *EXPECTATION_TARGETS)
# Divisors to servelab's units (seconds, ratios); dividing keeps 1644 ms -> 1.644 s exact.
UNITS: dict[str, float] = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9, "%": 100.0, "1": 1.0}
OUTCOMES = ("ok", "http_error", "timeout", "truncated_stream", "invalid_stream", "connection_error")

# The fixed set of note kinds an importer may record in manifest["notes"].
NOTE_KINDS = (
    "no_warmup",  # the source harness sent no warm-up request
    "cold_start",  # the first request of an arm is far slower than the rest
    "rate_includes_prefill",  # a tok/s column is n_out / e2e: it includes prefill
    "ttft_definition",  # what the source's TTFT measured (tool-call name, content only, ...)
    "decode_definition",  # how the source's decode rate differs from servelab's
    "reconstructed",  # a metric rebuilt from other fields (say how)
    "not_interleaved",  # arms ran one after another
    "skipped_rows",  # source rows that could not be mapped (counted, with reasons)
    "synthetic_load",  # llama-bench: no HTTP, no chat template, one test at a time
    "open_loop",  # requests sent at a rate, not at a fixed concurrency
    "arm_config_differs",  # arms differ in more than the arm (possible confound)
    "source_summary",  # something the source says about itself
    "expectations",  # where the prompts' expected outcomes, tools and language came from
)


def note(kind: str, detail: str) -> dict[str, str]:
    assert kind in NOTE_KINDS, kind
    return {"kind": kind, "detail": detail}


@dataclass(frozen=True, slots=True)
class FieldMap:
    """One ``SRC=TARGET[:UNIT]`` mapping: source column (dotted path allowed) to a row field."""

    source: str
    target: str
    unit: str | None = None
    optional: bool = False  # ``SRC?=TARGET``: a column only some files or rows have

    @property
    def divisor(self) -> float:
        return UNITS[self.unit] if self.unit else 1.0

    def as_record(self) -> FieldMapRecord:
        return FieldMapRecord(
            source=self.source, target=self.target, unit=self.unit, optional=self.optional
        )


def infer_unit(source: str, target: str) -> str | None:
    """A time target from a column named ``*_ms``/``*_us``/``*_ns`` takes that unit."""
    if not target.endswith("_s"):
        return None
    match = re.search(r"(?:^|_)(ms|us|ns|s)$", source)
    return match.group(1) if match else None


def parse_map(spec: str) -> FieldMap:
    """Parse ``ttft_ms=ttft_s:ms``, ``spec.accepted=draft_accepted``, ``err?=error`` (optional)."""
    source, sep, rest = spec.partition("=")
    optional = source.strip().endswith("?")
    source = source.strip().removesuffix("?")
    if not sep or not source.strip() or not rest.strip():
        raise UsageError(f"--map {spec!r}: expected SRC=TARGET[:UNIT], e.g. ttft_ms=ttft_s:ms")
    target, _, unit = rest.strip().partition(":")
    source, target = source.strip(), target.strip()
    if target not in TARGETS:
        raise UsageError(
            f"--map {spec!r}: unknown target {target!r}; targets: {', '.join(TARGETS)}"
        )
    if unit and unit not in UNITS:
        raise UsageError(f"--map {spec!r}: unknown unit {unit!r}; units: {', '.join(UNITS)}")
    return FieldMap(source, target, unit or infer_unit(source, target), optional)


_MISSING = object()


def lookup(row: Mapping[str, object], path: str) -> object:
    """``row[path]``, else a dotted walk (``spec.accepted``); ``_MISSING`` when absent."""
    if path in row:
        return row[path]
    node: object = row
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _MISSING
        node = node[part]
    return node


def is_missing(value: object) -> bool:
    return value is _MISSING


def number_or_none(value: object) -> int | float | None:
    """A source value that is a number (int or float, as it was), else None."""
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) or value is None else str(value)


def numbers(value: object) -> tuple[float, ...]:
    """The numbers of a source list (nothing else is kept), as they were."""
    if not isinstance(value, list | tuple):
        return ()
    return tuple(v for v in value if isinstance(v, int | float) and not isinstance(v, bool))


def column_names(rows: Iterable[Mapping[str, object]]) -> list[str]:
    """Every column seen, nested dicts shown as dotted paths one level down.

    Only text keys count: ``csv.DictReader`` files a ragged row's extra cells under ``None``.
    """
    names: dict[str, None] = {}
    for row in rows:
        for key, value in row.items():
            if not isinstance(key, str):
                continue
            if isinstance(value, dict):
                names.update(dict.fromkeys(f"{key}.{sub}" for sub in value if isinstance(sub, str)))
            else:
                names[key] = None
    return list(names)


def missing_column(path: str, flag: str, where: str, columns: Sequence[str]) -> UsageError:
    """The one-line error for a mapped column the file does not have, with the fix."""
    cols = ", ".join(columns) or "(none)"
    return UsageError(
        f"{flag}: column {path!r} not found in {where}; columns: {cols}. Map a column the file "
        f"has, or mark it optional ({path}?=...) if only some rows have it"
    )


def require_columns(
    rows: list[Mapping[str, object]], paths: list[tuple[str, str]], where: str
) -> None:
    """Each (path, flag) must exist in at least one row, or one line names it and the columns."""
    for path, flag in paths:
        if not any(not is_missing(lookup(r, path)) for r in rows):
            raise missing_column(path, flag, where, column_names(rows))


# Why a source row was not imported: the keys of ``manifest.source.skipped.reasons``.
SKIP_REASONS = (
    "not_a_number",  # a number column holds text ("n/a")
    "not_finite",  # NaN or inf
    "negative",  # a latency, rate or token count below zero
    "empty",  # a required number column is empty (or null) in a successful row
    "short_row",  # a CSV row with fewer cells than the header
    "long_row",  # a CSV row with more cells than the header
    "no_arm",  # the arm column is empty
    "bad_value",  # any other value that cannot become its field (a phase not warmup/trial)
)


class BadValue(ValueError):
    """A source value that cannot become the field it is mapped to (the row is skipped)."""

    def __init__(self, kind: str, detail: str) -> None:
        assert kind in SKIP_REASONS, kind
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


EMPTY_CELLS = ("", "null", "None", "NA")


def is_empty(value: object) -> bool:
    """A JSON null or an empty CSV cell (``""``, ``null``, ``None``, ``NA``)."""
    return value is None or (isinstance(value, str) and value.strip() in EMPTY_CELLS)


def to_number(value: object, what: str) -> float | None:
    """A finite number, or None for an empty cell; ``BadValue`` for text, NaN or inf."""
    if is_empty(value):
        return None
    if isinstance(value, bool):
        raise BadValue("not_a_number", f"{what}: {value!r} is not a number")
    if not isinstance(value, int | float | str):
        raise BadValue("not_a_number", f"{what}: {str(value)[:40]!r} is not a number")
    try:
        number = float(value)
    except ValueError:
        raise BadValue("not_a_number", f"{what}: {str(value)[:40]!r} is not a number") from None
    if not math.isfinite(number):
        raise BadValue("not_finite", f"{what}: {str(value)[:40]!r} is not a finite number")
    return number


def check_values(partial: Mapping[str, object]) -> None:
    """``BadValue`` if a metric or count of a reader's partial row is NaN, inf or negative.

    Every metric of docs/metrics.md is a time, a rate, a ratio or a token count: below zero it
    cannot be a measurement, and a non-finite one is none either; either would reach the
    statistics (a median TTFT of -2.5 ms), so such a row is skipped with its reason.
    """
    for name in CHECKED:
        value = partial.get(name)
        if value is None:
            continue
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, bool) or not isinstance(v, int | float):
                continue
            if not math.isfinite(v):
                raise BadValue("not_finite", f"{name}: {v!r} is not a finite number")
            if v < 0 and name != "t_send_unix_s":
                raise BadValue("negative", f"{name}: {v!r} is negative")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """One input file, and the arm it holds when the user named it (``FILE=ARM``)."""

    path: Path
    arm: str | None = None

    @classmethod
    def parse(cls, text: str) -> SourceSpec:
        path, sep, arm = text.rpartition("=")
        if sep and path and arm and not Path(text).exists():
            return cls(Path(path), arm)
        return cls(Path(text))

    def check(self) -> None:
        if not self.path.is_file():
            raise UsageError(f"{self.path}: no such file; give a result file to import")


@dataclass
class Skipped:
    """Rows not imported: counted by reason (one of ``SKIP_REASONS``), ten examples kept."""

    reasons: Counter[str] = field(default_factory=Counter)
    examples: list[dict[str, str | int]] = field(default_factory=list)

    def add(self, error: BadValue, source: SourceRef) -> None:
        self.reasons[error.kind] += 1
        if len(self.examples) < 10:
            self.examples.append({**source, "reason": str(error)})

    @property
    def count(self) -> int:
        return sum(self.reasons.values())

    def as_record(self) -> SkippedRows:
        return SkippedRows(
            count=self.count, reasons=dict(self.reasons),
            examples=tuple(as_json_object(e) for e in self.examples),
        )  # fmt: skip


@dataclass
class Imported:
    """What a reader produced: partial rows in source order, and everything said about them."""

    format: str
    rows: list[Partial] = field(default_factory=list)
    arms: dict[str, ArmEntry] = field(default_factory=dict)
    notes: list[dict[str, str]] = field(default_factory=list)
    mapping: ImportMapping = field(default_factory=ImportMapping)
    skipped: Skipped = field(default_factory=Skipped)
    preset: str | None = None

    def add_note(self, kind: str, detail: str) -> None:
        entry = note(kind, detail)
        if entry not in self.notes:
            self.notes.append(entry)

    def map_with(self, **changes: object) -> None:
        """Record how the source was mapped (``ImportMapping`` fields)."""
        self.mapping = self.mapping.model_copy(update=changes)

    def arm_with(self, arm: str, **changes: object) -> None:
        """Record what the source says about an arm (``ArmEntry`` fields)."""
        self.arms[arm] = self.arms.get(arm, ArmEntry()).model_copy(update=changes)


def classify_error(error: str) -> str:
    """An outcome for a source's error text (servelab's outcome names)."""
    low = error.lower()
    if "timeout" in low or "timed out" in low:
        return "timeout"
    if any(w in low for w in ("connect", "refused", "reset by peer", "broken pipe")):
        return "connection_error"
    return "http_error"


def tool_calls_of(value: object) -> list[ToolCallJson]:
    """Source tool calls as servelab's ``{index, id, name, arguments}`` (arguments as JSON text)."""
    if not isinstance(value, list):
        return []
    out: list[ToolCallJson] = []
    for i, call in enumerate(value):
        if not isinstance(call, dict):
            continue
        fn = call["function"] if isinstance(call.get("function"), dict) else call
        args = fn.get("arguments", "")
        index = call.get("index", i)
        out.append(
            {
                "index": index if isinstance(index, int) else i,
                "id": text_or_none(call.get("id")),
                "name": str(fn.get("name", "")),
                "arguments": args if isinstance(args, str) else json.dumps(args),
            }
        )
    return out
