"""Importing per-request results from other harnesses into a servelab run directory.

Owns ``import_results``: pick the format (llama-bench, vllm bench serve, or generic rows with a
mapping or a preset), read the files, finish every row as a servelab row, detect the quirks
worth a note, pair each arm with its reference (``importers.pairing``: the source's own, else
the baseline), refuse compared arms that differ undeclared, and write ``manifest.json`` (``kind:
"import"``) and ``requests.jsonl`` into a new run directory, plus ``inputs/workload.json`` when
the rows name what each prompt expected (``importers.expectations``). An effects layer: reads
and writes files through ``servelab.store``; it must not import the runner, the report or the
CLI.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from servelab.errors import UsageError
from servelab.importers.checks import CONTEXT_SETTINGS, RowChecks, config_diff, config_notes
from servelab.importers.common import (
    BadValue,
    Imported,
    Partial,
    SourceSpec,
    check_values,
    parse_map,
    sha256_file,
)
from servelab.importers.expectations import (
    ExpectationSources,
    RowExpectations,
    check_lang,
    derive_workload,
    write_run_workload,
)
from servelab.importers.imported_row import ImportedRow, finish_row
from servelab.importers.llamabench import is_llama_bench, read_llama_bench
from servelab.importers.pairing import (
    Pairing,
    ReferencesSpec,
    Source,
    find_references,
    pair_arms,
    read_references,
)
from servelab.importers.presets import PRESETS, get_preset, merge_maps
from servelab.importers.table import TableOptions, read_table
from servelab.importers.vllm_bench import is_vllm_result, read_vllm
from servelab.spec.gates import GatesSpec
from servelab.store import (
    ArmEntry,
    ImportFile,
    ImportSource,
    Manifest,
    WorkloadRef,
    write_manifest,
)
from servelab.store.jsonl import JsonlWriter
from servelab.store.manifest_records import ReferencesFile, Scalar
from servelab.store.rundir import RunDir, create_run_dir, plan_run_dir
from servelab.workloads import Workload, load_workload

FORMATS = ("auto", "llama-bench", "vllm-bench-serve", "table")

__all__ = [
    "FORMATS", "PRESETS", "ImportOptions", "ImportResult", "ImportedRow", "import_results",
]  # fmt: skip


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
    # FILE[:CONFIG_COL:REF_COL] naming each configuration's reference arm; "none" turns off a
    # preset's companion file
    references: str | None = None
    declare: tuple[str, ...] = ()  # source columns compared arms may differ in
    # the tools (and prompts' argument checks) to score replies against: a built-in name or a
    # workload file; and the language the prompts ask for (zh-TW); both replace a preset's
    workload: str | None = None
    lang: str | None = None
    # thresholds each arm is held to in the report (spec/gates.py rules, as an experiment's
    # ``gates.rules``), and the arms besides the baseline that must pass them
    gates: tuple[str, ...] = ()
    require: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ImportResult:
    run_dir: RunDir
    arms: dict[str, int]  # rows per arm
    n_rows: int
    n_skipped: int
    notes: list[dict[str, str]] = field(default_factory=list)
    references: dict[str, str] = field(default_factory=dict)  # candidate -> its reference arm
    references_file: ReferencesFile | None = None  # where they came from
    workload: WorkloadRef | None = None  # the workload derived from the rows, when any


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


def _read(specs: list[SourceSpec], opts: ImportOptions) -> tuple[Imported, Iterable[Partial]]:
    """The reader's state and its partial rows (a table's are read as they are consumed)."""
    fmt = opts.format
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r}: unknown; formats: {', '.join(FORMATS)}")
    if opts.preset:
        fmt = "table"
    elif fmt == "auto":
        fmt = detect_format(specs[0].path)
    result = Imported(format=fmt, preset=opts.preset)
    if fmt == "table":
        return result, read_table(specs, _table_options(opts, result), result)
    if fmt == "llama-bench":
        fields = [f.strip() for f in opts.arm_from.split(",")] if opts.arm_from else None
        read_llama_bench(specs, fields, result)
    else:
        read_vllm(specs, opts.arm_from, result)
    return result, _checked(result)


def _checked(result: Imported) -> Iterator[Partial]:
    """A whole-document reader's rows, without those holding impossible values (counted)."""
    for partial in result.rows:
        try:
            check_values(partial)
        except BadValue as exc:
            source = partial.get("source")
            result.skipped.add(exc, source if isinstance(source, dict) else {})
            continue
        yield partial


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


def _detect(
    result: Imported, checks: RowChecks, diff: dict[str, dict[str, Scalar]], pairing: Pairing
) -> None:
    mapped = {m.target for m in result.mapping.maps or ()}
    result.notes.extend(checks.rate_includes_prefill(mapped))
    result.notes.extend(checks.cold_start())
    result.notes.extend(n for n in checks.tool_call_ttft() if result.format == "table")
    result.notes.extend(config_notes(diff, pairing.how))
    if len(checks.arms) > 1:
        result.add_note(
            "not_interleaved",
            "the arms ran one after another, not interleaved: drift of the machine between "
            "them is confounded with the arm",
        )
    if result.skipped.count:
        result.add_note(
            "skipped_rows", f"{result.skipped.count} source rows not imported: {_reasons(result)}"
        )
    for arm, consts in checks.arm_constants().items():
        if consts and result.format == "table":
            result.arm_with(arm, constants=consts)


