"""Importing per-request results from other harnesses into a servelab run directory.

Owns ``import_results``: pick the format (llama-bench, vllm bench serve, or generic rows with a
mapping or a preset), read the files, finish every row as a servelab row, detect the quirks
worth a note, and write ``manifest.json`` (``kind: "import"``) and ``requests.jsonl`` into a new
run directory. An effects layer: reads and writes files through ``servelab.store``; it must not
import the runner, the report or the CLI.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import servelab
from servelab.errors import UsageError
from servelab.importers import checks
from servelab.importers.common import Imported, SourceSpec, finish_row, parse_map, sha256_file
from servelab.importers.llamabench import is_llama_bench, read_llama_bench
from servelab.importers.presets import PRESETS, get_preset, merge_maps
from servelab.importers.table import TableOptions, read_table
from servelab.importers.vllm_bench import is_vllm_result, read_vllm
from servelab.store import SCHEMA_VERSION
from servelab.store.jsonl import JsonlWriter, write_json_atomic
from servelab.store.rundir import RunDir, create_run_dir, plan_run_dir

FORMATS = ("auto", "llama-bench", "vllm-bench-serve", "table")

__all__ = ["FORMATS", "PRESETS", "ImportOptions", "ImportResult", "import_results"]


@dataclass(frozen=True, slots=True)
class ImportOptions:
    """How to read the files. ``maps`` are ``SRC=TARGET[:UNIT]`` strings (docs/import.md)."""

    format: str = "auto"
    preset: str | None = None
    maps: tuple[str, ...] = ()
    arm_column: str | None = None
    arm_from: str | None = None
    rows_key: str | None = None
    baseline: str | None = None
    warmup_first: int = 0


@dataclass(frozen=True, slots=True)
class ImportResult:
    run_dir: RunDir
    arms: dict[str, int]  # rows per arm
    n_rows: int
    n_skipped: int
    notes: list[dict[str, str]] = field(default_factory=list)


def detect_format(path: Path) -> str:
    """llama-bench, vllm-bench-serve or table, from the file's content."""
    if path.suffix.lower() == ".csv":
        return "table"
    text = path.read_text(encoding="utf-8")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:  # JSONL, or several documents (vllm --append-result)
        line = next((ln for ln in text.splitlines() if ln.strip()), "")
        try:
            doc = json.loads(line)
        except json.JSONDecodeError:
            return "table"
    if is_vllm_result(doc):
        return "vllm-bench-serve"
    return "llama-bench" if is_llama_bench(doc) else "table"


def _read(specs: list[SourceSpec], opts: ImportOptions) -> Imported:
    fmt = opts.format
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r}: unknown; formats: {', '.join(FORMATS)}")
    if opts.preset:
        fmt = "table"
    elif fmt == "auto":
        fmt = detect_format(specs[0].path)
    result = Imported(format=fmt, preset=opts.preset)
    if fmt == "llama-bench":
        fields = [f.strip() for f in opts.arm_from.split(",")] if opts.arm_from else None
        read_llama_bench(specs, fields, result)
    elif fmt == "vllm-bench-serve":
        read_vllm(specs, opts.arm_from, result)
    else:
        read_table(specs, _table_options(opts, result), result)
    return result


def _table_options(opts: ImportOptions, result: Imported) -> TableOptions:
    maps = tuple(parse_map(m) for m in opts.maps)
    arm_column, rows_key, n_out_source = opts.arm_column, opts.rows_key, "source"
    if opts.preset:
        preset = get_preset(opts.preset)
        maps = merge_maps(preset.field_maps(), maps)
        arm_column = arm_column or preset.arm_column
        rows_key = rows_key or preset.rows_key
        result.notes.extend(preset.note_dicts())
        n_out_source = "usage" if preset.n_out_usage else "source"
    if not maps:
        raise UsageError(
            "nothing to import: give --map SRC=TARGET (e.g. --map ttft_ms=ttft_s:ms) "
            f"or --preset ({', '.join(PRESETS)})"
        )
    return TableOptions(maps, arm_column, rows_key, n_out_source)


def _finish(
    result: Imported, run_id: str, warmup_first: int
) -> tuple[list[dict[str, Any]], set[str]]:
    rows, derived = [], set()
    position: Counter[str] = Counter()
    for seq, partial in enumerate(result.rows):
        if position[partial["arm"]] < warmup_first:
            partial = {**partial, "phase": "warmup"}
        position[partial["arm"]] += 1
        row, filled = finish_row(partial, run_id, seq)
        rows.append(row)
        derived.update(filled)
    return rows, derived


