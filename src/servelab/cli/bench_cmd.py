"""``servelab bench``: parse options into a ``BenchConfig``, run it, print the summary."""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from pathlib import Path

import typer
from pydantic import ValidationError
from rich.console import Console

from servelab.analysis.request_failures import check_request_failures
from servelab.cli.errors import validation_to_usage
from servelab.engines.registry import engine_class
from servelab.errors import UsageError
from servelab.report.bench_table import failure_lines, summary_table, warning_lines
from servelab.runner.bench import run_bench
from servelab.runner.progress import NullReporter, Reporter, RichReporter
from servelab.spec.bench import BenchConfig
from servelab.spec.engine import OWNED_OPTIONS, EngineConfig, bind_warning
from servelab.spec.limits import DEFAULT_MAX_FAILURE_RATE
from servelab.stats.capacity import GoodputLevel
from servelab.store.summary import OpenLoopFigures

DEFAULT_MODEL = "smollm2-135m-instruct"
FLAGS = {
    "kind": "--engine", "request_timeout_s": "--timeout", "engine": "--engine",
    "max_concurrency": "--max-concurrency", "slos": "--slo", "time_scale": "--time-scale",
    "ray": "--ray", "workers": "--workers",
}  # fmt: skip
BIND_HELP = "llamacpp: address to listen on; not loopback: reachable from other machines"


def _split_flags(flags: str) -> tuple[str, ...]:
    try:
        return tuple(shlex.split(flags))
    except ValueError as exc:
        raise UsageError(f"--flags: cannot split {flags!r} ({exc}); check its quotes") from exc


def bench(
    engine: str = typer.Option(
        "llamacpp", "--engine", help="llamacpp (managed), openai, or replay (recorded streams)"
    ),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="model name or GGUF path"),
    flags: str = typer.Option("", "--flags", help='extra engine flags, e.g. "-fa on -ctk q8_0"'),
    endpoint: str | None = typer.Option(None, "--endpoint", help="openai: base URL"),
    api_key_env: str | None = typer.Option(
        None, "--api-key-env", help="openai: name of the env var holding the API key"
    ),
    binary: str | None = typer.Option(None, "--binary", help="llamacpp: your own llama-server"),
    port: int | None = typer.Option(None, "--port", help="llamacpp: port (default: a free one)"),
    bind: str = typer.Option("127.0.0.1", "--bind", help=BIND_HELP),
    host: str | None = typer.Option(None, "--host", hidden=True, help="refused: use --bind"),
    workload: str = typer.Option("chat-tools", "--workload", "-w", help="built-in name or file"),
    system_prompt: str | None = typer.Option(
        None, "--system-prompt", help="one of the workload's named system prompts (systems:)"
    ),
    requests: int = typer.Option(20, "--requests", "-n", help="measured requests (per block)"),
    blocks: int = typer.Option(
        1, "--blocks", help="closed loop: repeat on this many fresh engine starts (default 1)"
    ),
    concurrency: int = typer.Option(1, "--concurrency", "-c", help="requests in flight"),
    rate: float | None = typer.Option(
        None, "--rate", help="open loop: requests per second, sent on schedule (seeded by --seed)"
    ),
    arrival: str = typer.Option("poisson", "--arrival", help="open loop: poisson|constant|gamma"),
    burstiness: float = typer.Option(
        1.0, "--burstiness", help="gamma arrivals: shape (<1 burstier, 1 = poisson, >1 regular)"
    ),
    max_concurrency: int | None = typer.Option(
        None, "--max-concurrency", help="open loop: cap on requests in flight (default: none)"
    ),
    trace: str | None = typer.Option(
        None, "--trace", help="replay a JSONL trace (arrival, prompt, output length) instead"
    ),
    time_scale: float = typer.Option(
        1.0, "--time-scale", help="trace: speed-up (2 = twice as fast, 0.5 = half)"
    ),
    slo: list[str] | None = typer.Option(
        None, "--slo", help='per-request SLO, repeatable, e.g. "ttft_s.p90<=0.3"'
    ),
    warmup: int = typer.Option(2, "--warmup", help="warm-up requests, not measured"),
    max_tokens: int = typer.Option(128, "--max-tokens", help="output limit per request"),
    temperature: float = typer.Option(0.0, "--temperature"),
    seed: int = typer.Option(0, "--seed"),
    ignore_eos: bool = typer.Option(False, "--ignore-eos", help="generate exactly max tokens"),
    prefix_cache: bool = typer.Option(False, "--prefix-cache", help="allow prompt caching"),
    unique_prefix: bool = typer.Option(
        False, "--unique-prefix", help="prefix each prompt with a unique id (defeats caches)"
    ),
    chunk_timings: bool = typer.Option(
        False, "--chunk-timings", help="llamacpp: exact tokens per chunk (costs ~1 % decode)"
    ),
    timeout: float = typer.Option(300.0, "--timeout", help="seconds allowed per request"),
    max_failure_rate: float = typer.Option(
        DEFAULT_MAX_FAILURE_RATE,
        "--max-failure-rate",
        help="exit 8 when more than this share of measured requests fails",
    ),
    ray: str | None = typer.Option(
        None, "--ray", help="send the measured requests from Ray nodes: local:N or HOST:PORT"
    ),
    workers: int | None = typer.Option(
        None, "--workers", help="with --ray: client workers, one per node (default: every node)"
    ),
    name: str = typer.Option("bench", "--name", help="run name (directory prefix)"),
    out: Path | None = typer.Option(None, "--out", "-o", help="run directory to create"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress display"),
) -> None:
    if host is not None:
        raise UsageError(f"bench: --host is refused: {OWNED_OPTIONS['--host']}")
    config = _config(
        engine=engine, model=model, flags=_split_flags(flags), endpoint=endpoint,
        api_key_env=api_key_env, binary=binary, port=port, bind=bind, prefix_cache=prefix_cache,
        unique_prefix=unique_prefix, chunk_timings=chunk_timings, workload=workload,
        system_prompt=system_prompt,
        requests=requests, blocks=blocks, concurrency=concurrency, warmup=warmup,
        max_tokens=max_tokens, temperature=temperature, seed=seed, ignore_eos=ignore_eos, name=name,
        request_timeout_s=timeout, max_failure_rate=max_failure_rate, rate=rate, arrival=arrival,
        burstiness=burstiness, max_concurrency=max_concurrency, slos=tuple(slo or ()),
        trace=trace, time_scale=time_scale, ray=ray, workers=workers,
    )  # fmt: skip
    if ray is not None:
        from servelab.runner.distributed.cluster import parse_target

        parse_target(ray)  # a wrong value is a one-line error before anything starts
    warn_bind([config.engine])
    reporter: Reporter = NullReporter() if quiet else RichReporter()
    result = run_bench(config, out=out, reporter=reporter)
    console = Console()
    arms = result.summary.arms
    for arm, arm_summary in arms.items():
        console.print(summary_table(arm, arm_summary))
        for line in failure_lines(arm_summary):
            console.print(f"[red]failed[/] {line}")
        for line in warning_lines(arm_summary):
            console.print(f"[yellow]note[/] {line}")
    for line, behind in open_loop_lines(result.summary.open_loop):
        console.print(f"[yellow]note[/] {line}" if behind else line, markup=behind)
    if result.summary.goodput is not None:
        console.print(goodput_line(result.summary.goodput), markup=False)
    console.print(f"results: {result.run_dir.root}", markup=False)
    check_request_failures(arms, config.max_failure_rate, result.run_dir.root,
                           label="{}")  # fmt: skip


