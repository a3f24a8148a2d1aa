"""``servelab selftest``: the client's timing error and ceiling on this machine.

Owns the options, the progress bar and the printing (tables, or with ``--json`` the one JSON
object of docs/selftest.md). The work is ``servelab.runner.selftest.selftest``. Must not catch
servelab errors. With ``--ray`` it also prints the ramp with the load split over Ray
workers beside the one-process ramp (``runner.selftest.selftest_split``).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from servelab.errors import UsageError
from servelab.runner.distributed.cluster import parse_target
from servelab.runner.selftest import CPU_BOUND_CORES, ERROR_BOUND_MS, plan, selftest_split
from servelab.runner.selftest import selftest as run_selftest
from servelab.store.selftest_file import ErrorStats, SelftestResult

if TYPE_CHECKING:
    from servelab.runner.distributed.load_selftest import SplitRamp


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
    ray: str | None = typer.Option(
        None, "--ray", help="also ramp with the load split over Ray nodes: local:N or HOST:PORT"
    ),
    workers: int | None = typer.Option(
        None, "--workers", help="with --ray: client workers, one per node (default: every node)"
    ),
) -> None:
    """Measure servelab's own timing error and ceiling against a built-in mock server."""
    if max_error_ms <= 0 or max_cpu <= 0:
        raise UsageError("--max-error-ms and --max-cpu must be positive; e.g. --max-error-ms 1")
    if workers is not None and (ray is None or workers < 1):
        raise UsageError("--workers splits the ramp over Ray nodes: give --ray and a count >= 1")
    if ray is not None:
        parse_target(ray)  # a wrong value is a one-line error before anything starts
    steps = plan(quick)
    total = len(steps.accuracy) + len(steps.ramp) * (2 if ray else 1) + (1 if ray else 0)
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

    split: SplitRamp | None = None
    with bar:
        if ray is None:
            result = run_selftest(
                quick=quick, error_bound_ms=max_error_ms, cpu_bound_cores=max_cpu,
                progress=tell, save=save,
            )  # fmt: skip
        else:
            result, split = selftest_split(
                ray=ray, workers=workers, quick=quick, error_bound_ms=max_error_ms,
                cpu_bound_cores=max_cpu, progress=tell, save=save,
            )  # fmt: skip
        bar.update(task, completed=total)
    if as_json:
        data = result.to_json()
        if split is not None:
            data["ray"] = split.to_json()
        print(json.dumps(data, indent=2, sort_keys=True))
        return
    _print(result, Console())
    if split is not None:
        _print_split(result, split, Console())


def _print_split(result: SelftestResult, split: SplitRamp, out: Console) -> None:
    """The two ramps side by side, the workers' clock offsets, and the two ceilings."""
    n = len(split.workers)
    t = Table(title=f"ceiling: one client process vs {n} Ray workers ({split.address})")
    for col in ("streams", "1 process tok/s", "kept up", f"{n} workers tok/s", "kept up",
                "busiest worker CPU", "arrival p99 ms"):  # fmt: skip
        t.add_column(col, justify="right")
    one = {s.streams: s for s in result.steps}
    many = {s.streams: s for s in split.steps}
    for streams in sorted(one.keys() | many.keys()):
        a, b = one.get(streams), many.get(streams)
        t.add_row(
            str(streams),
            f"{a.tokens_per_s:,.0f}" if a else "-", _yes(a.kept_up) if a else "-",
            f"{b.tokens_per_s:,.0f}" if b else "-", _yes(b.kept_up) if b else "-",
            f"{b.cpu_cores:.2f}" if b else "-", _ms(b.arrival_ms.p99) if b else "-",
        )  # fmt: skip
    out.print(t)
    offsets = ", ".join(
        f"{label} {w.offset_s * 1e3:+.3f} ms (rtt {w.rtt_s * 1e3:.3f} ms)"
        for label, w in split.workers.items()
    )
    out.print(f"worker clock offsets to this process: {offsets}", soft_wrap=True)
    out.print(_ceiling_line(result), soft_wrap=True)
    c = split.ceiling
    line = (f"ceiling over {n} Ray workers: none found ({c.limited_by})" if c.tokens_per_s is None
            else f"ceiling over {n} Ray workers: {c.tokens_per_s:,.0f} tok/s at "
                 f"{_streams(c.streams)}; stopped at {c.limited_by}")  # fmt: skip
    out.print(line, soft_wrap=True)
    if split.address.startswith("local:"):
        out.print("note: the workers of a local cluster share this machine's cores with each "
                  "other and the mock server: this shows the method, not a bigger machine",
                  soft_wrap=True)  # fmt: skip


def _yes(kept_up: bool) -> str:
    return "yes" if kept_up else "no"


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