def _detect(result: Imported, rows: list[dict[str, Any]]) -> dict[str, Any]:
    mapped = {m["target"] for m in result.mapping.get("maps", [])}
    result.notes.extend(checks.rate_includes_prefill(rows, mapped))
    result.notes.extend(checks.cold_start(rows))
    result.notes.extend(n for n in checks.tool_call_ttft(rows) if result.format == "table")
    constants = checks.arm_constants(rows)
    diff = checks.config_diff(constants)
    result.notes.extend(checks.config_notes(diff))
    arms = list(dict.fromkeys(r["arm"] for r in rows))
    if len(arms) > 1:
        result.add_note(
            "not_interleaved",
            "the arms ran one after another, not interleaved: drift of the machine between "
            "them is confounded with the arm",
        )
    if result.skipped.count:
        reasons = ", ".join(f"{r} ({n})" for r, n in result.skipped.reasons.items())
        result.add_note(
            "skipped_rows", f"{result.skipped.count} source rows not imported: {reasons}"
        )
    for arm, consts in constants.items():
        if consts and result.format == "table":
            result.arms.setdefault(arm, {})["constants"] = consts
    return diff


_DECISION_CANDIDATES = ("decode_tps", "ttft_s", "e2e_s", "prefill_tps", "e2e_tps")


def _decision_metrics(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The usual decision metrics the source measured: an import decides only on what it has
    (llama-bench has no TTFT), so a report never says "inconclusive" for a missing metric."""
    present = [m for m in _DECISION_CANDIDATES[:3] if any(r.get(m) is not None for r in rows)]
    if present:
        return present
    return [m for m in _DECISION_CANDIDATES[3:] if any(r.get(m) is not None for r in rows)]


def _manifest(
    run: RunDir, result: Imported, specs: list[SourceSpec], opts: ImportOptions, status: str
) -> dict[str, Any]:
    arms = list(dict.fromkeys(r["arm"] for r in result.rows))
    return {
        "schema_version": SCHEMA_VERSION,
        "servelab_version": servelab.__version__,
        "kind": "import",
        "run_id": run.run_id,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "status": status,
        "source": {
            "format": result.format,
            "preset": result.preset,
            "files": [
                {"path": str(s.path), "sha256": sha256_file(s.path), "arm": s.arm} for s in specs
            ],
            "mapping": result.mapping,
            "skipped": result.skipped.as_dict(),
        },
        "arms": {arm: result.arms.get(arm, {}) for arm in arms},
        "baseline": opts.baseline or (arms[0] if arms else None),
        "interleaved": False,
        "decision_metrics": _decision_metrics(result.rows),
        # Strings, so any reader can print them; each starts with its kind (common.NOTE_KINDS).
        "notes": [f"{n['kind']}: {n['detail']}" for n in result.notes],
    }


def import_results(
    files: Sequence[str | Path],
    options: ImportOptions | None = None,
    *,
    name: str | None = None,
    out: Path | None = None,
    parent: Path = Path("runs"),
) -> ImportResult:
    """Read ``files`` (``PATH`` or ``PATH=ARM``) and write them as a new run directory."""
    options = options or ImportOptions()
    if not files:
        raise UsageError("no files to import; give one or more result files")
    specs = [SourceSpec.parse(str(f)) for f in files]
    for spec in specs:
        spec.check()
    if options.warmup_first < 0:
        raise UsageError("--warmup-first must be 0 or more")
    if out is not None and out.is_dir() and any(out.iterdir()):
        raise UsageError(f"{out} is not empty; choose a new --out directory")
    result = _read(specs, options)
    if not result.rows:
        raise UsageError(f"no rows imported from {', '.join(str(s.path) for s in specs)}")
    run = plan_run_dir(name or f"import-{specs[0].path.stem}", out, parent)
    rows, derived = _finish(result, run.run_id, options.warmup_first)
    arms = Counter(r["arm"] for r in rows)
    if options.baseline and options.baseline not in arms:
        raise UsageError(f"--baseline {options.baseline!r}: no such arm; arms: {', '.join(arms)}")
    result.mapping["derived"] = sorted(derived)
    result.mapping["warmup_first"] = options.warmup_first
    diff = _detect(result, rows)
    create_run_dir(run)
    manifest = _manifest(run, result, specs, options, "importing")
    manifest["config_diff"] = diff
    write_json_atomic(run.manifest, manifest)
    with JsonlWriter(run.requests) as writer:
        for row in rows:
            writer.write(row)
    write_json_atomic(run.manifest, {**manifest, "status": "complete"})
    return ImportResult(run, dict(arms), len(rows), result.skipped.count, result.notes)
