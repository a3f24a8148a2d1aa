"""``servelab run``, ``resume``, ``report`` and ``compare``: experiments from the command line.

Each command calls one library function and prints the verdicts and where the report is.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from servelab.analysis.capacity import CAPACITY_METRIC
from servelab.analysis.request_failures import check_request_failures
from servelab.cli.bench_cmd import warn_bind
from servelab.errors import GatesFailed
from servelab.report.build import Report, build_report
from servelab.report.capacity_view import arm_capacity_words
from servelab.report.quality_view import arm_quality_words
from servelab.runner.compare import compare_runs
from servelab.runner.experiment import ExperimentResult, resume_experiment, run_experiment
from servelab.runner.experiment_inputs import ExperimentInputs
from servelab.runner.preflight import DEFAULT_MAX_FOREIGN_CPU
from servelab.runner.progress import ExperimentReporter, NullReporter, Reporter
from servelab.store.summary import Comparison


def _reporter(quiet: bool, total: int) -> Reporter:
    return NullReporter() if quiet else ExperimentReporter(total)


def _level(c: Comparison) -> str:
    """Where a comparison was made: `` (c=4)``, `` (2 req/s)``, `` (rate sweep)`` for capacity."""
    if c.metric == CAPACITY_METRIC:
        return " (rate sweep)"
    if c.rate_rps is not None:
        return f" ({c.rate_rps:g} req/s)"
    return f" (c={c.concurrency})" if c.concurrency != 1 else ""


def print_verdicts(report: Report, console: Console | None = None) -> None:
    console = console or Console()
    summary = report.summary
    for confound in summary.allowed_confounds:
        values = ", ".join(f"{a}: {v}" for a, v in confound.values.items())
        console.print(f"[bold red]CONFOUNDED[/] arms differ in {confound.field} ({values})",
                      markup=True, highlight=False)  # fmt: skip
    by_candidate: dict[str, list[str]] = {}
    for c in summary.comparisons:  # each against its reference (the baseline unless a source
        level = _level(c)  # named another)
        key = f"{c.candidate} vs {c.baseline}{level}"
        by_candidate.setdefault(key, []).append(str(c.summary or c.verdict))
    for heading, parts in by_candidate.items():
        if len(parts) == 1:
            console.print(f"{heading}: {parts[0]}", markup=False, highlight=False)
            continue
        console.print(f"{heading}:", markup=False, highlight=False)
        for part in parts:
            console.print(f"  {part}", markup=False, highlight=False)
    if summary.capacity is not None:
        cap = summary.capacity
        for arm, a in cap.arms.items():
            words = arm_capacity_words(arm, a, cap.confidence)
            if words:
                console.print(words, markup=False, highlight=False)
    for arm, q in (summary.quality.arms or {}).items() if summary.quality else ():
        if words := arm_quality_words(arm, q):
            console.print(words, markup=False, highlight=False)
    for arm, rules in (summary.gates or {}).items():
        bad = [r for r, res in rules.items() if not res.passed]
        status = "pass" if not bad else "FAIL " + "; ".join(bad)
        console.print(f"gates {arm}: {status}", markup=False, highlight=False)
    for w in summary.warnings:
        arm = f" [{w.arm}]" if w.arm else ""
        console.print(f"warning{arm}: {w.detail}", markup=False, highlight=False)
    console.print(f"report: {report.html}", markup=False, highlight=False)
    console.print(f"        {report.markdown}", markup=False, highlight=False)


RAY_HELP = (
    "spread the blocks over a Ray cluster: local:N (N worker nodes on this machine) or "
    "HOST:PORT of a running one (needs servelab[ray])"
)


def run(
    spec: Path = typer.Argument(..., help="experiment spec (YAML)"),
    out: Path | None = typer.Option(None, "--out", "-o", help="run directory to create"),
    allow_confound: list[str] = typer.Option(
        [], "--allow-confound", help="run although arms differ in FIELD (flagged in the report)"
    ),
    force: bool = typer.Option(False, "--force", help="run although preflight found problems"),
    max_foreign_cpu: float = typer.Option(
        DEFAULT_MAX_FOREIGN_CPU,
        "--max-foreign-cpu",
        help="preflight: share of the machine another process may use",
    ),
    ray: str | None = typer.Option(None, "--ray", help=RAY_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress display"),
) -> None:
    inputs = ExperimentInputs.load(spec, ray)  # read and resolved once, here
    parsed = inputs.spec
    warn_bind(arm.engine for arm in inputs.arms.values())
    levels = len(parsed.rate_levels or parsed.concurrency_levels)
    total = len(inputs.arms) * levels * parsed.max_blocks
    result = run_experiment(
        spec, out, allow_confound=tuple(allow_confound), force=force,
        max_foreign_cpu=max_foreign_cpu,
        reporter=_reporter(quiet, total * parsed.requests_per_block), inputs=inputs,
    )  # fmt: skip
    _finish(result)


def _finish(result: ExperimentResult) -> None:
    console = Console()
    if result.stopped_early:
        console.print(f"stopped early: {result.looks[-1].reason}", markup=False)
    report = build_report(result.run_dir.root, workload=result.workload)
    print_verdicts(report, console)
    check_request_failures(report.summary.arms, result.max_failure_rate, report.run_dir.root)
    failed = list(report.summary.gates_failed or ())
    if failed:
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        raise GatesFailed(f"gate failed: {failed[0]}{more}; see {report.markdown}")


def resume(
    run_dir: Path = typer.Argument(..., help="run directory of an unfinished experiment"),
    force: bool = typer.Option(False, "--force", help="resume although preflight found problems"),
    max_foreign_cpu: float = typer.Option(DEFAULT_MAX_FOREIGN_CPU, "--max-foreign-cpu"),
    ray: str | None = typer.Option(
        None, "--ray", help="continue on this Ray cluster (default: the one the run recorded)"
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress display"),
) -> None:
    result = resume_experiment(
        run_dir, ray=ray, force=force, max_foreign_cpu=max_foreign_cpu,
        reporter=NullReporter() if quiet else ExperimentReporter(0),
    )  # fmt: skip
    _finish(result)


def report(run_dir: Path = typer.Argument(..., help="run directory")) -> None:
    print_verdicts(build_report(run_dir))


def compare(
    run_a: Path = typer.Argument(..., help="baseline run directory"),
    run_b: Path = typer.Argument(..., help="candidate run directory"),
    arm_a: str | None = typer.Option(None, "--arm-a", help="arm of RUN_A (if it has several)"),
    arm_b: str | None = typer.Option(None, "--arm-b", help="arm of RUN_B (if it has several)"),
    out: Path | None = typer.Option(None, "--out", "-o", help="comparison directory to create"),
    allow_workload_mismatch: bool = typer.Option(False, "--allow-workload-mismatch"),
) -> None:
    run = compare_runs(
        run_a, run_b, arm_a=arm_a, arm_b=arm_b, out=out,
        allow_workload_mismatch=allow_workload_mismatch,
    )  # fmt: skip
    console = Console()
    console.print(
        "note: these runs were not interleaved; drift between them cannot be separated from "
        "the configuration effect", markup=False,
    )  # fmt: skip
    print_verdicts(build_report(run.root), console)
