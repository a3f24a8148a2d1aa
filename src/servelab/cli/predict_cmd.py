"""``servelab predict``: theory before measurement for one model, configuration and machine.

Owns parsing the options, finding the architecture and the hardware, and printing the
prediction as tables or, with ``--json``, as the stable JSON of docs/predict-json.md. The work
is the library function ``servelab.predict`` (servelab/prediction.py); the arithmetic is
``servelab.theory.predict``. Must not catch servelab errors.
"""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from servelab.errors import UsageError
from servelab.prediction import predict as run_prediction
from servelab.theory.arch import Architecture
from servelab.theory.predict import PredictInput, Prediction, prediction_to_json

MIB = 1024 * 1024


def predict(
    model: str = typer.Argument(
        ..., help="registry model, GGUF file, config.json (or its folder) or architecture .yaml"
    ),
    hw: str = typer.Option(
        "auto", "--hw", help="hardware name; 'auto' = the local NVIDIA GPU; 'none' = no ceilings"
    ),
    ctx: int = typer.Option(4096, "--ctx", help="context per sequence (tokens per slot)"),
    kv: str | None = typer.Option(None, "--kv", help="K and V cache type (q8_0, f16, 3.5, ...)"),
    kv_k: str = typer.Option("f16", "--kv-k", help="K cache type (-ctk)"),
    kv_v: str = typer.Option("f16", "--kv-v", help="V cache type (-ctv)"),
    parallel: int = typer.Option(1, "--parallel", help="parallel sequences (-np)"),
    position: int | None = typer.Option(
        None, "--position", help="decode position for KV reads (default: --ctx)"
    ),
    spec_k: int | None = typer.Option(None, "--spec-k", help="draft length K"),
    accept: float | None = typer.Option(None, "--accept", help="per-token acceptance 0..1"),
    draft_cost: float = typer.Option(
        0.0, "--draft-cost", help="draft cost per token relative to one target step"
    ),
    weight_bits: float | None = typer.Option(
        None, "--weight-bits", help="bits per weight for config.json / YAML sources"
    ),
    as_json: bool = typer.Option(False, "--json", help="print the JSON form"),
) -> None:
    """Predict KV memory, decode/prefill ceilings, MoE batch scaling and spec-decode speedup."""
    if kv is not None and (kv_k, kv_v) != ("f16", "f16"):
        raise UsageError("give --kv, or --kv-k / --kv-v, not both")
    inputs = PredictInput(
        ctx_per_slot=ctx, parallel=parallel, kv_k=kv or kv_k, kv_v=kv or kv_v,
        position=position, spec_k=spec_k, accept=accept, draft_cost=draft_cost,
    )  # fmt: skip
    result = run_prediction(model, inputs, hardware=hw, weight_bits=weight_bits)
    if as_json:
        print(json.dumps(prediction_to_json(result), indent=2, sort_keys=True))
        return
    _print(result)


def _mib(n: float) -> str:
    return f"{n / MIB:,.2f} MiB"


def _model_table(a: Architecture) -> Table:
    t = Table(title=f"model {a.name} ({a.source}, {a.arch or 'custom'})", show_header=False)
    t.add_row("layers / embedding / vocab", f"{a.n_layer} / {a.n_embd} / {a.n_vocab or '?'}")
    t.add_row("heads / KV heads / head K,V", f"{a.n_head} / {a.n_head_kv} / "
              f"{a.head_dim_k},{a.head_dim_v}")  # fmt: skip
    if a.sliding_window:
        t.add_row("sliding window", f"{a.sliding_window} on {len(a.sliding_layers)} layers")
    if a.shared_kv_layers:
        t.add_row("shared-KV layers", ", ".join(map(str, a.shared_kv_layers)))
    if a.recurrent:
        t.add_row("recurrent layers", f"{len(a.recurrent_layers)} (state "
                  f"{a.recurrent.conv_elements}+{a.recurrent.state_elements} f32)")  # fmt: skip
    if a.moe:
        m = a.moe
        t.add_row("MoE", f"{m.n_expert} experts, {m.n_expert_used} used, {m.n_shared_expert} "
                  f"shared, expert FFN {m.expert_ffn}, {m.moe_layers} MoE layers")  # fmt: skip
    if a.weights:
        w = a.weights
        t.add_row("weights", f"non-expert {_mib(w.non_expert_bytes)}, one expert "
                  f"{_mib(w.expert_bytes)}, output head {_mib(w.output_head_bytes)} "
                  f"({w.source})")  # fmt: skip
    return t


