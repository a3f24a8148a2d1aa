"""llama.cpp's ``llama-perplexity``: its argument list, running it, and reading its output.

Owns three things: building the argv that reproduces an arm's numerics (model, KV-cache types,
flash attention, threads, micro-batch) for ``llama-perplexity``; running it from that list (never
a shell) with its output appended to a log file; and ``parse_perplexity_output``, a pure function
over the tool's text. Must not know about experiments, manifests or run directories (the runner
does) and must not guess the output format: the patterns below were read from
``tools/perplexity/perplexity.cpp`` of llama.cpp 0c1e57098 and checked on captured runs
(tests/fixtures/perplexity/).

Two modes. ``save`` evaluates the text and writes every token's logits to a file
(``--kl-divergence-base FILE``); it prints ``Final estimate: PPL = X +/- E``. ``kld`` reads that
file (``--kl-divergence-base FILE --kl-divergence``), evaluates the same tokens and prints
perplexity, the ratio to the base, and KL-divergence and token-probability statistics. The
tool exits 0 even when the text is too short for the context, so success is decided by the
parsed output, not the exit code alone.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from servelab.engines.process import ManagedProcess
from servelab.errors import EngineError, EngineNotInstalledError

TOOL = "llama-perplexity"
Mode = Literal["save", "kld"]
DEFAULT_BATCH_TOKENS = 2048  # llama-perplexity's own -b default: ctx 256 gives 8 sequences
_INT_OPTIONS = {"threads": "-t", "threads-batch": "-tb", "ubatch-size": "-ub", "gpu-layers": "-ngl"}
_FLASH_ATTN = ("on", "off", "auto")
_CACHE_TYPE = re.compile(r"^[a-z0-9_]+$")


# --- the argument list -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PerplexityConfig:
    """What decides an arm's perplexity numbers: the binary, the model and the KV settings."""

    binary: Path
    model: Path
    text: Path
    ctx: int
    cache_type_k: str = "f16"
    cache_type_v: str = "f16"
    flash_attn: str = "auto"
    extra: tuple[str, ...] = ()  # threads, micro-batch, offload, taken from the arm

    @property
    def batch(self) -> int:
        """Whole sequences per batch: llama-perplexity asserts ``b % c == 0`` when ``b >= c``."""
        return self.ctx * max(1, DEFAULT_BATCH_TOKENS // self.ctx)


def perplexity_binary_beside(server_binary: Path) -> Path:
    """``llama-perplexity`` from the same build as ``server_binary``: different builds would
    confound the comparison, so no other copy is taken."""
    path = server_binary.parent / TOOL
    if not path.is_file():
        raise EngineNotInstalledError(
            f"no {TOOL} beside {server_binary}; build it there "
            "(`servelab engines install llamacpp` builds it) to measure perplexity"
        )
    return path


def config_from_llama_options(
    binary: Path, model: Path, text: Path, ctx: int, options: Mapping[str, object]
) -> PerplexityConfig:
    """A config from an arm's canonical llama-server options (``{"cache-type-k": "q8_0"}``).

    Values that are help-text defaults (``"-1"``, ``"same as --threads"``) are left to the tool.
    """
    extra: list[str] = []
    for name, flag in _INT_OPTIONS.items():
        value = _int_or_none(options.get(name))
        if value is not None and value >= (0 if name == "gpu-layers" else 1):
            extra += [flag, str(value)]
    fa = str(options.get("flash-attn", "auto"))
    return PerplexityConfig(
        binary=binary, model=model, text=text, ctx=ctx,
        cache_type_k=_cache_type(options.get("cache-type-k")),
        cache_type_v=_cache_type(options.get("cache-type-v")),
        flash_attn=fa if fa in _FLASH_ATTN else "auto", extra=tuple(extra),
    )  # fmt: skip


def _int_or_none(value: object) -> int | None:
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def _cache_type(value: object) -> str:
    text = str(value or "f16").strip().lower()
    return text if _CACHE_TYPE.match(text) else "f16"


def perplexity_argv(config: PerplexityConfig, mode: Mode, logits: Path) -> list[str]:
    """The full argv: ``save`` writes the baseline's logits to ``logits``; ``kld`` compares."""
    argv = [
        str(config.binary), "-m", str(config.model), "-f", str(config.text),
        "-c", str(config.ctx), "-b", str(config.batch),
        "-ctk", config.cache_type_k, "-ctv", config.cache_type_v, "-fa", config.flash_attn,
        *config.extra, "--kl-divergence-base", str(logits),
    ]  # fmt: skip
    return [*argv, "--kl-divergence"] if mode == "kld" else argv


# --- running ---------------------------------------------------------------------------------


def run_perplexity(argv: list[str], log_path: Path, timeout_s: float, what: str) -> str:
    """Run ``argv``, appending its output to ``log_path``; returns this run's output.

    Raises a one-line ``EngineError`` naming the log when it fails or times out.
    """
    offset = log_path.stat().st_size if log_path.exists() else 0
    proc = ManagedProcess(argv, log_path)
    proc.start()
    deadline = time.monotonic() + timeout_s
    try:  # a Ctrl-C or an error here must not leave the tool running
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        code = proc.poll()
    finally:
        proc.stop(grace_s=2.0)
    with log_path.open("rb") as log:
        log.seek(offset)
        output = log.read().decode("utf-8", "replace")
    if code is None:
        raise EngineError(
            f"{TOOL} for {what} did not finish within {timeout_s:.0f} s; see {log_path}"
        )
    if code != 0:
        raise EngineError(
            f"{TOOL} for {what} exited with code {code} ({last_error(output)}); see {log_path}"
        )
    return output


def last_error(output: str) -> str:
    """The tool's last error line (its ``E`` log level), or its last line."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if re.match(r"^[\d.]+ E ", ln)]
    line = (errors or lines or ["no output"])[-1]
    return re.sub(r"^[\d.]+ [A-Z] ", "", line)


# --- the output ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PerplexityResult:
    """One run's numbers. ``kld`` holds the KL-mode statistics (KLD in nats, ``*_pct`` in %)."""

    ppl: float
    ppl_err: float
    chunks: int | None
    ctx: int | None
    kld: dict[str, float] | None


_FLOAT = r"([-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|nan|inf))"
_PM = rf"{_FLOAT}\s*(?:±|\+/-)\s*{_FLOAT}"
_FINAL = re.compile(rf"Final estimate: PPL = {_PM}")
_CHUNKS = re.compile(r"over (\d+) chunks, n_ctx=(\d+)")
_PAIRS = {
    "ppl": r"Mean PPL\(Q\)\s*:",
    "ppl_base": r"Mean PPL\(base\)\s*:",
    "ln_ppl_ratio": r"Mean ln\(PPL\(Q\)/PPL\(base\)\)\s*:",
    "ppl_ratio": r"Mean PPL\(Q\)/PPL\(base\)\s*:",
    "ppl_diff": r"Mean PPL\(Q\)-PPL\(base\)\s*:",
    "mean": r"Mean\s+KLD:",
    "mean_dp_pct": r"Mean\s+Δp:",
    "rms_dp_pct": r"RMS Δp\s*:",
    "same_top_p_pct": r"Same top p:",
}
_KLD_POINTS = {
    "Maximum": "max", "99.9%": "p99_9", "99.0%": "p99", "95.0%": "p95", "90.0%": "p90",
    "Median": "median", "10.0%": "p10", "5.0%": "p5", "1.0%": "p1", "0.1%": "p0_1",
    "Minimum": "min",
}  # fmt: skip
_KLD_POINT = re.compile(rf"^\s*(Maximum|Minimum|Median|[\d.]+%)\s+KLD:\s*{_FLOAT}\s*$", re.M)
_COR = re.compile(rf"Cor\(ln\(PPL\(Q\)\), ln\(PPL\(base\)\)\):\s*{_FLOAT}%")


def parse_perplexity_output(text: str) -> PerplexityResult:
    """Read a ``llama-perplexity`` run's output (either mode). Pure.

    Raises ``ValueError`` with the reason when the output holds no result (a failed run, or a
    text too short for the context: the tool still exits 0 then).
    """
    chunks = _CHUNKS.search(text)
    n_chunks, n_ctx = (int(chunks.group(1)), int(chunks.group(2))) if chunks else (None, None)
    kld = _parse_kld(text)
    if kld is not None:
        ppl, err = kld.pop("ppl"), kld.pop("ppl_err")
        return PerplexityResult(ppl, err, n_chunks, n_ctx, kld)
    final = _FINAL.search(text)
    if final is None:
        raise ValueError(_missing_reason(text))
    ppl, err = float(final.group(1)), float(final.group(2))
    return PerplexityResult(ppl, err, n_chunks, n_ctx, None)


def _parse_kld(text: str) -> dict[str, float] | None:
    out: dict[str, float] = {}
    for key, label in _PAIRS.items():
        match = re.search(rf"^\s*{label}\s*{_PM}\s*%?\s*$", text, re.M)
        if match:
            out[key], out[f"{key.removesuffix('_pct')}_err{_pct(key)}"] = _pair(match)
    for match in _KLD_POINT.finditer(text):
        name = _KLD_POINTS.get(match.group(1).strip())
        if name:
            out[name] = float(match.group(2))
    cor = _COR.search(text)
    if cor:
        out["cor_ln_ppl_pct"] = float(cor.group(1))
    if "ppl" not in out or "mean" not in out:
        return None
    return out


def _pct(key: str) -> str:
    return "_pct" if key.endswith("_pct") else ""


def _pair(match: re.Match[str]) -> tuple[float, float]:
    return float(match.group(1)), float(match.group(2))


def _missing_reason(text: str) -> str:
    short = re.search(r"tokenizes to only (\d+) tokens", text)
    need = re.search(r"you need at least (\d+) tokens", text)
    if short and need:
        return (
            f"the text has {short.group(1)} tokens but the context needs {need.group(1)}; "
            "choose a smaller --ctx"
        )
    if "chunk" in text and "KL Divergence" in text:
        return "too few tokens for KL-divergence statistics (the tool needs 100); lower --ctx"
    return f"no perplexity result in the output ({last_error(text)})"


def is_finite_result(result: PerplexityResult) -> bool:
    return math.isfinite(result.ppl) and result.ppl > 0
