"""``servelab ready ROLE``: may the role's promoted configuration start on this machine now?

Prints every readiness finding (``runner/readiness.py``) as a table, or as JSON with
``--json``; exits 0 when ready, else prints one line per blocking finding on stderr and exits 3
(``EnvironmentProblem``: the machine is not ready). An unknown role exits 2.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from servelab.cli.promote_cmd import REGISTRY_HELP
from servelab.errors import EnvironmentProblem
from servelab.runner.promote import registry_path
from servelab.runner.readiness import Readiness, role_readiness


def readiness_table(readiness: Readiness) -> Table:
    table = Table("check", "status", "detail", "advice", title=f"readiness of {readiness.role}")
    for f in readiness.findings:
        table.add_row(f.kind, "BLOCKING" if f.blocking else "ok", f.detail, f.advice or "-")
    return table


def not_ready_lines(readiness: Readiness) -> list[str]:
    """One line per blocking finding: what is wrong and what to do."""
    return [f"not ready: {f.kind}: {f.detail}; {f.advice}" for f in readiness.blocking]


def ready(
    role: str = typer.Argument(..., help="the role whose promoted configuration would start"),
    registry: Path | None = typer.Option(None, "--registry", help=REGISTRY_HELP),
    as_json: bool = typer.Option(False, "--json", help="print the findings as one JSON object"),
) -> None:
    result = role_readiness(registry_path(registry), role)
    out = Console(highlight=False)
    if as_json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        out.print(readiness_table(result))
    if result.ready:
        if not as_json:
            out.print(f"role {role} is ready to start", markup=False)
        return
    err = Console(stderr=True, highlight=False)
    for line in not_ready_lines(result):
        err.print(f"servelab: {line}", markup=False, soft_wrap=True)
    kinds = ", ".join(dict.fromkeys(f.kind for f in result.blocking))
    raise EnvironmentProblem(
        f"role {role!r} is not ready: {len(result.blocking)} blocking finding(s) ({kinds}); "
        f"fix them, then run `servelab ready {role}` again"
    )