def open_loop_lines(f: OpenLoopFigures | None) -> list[tuple[str, bool]]:
    """The open loop's rates and lag, then what fell behind (flagged True)."""
    if f is None:
        return []
    achieved = f"{f.achieved_rps:.3g}" if f.achieved_rps is not None else "-"
    lag = " ".join(
        f"{name} {v * 1e3:.1f} ms" for name, v in (("p50", f.lag_p50_s), ("p99", f.lag_p99_s))
        if v is not None
    )  # fmt: skip
    lines = [(f"open loop: requested {f.requested_rps:g} req/s, achieved {achieved} req/s "
              f"over {f.n_sent} sends; lag behind schedule {lag}", False)]  # fmt: skip
    if f.detail:
        lines.append((f"{f.behind}: {f.detail}", True))
    return lines


def goodput_line(g: GoodputLevel) -> str:
    """``goodput 1.8 req/s: 36 of 40 requests met every SLO; ttft_s.p90<=0.3 holds (0.21)``."""
    rate = f"{g.goodput_rps:.3g} req/s" if g.goodput_rps is not None else "-"
    holds = "; ".join(
        f"{text} {'holds' if g.holds.get(text) else 'missed'}"
        + (f" ({value:.3g})" if value is not None else "")
        for text, value in g.statistic.items()
    )
    return f"goodput {rate}: {g.n_good} of {g.n_requests} requests met every SLO; {holds}"


def warn_bind(engines: Iterable[EngineConfig]) -> None:
    """A warning line on stderr, even with --quiet, per address that other machines can reach."""
    found = {w for e in engines if engine_class(e.kind).managed and (w := bind_warning(e.bind))}
    for warning in sorted(found):
        Console(stderr=True).print(f"servelab: warning: {warning}", markup=False, soft_wrap=True)


def _config(**kw: object) -> BenchConfig:
    engine_keys = (
        "engine", "model", "flags", "endpoint", "api_key_env", "binary", "port", "bind",
        "prefix_cache", "unique_prefix", "chunk_timings",
    )  # fmt: skip
    engine_kw = {k: kw.pop(k) for k in engine_keys}
    engine_kw["kind"] = engine_kw.pop("engine")
    try:
        engine = EngineConfig.model_validate(engine_kw)
        return BenchConfig.model_validate({"engine": engine, **kw})
    except ValidationError as exc:
        raise validation_to_usage(exc, "bench", FLAGS) from exc
