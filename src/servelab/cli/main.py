"""Entry point: the typer app, its sub-commands, and the error contract around them.

Owns command registration and ``main()``, which runs the app and converts servelab errors into
one-line messages with exit codes. Commands parse options, build a config, call one library
function and print its result; they hold no logic of their own.
"""

from __future__ import annotations

import contextlib
import faulthandler
import signal
import sys

import typer
from rich.console import Console

from servelab import __version__
from servelab.cli.bench_cmd import bench
from servelab.cli.calibrate_cmd import calibrate
from servelab.cli.engines_cmd import engines_app
from servelab.cli.import_cmd import import_cmd
from servelab.cli.models_cmd import models_app
from servelab.cli.predict_cmd import predict
from servelab.cli.promote_cmd import promote, roles, verify
from servelab.cli.quality_cmd import quality_app
from servelab.cli.ready_cmd import ready
from servelab.cli.run_cmd import compare, report, resume, run
from servelab.cli.selftest_cmd import selftest
from servelab.cli.signals import sigterm_as_interrupt
from servelab.cli.workloads_cmd import workloads_app
from servelab.errors import Interrupted, ServelabError
from servelab.redact import redact

app = typer.Typer(
    name="servelab",
    help="An A/B lab for LLM serving configurations.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command(help="Benchmark one engine configuration on a workload.")(bench)
app.command(help="Run an experiment spec: interleaved A/B with a verdict and a report.")(run)
app.command(help="Continue an interrupted experiment exactly where it stopped.")(resume)
app.command(help="Rebuild summary.json, report.md and report.html from a run directory.")(report)
app.command(help="Compare two existing runs with the same statistics.")(compare)
app.command(name="import", help="Turn result files from other tools into a run directory.")(
    import_cmd
)
app.command(help="Promote an arm that passed its gates to a role, with runnable artefacts.")(
    promote
)
app.command(help="List the roles of the registry and what holds each.")(roles)
app.command(help="Re-run a role's promoted configuration and check it for a regression.")(verify)
app.command(help="Check that a role's promoted configuration can start here now: port, "
            "engines, lock, GPU memory, files.")(ready)  # fmt: skip
app.command(help="Predict KV memory, ceilings and spec-decode speedup before measuring.")(predict)
app.command(help="Measure this machine with llama-bench: a hardware profile for the theory.")(
    calibrate
)
app.command(help="Measure servelab's own timing error and ceiling against a mock server.")(selftest)
app.add_typer(
    quality_app, name="quality", help="Quality measurements: perplexity and KL divergence."
)
app.add_typer(engines_app, name="engines", help="Install and list inference engines.")
app.add_typer(models_app, name="models", help="Pull and list models.")
app.add_typer(workloads_app, name="workloads", help="List and check workloads.")


def _version(value: bool) -> None:
    if value:
        print(f"servelab {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True),
) -> None:
    """servelab: measure, compare and promote LLM serving configurations."""


def main(argv: list[str] | None = None) -> int:
    err = Console(stderr=True, highlight=False)
    try:
        with sigterm_as_interrupt():  # `kill` stops a run as Ctrl-C does: rows kept, exit 130
            app(args=argv, prog_name="servelab")  # standalone: handles --help and usage errors
    except SystemExit as exc:
        if _from_keyboard(exc):  # Ctrl-C or SIGTERM before a run's own handler took over
            err.print(f"servelab: error: {INTERRUPTED_EARLY}", markup=False, soft_wrap=True)
            return Interrupted.exit_code
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except ServelabError as exc:
        err.print(f"servelab: error: {redact(str(exc))}", markup=False, soft_wrap=True)
        return exc.exit_code
    return 0


INTERRUPTED_EARLY = "interrupted (Ctrl-C or SIGTERM)"


def _from_keyboard(exc: SystemExit) -> bool:
    """Whether typer turned a ``KeyboardInterrupt`` into this exit (it raises ``Exit(130)`` from
    it and exits silently), rather than a command choosing its code."""
    cause = exc.__context__.__cause__ if exc.__context__ is not None else None
    return isinstance(cause, KeyboardInterrupt)


def entry() -> None:  # pragma: no cover - console script
    if hasattr(signal, "SIGUSR1"):  # `kill -USR1 PID` prints every thread's stack: for hangs
        with contextlib.suppress(OSError, ValueError):
            faulthandler.register(signal.SIGUSR1, all_threads=True)
    sys.exit(main())
