"""``servelab selftest``: the client's timing error and ceiling on this machine.

Owns the options, the progress bar and the printing (tables, or with ``--json`` the one JSON
object of docs/selftest.md). The work is ``servelab.runner.selftest.selftest``. Must not catch
servelab errors.
"""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from servelab.errors import UsageError
from servelab.runner.selftest import CPU_BOUND_CORES, ERROR_BOUND_MS, plan
from servelab.runner.selftest import selftest as run_selftest
from servelab.store.selftest_file import ErrorStats, SelftestResult


def selftest(
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
    quick: bool = typer.Option(False, "--quick", help="about 10 s instead of about a minute"),
    max_error_ms: float = typer.Option(
        ERROR_BOUND_MS, "--max-error-ms", help="p99 arrival error a ceiling step may have"
    ),
    max_cpu: float = typer.Option(
        CPU_BOUND_CORES, "--max-cpu", help="client CPU (cores) a ceiling step may use"
    ),
    save: bool = typer.Option(True, "--save/--no-save", help="keep the result in the cache"),
) -> None:
    """Measure servelab's own timing error and ceiling against a built-in mock server."""
    if max_error_ms <= 0 or max_cpu <= 0:
        raise UsageError("--max-error-ms and --max-cpu must be positive; e.g. --max-error-ms 1")
    steps = plan(quick)
    total = len(steps.accuracy) + len(steps.ramp)
    err = Console(stderr=True)
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )
    task = bar.add_task("selftest", total=total)
    started = [0]

    def tell(text: str) -> None:  # called as each measurement starts
        bar.update(task, description=text, completed=started[0])
        started[0] += 1

    with bar:
        result = run_selftest(
            quick=quick, error_bound_ms=max_error_ms, cpu_bound_cores=max_cpu, progress=tell,
            save=save,
        )  # fmt: skip
        bar.update(task, completed=total)
    if as_json:
        print(json.dumps(result.to_json(), indent=2, sort_keys=True))
        return
    _print(result, Console())


def _ms(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) else "-"


def _stats_row(t: Table, name: str, what: str, s: ErrorStats) -> None:
    t.add_row(name, what, _ms(s.p50), _ms(s.p99), _ms(s.max))


def _errors_table(result: SelftestResult) -> Table:
    t = Table(title="timing error (ms): the client's stamp minus the server's write")
    for col in ("engine", "what", "p50", "p99", "max"):
        t.add_column(col, justify="left" if col in ("engine", "what") else "right")
    rows = [("all", result.timing_error)]
    rows += [(name, p.errors) for name, p in result.profiles.items()]
    for name, figures in rows:
        _stats_row(t, name, "TTFT", figures.ttft_ms)
        _stats_row(t, name, "inter-chunk gap", figures.itl_ms)
    _stats_row(t, "server", "own lag behind schedule", result.server_lag_ms)
    return t


def _ramp_table(result: SelftestResult) -> Table:
    t = Table(title="ceiling ramp (fast engine: 2,000 tok/s per stream)")
    cols = (
        "streams",
        "tok/s",
        "client CPU",
        "CPU ms/token",
        "arrival p99 ms",
        "loop lag p99 ms",
        "server lag p99 ms",
        "kept up",
    )
    for col in cols:
        t.add_column(col, justify="right")
    for s in result.steps:
        t.add_row(
            str(s.streams),
            f"{s.tokens_per_s:,.0f}",
            f"{s.cpu_cores:.2f}",
            _ms(s.cpu_ms_per_token),
            _ms(s.arrival_ms.p99),
            _ms(s.loop_lag_p99_ms),
            _ms(s.server_lag_ms.p99),
            "yes" if s.kept_up else "no",
        )
    return t


def _streams(n: object) -> str:
    return f"{n} stream" if n == 1 else f"{n} streams"


def _ceiling_line(result: SelftestResult) -> str:
    c = result.ceiling
    if c.tokens_per_s is None:
        return f"client ceiling: none found ({c.limited_by})"
    line = (
        f"client ceiling: {c.tokens_per_s:,.0f} tok/s at {_streams(c.streams)}, "
        f"{_ms(c.cpu_ms_per_token)} CPU ms/token; stopped at {c.limited_by}"
    )
    prev = result.previous.ceiling if result.previous is not None else None
    if prev is not None and prev.tokens_per_s is not None:
        line += f" (last saved: {prev.tokens_per_s:,.0f} tok/s at {_streams(prev.streams)})"
    return line


def _print(result: SelftestResult, out: Console) -> None:
    out.print(_errors_table(result))
    out.print(_ramp_table(result))
    out.print(_ceiling_line(result), soft_wrap=True)
    host = result.host
    if host.load_avg_1m > 0.5 * (host.cpu_count or 1):
        out.print(f"note: load average {host.load_avg_1m:.1f} on {host.cpu_count} CPUs: "
                  "other work shared the machine, and these figures include its noise",
                  soft_wrap=True)  # fmt: skip
