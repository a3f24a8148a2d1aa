"""``servelab calibrate``: measure this machine and store a hardware profile (docs/theory.md)."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from servelab.runner.calibrate import calibrate as do_calibrate
from servelab.theory.calibration import HardwareProfile, ServerPair


def calibrate(
    model: str = typer.Argument(..., help="the target model: registry name or GGUF path"),
    draft: list[str] = typer.Option([], "--draft", help="a draft model to time (repeatable)"),
    variants: str = typer.Option(
        "Q8_0,F16",
        "--variants",
        help="same-shape quantisations for the bandwidth fit; 'none': use the bandwidth this "
        "machine's profile already has",
    ),
    k_max: int = typer.Option(16, "--k-max", help="verify batches K = 1..k-max"),
    reps: int = typer.Option(3, "--reps", help="llama-bench repetitions per test"),
    tokens: int = typer.Option(64, "--tokens", help="tokens generated per decode-step test"),
    hw: str = typer.Option("auto", "--hw", help="file the profile under: auto or a name"),
    server: bool = typer.Option(
        True,
        "--server/--no-server",
        help="with --draft: also time llama-server's own speculative cycle (K = 2, 4, 8)",
    ),
    prompt_tokens: int | None = typer.Option(
        None,
        "--prompt-tokens",
        help="with --draft: prompt tokens of each llama-server timing request, as your "
        "workload's (default: a 40-token text)",
    ),
    server_tokens: int = typer.Option(
        128,
        "--server-tokens",
        help="with --draft: tokens generated per llama-server timing request, as your workload's",
    ),
    as_json: bool = typer.Option(False, "--json", help="print the profile as JSON"),
) -> None:
    given = variants.strip().lower() != "none"
    quants = tuple(v.strip() for v in variants.split(",") if v.strip()) if given else ()
    done = do_calibrate(
        model, drafts=tuple(draft), variants=quants, k_max=k_max, reps=reps, tokens=tokens,
        hardware=hw, progress=not as_json, console=Console(stderr=True), server=server,
        server_tokens=server_tokens, prompt_tokens=prompt_tokens,
    )  # fmt: skip
    if as_json:
        typer.echo(json.dumps(done.profile.to_json(), indent=2))
        return
    _print(done.profile, str(done.path))
    for pair in done.profile.pairs.values():
        Console().print(
            f"llama-server: step {pair.step_s * 1e3:.3f} ms; speculative cycle = verify(K+1) + "
            f"{pair.overhead_s * 1e3:.3f} ms + K x {pair.draft_token_s * 1e3:.3f} ms "
            f"(rms residual {pair.rms_rel_residual:.1%}){_timed_at(pair)}", markup=False,
        )  # fmt: skip


def _timed_at(pair: ServerPair) -> str:
    if pair.prompt_tokens is None or pair.gen_tokens is None:
        return ""
    return f", timed at {pair.prompt_tokens} tokens in and {pair.gen_tokens} out"


def _print(p: HardwareProfile, path: str) -> None:
    console = Console()
    s = p.step
    console.print(f"profile: {p.hardware}, engine {p.engine}: {path}", markup=False)
    console.print(
        f"step = {s.fixed_s * 1e3:.3f} ms + bytes / {s.bandwidth_bytes_s / 1e9:.1f} GB/s "
        f"(fit over {s.n_points} points, rms residual {s.rms_rel_residual:.1%}"
        f"{'; fixed cost clamped to 0' if s.clamped else ''})",
        markup=False,
    )
    if not s.memory_bound:
        console.print(
            "note: decode step time did not grow with bytes read (compute-bound steps, as on "
            "a small CPU): the bandwidth is the fastest rate seen, a lower bound; each model's "
            "fixed cost carries the rest",
            markup=False,
        )
    table = Table("model", "MiB/step", "step ms", "fixed ms", "t(K) fit", "residual", "r(K=3)",
                  "r(K=6)")  # fmt: skip
    for m in p.models.values():
        f = m.verify_fit
        r3, r6 = p.verify_cost(m.sha256, 3), p.verify_cost(m.sha256, 6)
        table.add_row(
            m.name, f"{m.bytes_per_step / 2**20:.1f}", f"{m.step_s * 1e3:.3f}",
            f"{p.fixed_seconds(m.sha256) * 1e3:.3f}",
            f"{f.a_s * 1e3:.3f} ms + {f.b_s * 1e3:.4f} ms x {'N(K)' if f.kind == 'union' else 'K'}"
            if f else "-", f"{f.rms_rel_residual:.1%}" if f else "-",
            f"{r3:.2f}" if r3 else "-", f"{r6:.2f}" if r6 else "-",
        )  # fmt: skip
    console.print(table)
    for m in p.models.values():  # one token as a batch and as a decode step: the same work
        if m.verify_s and not 2 / 3 <= m.verify_s[0] / m.step_s <= 3 / 2:
            console.print(
                f"note: {m.name}: t(1) {m.verify_s[0] * 1e3:.3f} ms vs decode step "
                f"{m.step_s * 1e3:.3f} ms; the machine was probably busy: run calibrate again "
                "on a quiet machine, or raise --reps",
                markup=False,
            )