def _kv_table(p: Prediction) -> Table:
    i = p.inputs
    t = Table(title=f"KV cache (llama.cpp, -c {i.ctx_per_slot * i.parallel} -np {i.parallel} "
              f"-ctk {i.kv_k} -ctv {i.kv_v})")  # fmt: skip
    for col in ("group", "layers", "cells", "streams", "K", "V", "total"):
        t.add_column(col, justify="left" if col == "group" else "right")
    for g in p.kv.groups:
        t.add_row(g.kind, str(len(g.layers)), str(g.cells), str(g.streams), _mib(g.k_bytes),
                  _mib(g.v_bytes), _mib(g.total_bytes))  # fmt: skip
    t.add_row("all", "", "", "", "", "", _mib(p.kv.total_bytes))
    return t


def _roofline_table(p: Prediction) -> Table:
    s, hw = p.single, p.hardware
    t = Table(
        title=f"decode at position {p.inputs.decode_position} on "
        f"{hw.name if hw else 'no hardware (give --hw NAME)'}",
        show_header=False,
    )
    t.add_row("bytes per token", f"{_mib(s.total_bytes)} = non-expert "
              f"{_mib(s.non_expert_bytes)} + experts {_mib(s.expert_bytes)} + head "
              f"{_mib(s.output_head_bytes)} + KV {_mib(s.kv_bytes)}")  # fmt: skip
    if p.decode_ceiling_tps is not None:
        t.add_row("single-stream decode ceiling", f"{p.decode_ceiling_tps:,.1f} tok/s")
    if p.prefill_ceiling_tps is not None:
        t.add_row("prefill compute ceiling", f"{p.prefill_ceiling_tps:,.0f} tok/s")
    return t


def _batch_table(p: Prediction) -> Table:
    t = Table(title="batch scaling (all sequences decoding)")
    for col in ("B", "N(B) experts", "aggregate tok/s", "per-seq tok/s", "bound"):
        t.add_column(col, justify="right")
    for b in p.batch:
        t.add_row(str(b.batch), f"{b.distinct_experts:.1f}", f"{b.aggregate_tps:,.0f}",
                  f"{b.per_seq_tps:,.1f}", b.bound)  # fmt: skip
    return t


def _spec_lines(p: Prediction) -> list[str]:
    s = p.spec
    if s is None:
        return []
    even = (
        "never (costs more than it yields at 100 %)"
        if s.break_even_accept is None
        else (f"{s.break_even_accept:.3f}")
    )
    return [
        f"spec decoding K={s.k} a={s.accept} c={s.draft_cost}: {s.tokens_per_step:.2f} tokens "
        f"per verify step, verify cost r={s.verify_cost:.3f}, speedup {s.speedup:.2f}x",
        f"break-even acceptance at K={s.k}: {even}; best K at a={s.accept}: {s.best_k} "
        f"({s.best_speedup:.2f}x)",
    ]


def _print(p: Prediction) -> None:
    console = Console()
    console.print(_model_table(p.arch))
    console.print(_kv_table(p))
    console.print(_roofline_table(p))
    if p.batch and (p.arch.moe or p.inputs.parallel > 1):
        console.print(_batch_table(p))
    for line in _spec_lines(p):
        console.print(line)
