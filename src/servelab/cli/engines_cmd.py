"""``servelab engines``: build llama.cpp from PyPI and list what is installed.

Owns parsing and printing for the engine commands; the work is in ``servelab.engines.install``
(building) and ``servelab.engines.installed`` (what is installed).
Must not catch servelab errors (``cli.main`` turns them into one line and an exit code).
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from servelab.engines.install import install_llamacpp
from servelab.engines.installed import (
    USER_BINARY_ENV,
    cpu_key,
    engines_root,
    list_installed,
    preferred_engine,
    probe_version,
)

engines_app = typer.Typer(help="Install and list inference engines.", no_args_is_help=True)


class EngineKind(StrEnum):
    llamacpp = "llamacpp"


@engines_app.command("install")
def install_cmd(
    kind: Annotated[EngineKind, typer.Argument(help="the engine to build (only llamacpp for now)")],
    cuda: bool | None = typer.Option(
        None, "--cuda/--cpu", help="force the backend; default: CUDA only with nvcc and a GPU"
    ),
    force: bool = typer.Option(False, "--force", help="rebuild even if already installed"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show a progress bar"),
) -> None:
    """Build llama.cpp's llama-server, llama-bench, llama-perplexity and llama-quantize from the
    llama-cpp-python sdist into the servelab cache (about 5 minutes on 2 cores)."""
    engine = install_llamacpp(cuda=cuda, force=force, progress=progress)
    print(
        f"llama.cpp {engine.commit} ({engine.backend}, {engine.cpu_key}) ready in {engine.bin_dir}"
    )


def _user_row() -> list[str] | None:
    user = os.environ.get(USER_BINARY_ENV, "")
    if not user:
        return None
    commit = probe_version(Path(user).expanduser()) or "unknown"
    return ["llamacpp", "user", commit, "user", "-", "active, user", user]


@engines_app.command("list")
def list_cmd() -> None:
    """Show installed engines; the one servelab would run is marked active."""
    table = Table(
        title=f"installed engines (this CPU: {cpu_key()})",
        caption=f"paths under {engines_root()}; user = ${USER_BINARY_ENV}",
    )
    for col in ("kind", "version", "commit", "backend", "cpu key", "status", "path"):
        table.add_column(col, overflow="fold")
    user = _user_row()
    active = None if user else preferred_engine()
    for e in list_installed():
        mine = e.cpu_key == cpu_key()
        status = "active" if e == active else ("" if mine else "other CPU")
        table.add_row(e.kind, e.version, e.commit, e.backend, e.cpu_key, status, e.root.name)
    if user:
        table.add_row(*user)
    if table.row_count == 0:
        print("no engines installed; run `servelab engines install llamacpp`")
        return
    Console().print(table)
