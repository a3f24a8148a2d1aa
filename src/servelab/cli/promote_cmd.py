"""``servelab promote``, ``roles`` and ``verify``: from a winning arm to a runnable role."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from servelab.errors import ServelabError
from servelab.runner.promote import DEFAULT_PORT, list_roles, registry_path
from servelab.runner.promote import promote as do_promote
from servelab.runner.promote import verify as do_verify

REGISTRY_HELP = "roles registry YAML (default: $SERVELAB_REGISTRY or ./roles.yaml)"


def promote(
    run_dir: Path = typer.Argument(..., help="the experiment run directory"),
    arm: str = typer.Option(..., "--arm", help="the arm to promote"),
    role: str = typer.Option(..., "--role", help="the role it takes"),
    registry: Path | None = typer.Option(None, "--registry", help=REGISTRY_HELP),
    port: int = typer.Option(DEFAULT_PORT, "--port", help="port in the command line and unit"),
) -> None:
    result = do_promote(run_dir, arm, role, registry=registry_path(registry), port=port)
    console = Console()
    console.print(f"promoted {arm} to role {role}: {result.record}", markup=False)
    if result.command is not None:
        console.print(f"command line: {result.command}", markup=False)
        console.print(result.command.read_text(encoding="utf-8").strip(), markup=False,
                      soft_wrap=True)  # fmt: skip
    if result.unit is not None:
        console.print(f"systemd unit: {result.unit}", markup=False)


def roles(registry: Path | None = typer.Option(None, "--registry", help=REGISTRY_HELP)) -> None:
    table = Table("role", "rules", "held by", "since", "run")
    for r in list_roles(registry_path(registry)):
        holder = r.holder
        table.add_row(
            r.role, "\n".join(r.rules) or "-", holder.arm if holder else "-",
            holder.promoted_utc if holder else "-", (holder.run_id if holder else None) or "-",
        )  # fmt: skip
    Console().print(table)


def verify(
    role: str = typer.Argument(..., help="the role whose promoted configuration to re-run"),
    registry: Path | None = typer.Option(None, "--registry", help=REGISTRY_HELP),
    requests: int = typer.Option(
        12, "--requests", "-n", help="measured requests in all, split over the blocks"
    ),
    blocks: int = typer.Option(
        3, "--blocks", help="fresh engine starts to split them over (2 or more for a verdict)"
    ),
    out: Path | None = typer.Option(None, "--out", "-o", help="directory for the new runs"),
    force: bool = typer.Option(
        False, "--force", help="verify even when a readiness finding blocks (it is recorded)"
    ),
) -> None:
    from servelab.cli.ready_cmd import not_ready_lines

    result = do_verify(registry_path(registry), role, requests=requests, blocks=blocks, out=out,
                       force=force)  # fmt: skip
    console = Console()
    if result.readiness is not None:
        for line in not_ready_lines(result.readiness):
            console.print(f"forced past: {line}", markup=False, soft_wrap=True)
    for c in result.summary.comparisons:
        console.print(f"{c.metric} ({c.statistic}): {c.summary or c.verdict}", markup=False)
    for note in result.notes:
        console.print(f"note: {note}", markup=False)
    console.print(f"report: {result.compare_dir / 'report.md'}", markup=False)
    if result.regressions:
        raise ServelabError(
            f"role {role!r} regressed against its promoted evidence: {result.regressions[0]}"
            + (f" (and {len(result.regressions) - 1} more)" if len(result.regressions) > 1 else "")
        )