def _pair(
    result: Imported, checks: RowChecks, options: ImportOptions, baseline: str,
    source: Source | None,
) -> tuple[dict[str, dict[str, Scalar]], Pairing]:  # fmt: skip
    """The columns that differ between arms, and the arms' pairing (refused when compared
    arms differ in one that neither the source's pairing nor --declare accounts for)."""
    diff = config_diff(checks.arm_constants())
    columns = checks.columns | {m.source for m in result.mapping.maps or ()}
    pairing = pair_arms(
        list(checks.arms), baseline, diff, declared=options.declare, columns=columns,
        source=source,
    )  # fmt: skip
    return diff, pairing


def _reasons(result: Imported) -> str:
    return ", ".join(f"{r} ({n})" for r, n in result.skipped.reasons.items())


def _manifest(
    run: RunDir, result: Imported, specs: list[SourceSpec], opts: ImportOptions,
    checks: RowChecks | None, diff: dict[str, dict[str, Scalar]] | None = None,
    pairing: Pairing | None = None, references: ReferencesSpec | None = None,
    workload: WorkloadRef | None = None,
) -> Manifest:  # fmt: skip
    """The manifest; without ``checks`` the one written while the rows are (status importing)."""
    arms = list(checks.arms) if checks else []
    files = tuple(ImportFile(path=str(s.path), sha256=sha256_file(s.path), arm=s.arm)
                  for s in specs)  # fmt: skip
    # Fields without a value are left out (so a reader's defaults never become written facts).
    said: dict[str, object] = {}
    if references is not None:
        said["references"] = references.record()
    if pairing and pairing.declared:
        said["declared"] = pairing.declared
    if opts.gates:
        said["gates"] = opts.gates
    if opts.require:
        said["gates_require"] = opts.require
    source = ImportSource(format=result.format, preset=result.preset, files=files,
                          mapping=result.mapping, skipped=result.skipped.as_record())  # fmt: skip
    manifest = Manifest(
        kind="import",
        run_id=run.run_id,
        status="complete" if checks else "importing",
        source=source.model_copy(update=said),
        arms={arm: result.arms.get(arm, ArmEntry()) for arm in arms},
        baseline=opts.baseline or (arms[0] if arms else None),
        interleaved=False,
        decision_metrics=tuple(checks.decision_metrics()) if checks else (),
        # Strings, so any reader can print them; each starts with its kind (common.NOTE_KINDS).
        notes=tuple(f"{n['kind']}: {n['detail']}" for n in result.notes),
    )  # fmt: skip
    if diff is None:
        return manifest
    update: dict[str, object] = {"config_diff": diff}
    if workload is not None:  # left out otherwise: runs without one read as before
        update["workload"] = workload
    if pairing and pairing.references:
        update["references"] = pairing.references
    # model_copy does not validate: read back what will be written, as a reader would
    return Manifest.from_json(manifest.model_copy(update=update).to_json())


def _write_rows(
    run: RunDir, partials: Iterable[Partial], warmup_first: int, checks: RowChecks,
    expectations: RowExpectations,
) -> tuple[RowChecks, set[str]]:  # fmt: skip
    """Finish each partial row, append it to requests.jsonl and feed the checks and the
    expectations: one row in memory at a time. Returns the checks and the names of the
    metrics derived."""
    derived: set[str] = set()
    position: Counter[str] = Counter()
    with JsonlWriter(run.requests) as writer:
        for seq, partial in enumerate(partials):
            arm = str(partial["arm"])
            if position[arm] < warmup_first:
                partial = {**partial, "phase": "warmup"}
            position[arm] += 1
            checks.add_source(partial)
            expectations.add(partial)
            row, filled = finish_row(partial, run.run_id, seq)
            derived.update(filled)
            checks.add(row)
            writer.write(row.to_json())
    return checks, derived


def _import(
    run: RunDir, result: Imported, partials: Iterable[Partial], specs: list[SourceSpec],
    options: ImportOptions, source: Source | None, base: Workload | None,
) -> ImportResult:  # fmt: skip
    create_run_dir(run)
    write_manifest(run, _manifest(run, result, specs, options, None))
    context = {
        m.source: m.target for m in result.mapping.maps or () if m.target in CONTEXT_SETTINGS
    }
    expectations = RowExpectations()
    checks, derived = _write_rows(
        run, partials, options.warmup_first, RowChecks(context_maps=context), expectations
    )
    if not checks.arms:
        skipped = (
            f" ({result.skipped.count} skipped: {_reasons(result)})" if result.skipped.count else ""
        )
        raise UsageError(
            f"no rows imported from {', '.join(str(s.path) for s in specs)}{skipped}; "
            "see docs/import.md for what a row needs"
        )
    arms = {arm: state.n_rows for arm, state in checks.arms.items()}
    named = [("--baseline", options.baseline), *(("--require", a) for a in options.require)]
    for flag, arm in named:
        if arm and arm not in arms:
            raise UsageError(f"{flag} {arm!r}: no such arm; arms: {', '.join(arms)}")
    result.map_with(derived=tuple(sorted(derived)), warmup_first=options.warmup_first)
    diff, pairing = _pair(result, checks, options, options.baseline or next(iter(arms)), source)
    _detect(result, checks, diff, pairing)
    workload = _store_workload(run, result, expectations, options, base)
    spec = source[0] if source else None
    write_manifest(
        run, _manifest(run, result, specs, options, checks, diff, pairing, spec, workload)
    )
    return ImportResult(
        run, arms, sum(arms.values()), result.skipped.count, result.notes, pairing.references,
        spec.record() if spec else None, workload,
    )  # fmt: skip


