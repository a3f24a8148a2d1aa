"""``servelab quality``: quality measurements added to a finished run directory.

Owns parsing and printing for ``quality ppl``; the work is ``servelab.runner.quality.run_ppl``.
Must not catch servelab errors (``cli.main`` turns them into one line and an exit code).
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from servelab.runner.quality import DEFAULT_CTX, RichPplReporter, run_ppl
from servelab.store.perplexity import PerplexityDoc

quality_app = typer.Typer(help="Measure output quality of a run's arms.", no_args_is_help=True)


@quality_app.command("ppl")
def ppl_cmd(
    run_dir: Path = typer.Argument(..., help="an experiment's run directory"),
    ctx: int = typer.Option(DEFAULT_CTX, "--ctx", help="tokens per chunk (-c of llama-perplexity)"),
    keep_logits: bool = typer.Option(
        False, "--keep-logits", help="keep the baseline's logits file (~190 MB) in quality/"
    ),
    force: bool = typer.Option(False, "--force", help="measure again even if ppl.json is done"),
) -> None:
    """Perplexity of every llama.cpp arm on a packaged public-domain text, and each arm's KL
    divergence from the baseline arm's logits; writes RUN_DIR/quality/ppl.json."""
    console = Console()
    doc = run_ppl(
        run_dir, ctx=ctx, force=force, keep_logits=keep_logits,
        reporter=RichPplReporter(Console(stderr=True)),
    )  # fmt: skip
    console.print(ppl_table(doc))
    console.print(f"results: {run_dir / 'quality' / 'ppl.json'}")


def ppl_table(doc: PerplexityDoc) -> Table:
    text = doc.text
    table = Table(
        title=f"perplexity, {text.name} (sha256 {text.sha256[:12]}), ctx {doc.ctx}",
        caption=f"KLD in nats against baseline arm {doc.baseline}; lower is closer",
    )
    for col in ("arm", "KV k/v", "PPL", "KLD mean", "KLD p99", "same top p", "seconds"):
        table.add_column(col, justify="left" if col in ("arm", "KV k/v") else "right")
    for arm, r in doc.arms.items():
        kld = r.kld
        table.add_row(
            arm + (" (baseline)" if arm == doc.baseline else ""),
            f"{r.cache_type_k}/{r.cache_type_v}",
            f"{r.ppl:.4f} ± {r.ppl_err:.4f}",
            f"{kld['mean']:.6f} ± {kld['mean_err']:.6f}" if kld else "-",
            f"{kld['p99']:.6f}" if kld and "p99" in kld else "-",
            f"{kld['same_top_p_pct']:.2f} %" if kld and "same_top_p_pct" in kld else "-",
            f"{r.seconds:.1f}",
        )
    for arm, reason in doc.skipped.items():
        table.add_row(arm, "-", "skipped", reason, "", "", "")
    return table
