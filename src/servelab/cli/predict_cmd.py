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
from servelab.theory.server_flags import equivalent_flags, server_settings

MIB = 1024 * 1024


CTX_HELP = (
    "context PER SLOT in tokens (default 4096); llama-server's -c is the TOTAL the slots share "
    "= --ctx x --parallel. To give llama-server's own -c, use --flags"
)
PARALLEL_HELP = (
    "slots (llama-server -np; default 1 here; llama-server's own default is auto: 4 slots "
    "sharing one unified cache)"
)
FLAGS_HELP = (
    "llama-server's own flags, read as llama-server reads them: -c is the TOTAL context (0 or "
    "none = the model's trained context), -np (default auto), -ctk/-ctv, -kvu, -b/-ub, "
    "--swa-full, -fa. Not with --ctx/--parallel/--kv*"
)


def predict(
    model: str = typer.Argument(
        ..., help="registry model, GGUF file, config.json (or its folder) or architecture .yaml"
    ),
    hw: str = typer.Option(
        "auto", "--hw", help="hardware name; 'auto' = the local NVIDIA GPU; 'none' = no ceilings"
    ),
    flags: str | None = typer.Option(None, "--flags", help=FLAGS_HELP),
    ctx: int | None = typer.Option(None, "--ctx", help=CTX_HELP),
    kv: str | None = typer.Option(None, "--kv", help="K and V cache type (q8_0, f16, 3.5, ...)"),
    kv_k: str | None = typer.Option(None, "--kv-k", help="K cache type (-ctk; default f16)"),
    kv_v: str | None = typer.Option(None, "--kv-v", help="V cache type (-ctv; default f16)"),
    parallel: int | None = typer.Option(None, "--parallel", help=PARALLEL_HELP),
    position: int | None = typer.Option(
        None, "--position", help="decode position for KV reads (default: a full slot)"
    ),
    spec_k: int | None = typer.Option(None, "--spec-k", help="draft length K"),
    accept: float | None = typer.Option(None, "--accept", help="per-token acceptance 0..1"),
    draft_cost: float = typer.Option(
        0.0, "--draft-cost", help="draft cost per token relative to one target step"
    ),
    weight_bits: float | None = typer.Option(
        None, "--weight-bits", help="bits per weight for config.json / YAML sources"
    ),
    draft: str | None = typer.Option(
        None,
        "--draft",
        help="draft model (name or GGUF): c and r from the profile's timing of "
        "this target with it (`servelab calibrate MODEL --draft DRAFT`)",
    ),
    profile: str = typer.Option(
        "auto",
        "--profile",
        help="hardware calibration: 'auto' (stored by `servelab calibrate`, if any), a profile "
        "JSON file, or 'none' (datasheet bandwidth)",
    ),
    as_json: bool = typer.Option(False, "--json", help="print the JSON form"),
) -> None:
    """Predict KV memory, decode/prefill ceilings, MoE batch scaling and spec-decode speedup."""
    _refuse_mixed(flags, ctx=ctx, parallel=parallel, kv=kv, kv_k=kv_k, kv_v=kv_v)
    if kv is not None and (kv_k or kv_v):
        raise UsageError("give --kv, or --kv-k / --kv-v, not both")
    inputs = PredictInput(
        ctx_per_slot=ctx if ctx is not None else 4096, parallel=parallel or 1,
        kv_k=kv or kv_k or "f16", kv_v=kv or kv_v or "f16", position=position, spec_k=spec_k,
        accept=accept, draft_cost=draft_cost,
    )  # fmt: skip
    result = run_prediction(
        model,
        inputs,
        hardware=hw,
        weight_bits=weight_bits,
        flags=flags,
        profile=profile,
        draft=draft,
    )
    if as_json:
        print(json.dumps(prediction_to_json(result), indent=2, sort_keys=True))
        return
    _print(result)


def _refuse_mixed(flags: str | None, **given: object) -> None:
    mixed = [f"--{k.replace('_', '-')}" for k, v in given.items() if v is not None]
    if flags is not None and mixed:
        raise UsageError(
            f"--flags already holds llama-server's -c/-np/-ctk/-ctv; drop {', '.join(mixed)} "
            "(or write them into --flags: -c TOTAL -np N -ctk T -ctv T)"
        )


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
    flags = equivalent_flags(i.total_ctx, i.parallel, i.kv_k, i.kv_v, unified=i.unified)
    t = Table(title=f"KV cache (llama-server {flags})")
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


def _settings_lines(i: PredictInput) -> list[str]:
    """What the context numbers mean, in llama-server's terms."""
    flags = equivalent_flags(i.total_ctx, i.parallel, i.kv_k, i.kv_v, unified=i.unified)
    if i.server_flags is None:
        return [
            f"--ctx {i.ctx_per_slot} is the context PER SLOT; with --parallel {i.parallel} that "
            f"is llama-server `{flags}` (its -c is the total the slots share)"
        ]
    shared = "shared by all slots (unified)" if i.unified else "per slot"
    lines = [
        f"llama-server flags {i.server_flags.given!r} read as: `{flags}`; -c {i.total_ctx} "
        f"total, {i.parallel} slots, {i.ctx_per_slot} tokens per slot, cache {shared}"
    ]
    return lines + [f"  note: {n}" for n in server_settings(i.server_flags).notes]


def _print(p: Prediction) -> None:
    console = Console()
    console.print(_model_table(p.arch))
    for line in _settings_lines(p.inputs):
        console.print(line, markup=False, highlight=False)
    console.print(_kv_table(p))
    console.print(_roofline_table(p))
    if p.batch and (p.arch.moe or p.inputs.parallel > 1):
        console.print(_batch_table(p))
    for line in _spec_lines(p):
        console.print(line)
    if p.profile is not None:
        console.print(f"profile: {p.profile.name} (measured step cost and bandwidth)")