def _store_workload(
    run: RunDir, result: Imported, rows: RowExpectations, options: ImportOptions,
    base: Workload | None,
) -> WorkloadRef | None:  # fmt: skip
    """Derive the workload the rows name, store it in the run directory and note where its
    parts came from; None when nothing asked for one."""
    preset = get_preset(options.preset) if options.preset else None
    sources = ExpectationSources(
        base=base, lang=options.lang, preset_lang=preset.lang if preset else None,
        preset=options.preset, columns={m.target: m.source for m in result.mapping.maps or ()},
    )  # fmt: skip
    derived = derive_workload(rows, sources)
    if derived is None:
        return None
    stored = write_run_workload(run, derived.workload)
    where = run.workload.relative_to(run.root).as_posix()
    result.add_note("expectations", derived.note(stored, where))
    return WorkloadRef(
        name=stored.name, version=stored.version, content_hash=stored.content_hash,
        prompts=len(stored.prompts),
    )  # fmt: skip


def _base_workload(options: ImportOptions) -> Workload | None:
    """The workload whose tools (and prompts' argument checks) replies are scored against:
    ``--workload``, else the preset's; checked before any row is read."""
    check_lang(options.lang, "--lang")
    preset = get_preset(options.preset) if options.preset else None
    name = options.workload or (preset.workload if preset else None)
    return load_workload(name) if name else None


def _check_gates(options: ImportOptions) -> None:
    """``--gate`` rules read as an experiment's ``gates.rules`` are (spec/gates.py), checked
    before any row is read; ``--require`` names arms that must pass them."""
    if options.require and not options.gates:
        raise UsageError("--require ARM: give the rules it must pass with --gate RULE")
    try:
        GatesSpec(rules=options.gates, require=options.require)
    except ValidationError as exc:
        msg = str(exc.errors()[0]["msg"]).removeprefix("Value error, ").removeprefix("gate ")
        raise UsageError(f"--gate {msg}") from exc


def _discard(run: RunDir, existed: bool) -> None:
    """Remove what a failed import wrote, so a retry can use the same --out."""
    if not existed:
        shutil.rmtree(run.root, ignore_errors=True)
        return
    stored = run.workload
    for path in (run.requests, run.manifest, run.root / f".{run.manifest.name}.tmp", stored):
        path.unlink(missing_ok=True)
    for folder in (run.metrics_dir, stored.parent):
        with contextlib.suppress(OSError):
            folder.rmdir()


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
    _check_gates(options)
    base = _base_workload(options)
    with _source_errors(specs):
        result, partials = _read(specs, options)  # checks every mapped column first
    references = _references(options, specs)
    run = plan_run_dir(name or f"import-{specs[0].path.stem}", out, parent)
    existed = run.root.exists()
    try:
        with _source_errors(specs):
            return _import(run, result, partials, specs, options, references, base)
    except BaseException:
        _discard(run, existed)
        raise


def _references(options: ImportOptions, specs: list[SourceSpec]) -> Source | None:
    """The references file to use (``--references``, else the preset's companion file beside
    the first source) and what it says; None without one."""
    preset = get_preset(options.preset) if options.preset else None
    spec = find_references(options.references, preset.references if preset else None, specs[0].path)
    return (spec, read_references(spec)) if spec else None


@contextlib.contextmanager
def _source_errors(specs: list[SourceSpec]) -> Iterator[None]:
    """A source file that is not UTF-8 text becomes one line naming it and the fix.

    Readers stream their files, so the decode error can surface anywhere below this point; the
    file is found again by decoding each source (on this error path only)."""
    try:
        yield
    except UnicodeDecodeError as exc:
        bad = next((s.path for s in specs if not _is_utf8(s.path)), specs[0].path)
        raise UsageError(
            f"{bad} is not UTF-8 text ({exc.reason}); convert it first, "
            f"e.g. `iconv -f latin1 -t utf-8 {bad.name} > {bad.stem}.utf8{bad.suffix}`"
        ) from exc


def _is_utf8(path: Path) -> bool:
    try:
        with path.open(encoding="utf-8") as fh:
            while fh.read(1 << 20):
                pass
    except UnicodeDecodeError:
        return False
    return True
