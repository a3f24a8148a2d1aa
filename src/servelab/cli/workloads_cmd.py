"""``servelab workloads``: list the built-in workloads and check a workload file."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from servelab.workloads import list_builtin, load_workload

workloads_app = typer.Typer(no_args_is_help=True)


@workloads_app.command("list")
def list_cmd() -> None:
    """Show the built-in workloads with their version, size and content hash."""
    table = Table(title="built-in workloads")
    for col in ("name", "version", "prompts", "sessions", "tools", "hash", "description"):
        table.add_column(col)
    for name in list_builtin():
        w = load_workload(name)
        table.add_row(
            w.name, w.version, str(len(w.prompts)), str(len(w.sessions)), str(len(w.tools)),
            w.content_hash[:19], w.description,
        )  # fmt: skip
    Console().print(table)


@workloads_app.command("check")
def check_cmd(path: str = typer.Argument(..., help="a workload name or file")) -> None:
    """Validate a workload file; print its hash, or one line naming the bad field."""
    w = load_workload(path)
    size = f"{len(w.prompts)} prompts" if w.prompts else f"{len(w.sessions)} sessions"
    print(f"{w.name} {w.version}: {size}, {len(w.tools)} tools, {w.content_hash}")
