"""``servelab import``: parse options into ``ImportOptions``, import the files, print the result."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from servelab.importers import FORMATS, PRESETS, ImportOptions, ImportResult, import_results


def import_cmd(
    files: list[str] = typer.Argument(
        ..., help="result files; FILE=ARM names the arm a file holds (default: its stem)"
    ),
    fmt: str = typer.Option("auto", "--format", "-f", help=f"input format: {', '.join(FORMATS)}"),
    preset: str | None = typer.Option(
        None, "--preset", help=f"a known layout: {', '.join(PRESETS)}"
    ),
    maps: list[str] = typer.Option(
        [],
        "--map",
        help="SRC=TARGET[:UNIT], e.g. ttft_ms=ttft_s:ms (repeatable; SRC?= optional); targets "
        "expected_tool (empty/null = no tool), prompt_text and lang give each prompt's "
        "expectation (needs a column mapped to prompt_id)",
    ),
    arm_column: str | None = typer.Option(None, "--arm-column", help="column naming the arm"),
    arm_from: str | None = typer.Option(
        None, "--arm-from", help="llama-bench: fields naming the arm; vllm: result key (label)"
    ),
    rows_key: str | None = typer.Option(
        None, "--rows-key", help="JSON: key path of the list of rows, e.g. data.rows"
    ),
    baseline: str | None = typer.Option(None, "--baseline", help="baseline arm (default: first)"),
    warmup_first: int = typer.Option(
        0, "--warmup-first", help="mark the first N rows of each arm as warm-up"
    ),
    references: str | None = typer.Option(
        None,
        "--references",
        help="FILE[:CONFIG_COL:REF_COL]: CSV naming each configuration's reference arm "
        "(default columns config, reference); 'none' ignores a preset's companion file",
    ),
    declare: list[str] = typer.Option(
        [], "--declare", help="a source column compared arms may differ in (repeatable)"
    ),
    workload: str | None = typer.Option(
        None,
        "--workload",
        help="built-in name or workload FILE: the tool schemas (and prompts' argument checks, "
        "matched by prompt id or text) replies are scored against",
    ),
    lang: str | None = typer.Option(
        None, "--lang", help="language the prompts ask for (zh-TW): Chinese script is scored"
    ),
    gate: list[str] = typer.Option(
        [],
        "--gate",
        help="a threshold every arm is held to in the report, as an experiment's gates.rules "
        "(repeatable), e.g. 'false_fire_rate <= 25%' or 'ttft_s.p90 <= 300ms'",
    ),
    require: list[str] = typer.Option(
        [], "--require", help="an arm that must pass the gates besides the baseline (repeatable)"
    ),
    name: str | None = typer.Option(None, "--name", help="run name (directory prefix)"),
    out: Path | None = typer.Option(None, "--out", "-o", help="run directory to create"),
) -> None:
    options = ImportOptions(
        format=fmt, preset=preset, maps=tuple(maps), arm_column=arm_column, arm_from=arm_from,
        rows_key=rows_key, baseline=baseline, warmup_first=warmup_first, references=references,
        declare=tuple(declare), workload=workload, lang=lang, gates=tuple(gate),
        require=tuple(require),
    )  # fmt: skip
    result = import_results(files, options, name=name, out=out)
    found = result.references_file
    if found is not None and found.found_by_preset:
        Console(stderr=True).print(
            f"servelab: each configuration's reference arm is from {found.path} (found next "
            "to the source; --references none leaves it out)",
            markup=False, highlight=False, soft_wrap=True,
        )  # fmt: skip
    _print(result, Console())


def _print(result: ImportResult, console: Console) -> None:
    """Rows per arm (with the arm it is compared with), skipped rows, notes, the run dir."""
    references = set(result.references.values())
    for arm, n in result.arms.items():
        reference = result.references.get(arm)
        role = f" (compared with {reference})" if reference else ""
        role = role or (" (reference)" if arm in references else "")
        console.print(f"{arm}: {n} rows{role}", markup=False)
    if result.n_skipped:
        console.print(f"[yellow]skipped[/] {result.n_skipped} rows (see manifest source.skipped)")
    for entry in result.notes:
        console.print(f"[yellow]note[/] {escape(entry['kind'] + ': ' + entry['detail'])}")
    console.print(f"imported {result.n_rows} rows: {result.run_dir.root}", markup=False)
