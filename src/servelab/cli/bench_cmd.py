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

DEFAULT_MODEL = "smollm2-135m-instruct"
FLAGS = {"kind": "--engine", "request_timeout_s": "--timeout", "engine": "--engine"}
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
    requests: int = typer.Option(20, "--requests", "-n", help="measured requests"),
    concurrency: int = typer.Option(1, "--concurrency", "-c", help="requests in flight"),
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
        requests=requests, concurrency=concurrency, warmup=warmup, max_tokens=max_tokens,
        temperature=temperature, seed=seed, ignore_eos=ignore_eos, name=name,
        request_timeout_s=timeout, max_failure_rate=max_failure_rate,
    )  # fmt: skip
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
    console.print(f"results: {result.run_dir.root}", markup=False)
    check_request_failures(arms, config.max_failure_rate, result.run_dir.root,
                           label="{}")  # fmt: skip


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
