"""Perplexity and KL divergence of an experiment's arms: ``RUN_DIR/quality/ppl.json``.

Owns the order (the baseline arm first, saving its logits; then every other llama.cpp arm, each
compared with those logits), which arm configuration reaches ``llama-perplexity`` (model, binary,
KV-cache types, flash attention, threads: from each arm's ``effective`` fields in the manifest),
and the result file, rewritten atomically after every arm so a crash loses nothing finished.
The baseline's logits file (``quality/baseline-logits.kld``, about 190 MB for the packaged text
and a 49k vocabulary) is deleted at the end unless kept. Must not parse the tool's output (the
engine module does) or print anything except through the reporter. The file's records and
their format log are in ``servelab.store.perplexity``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Protocol

from rich.console import Console
from rich.status import Status

from servelab.engines.perplexity import (
    Mode,
    PerplexityConfig,
    config_from_llama_options,
    parse_perplexity_output,
    perplexity_argv,
    perplexity_binary_beside,
    run_perplexity,
)
from servelab.engines.registry import find_engine_class
from servelab.errors import EngineError, UsageError
from servelab.paths import write_json_atomic
from servelab.store import EffectiveValue, Manifest, read_manifest
from servelab.store.perplexity import (
    LogitsFile,
    PerplexityArm,
    PerplexityDoc,
    PerplexityText,
    read_perplexity,
)

Effective = Mapping[str, EffectiveValue]
DEFAULT_CTX = 256  # the packaged text is ~4,000 tokens (SmolLM2): 15 chunks of 256
DEFAULT_TIMEOUT_S = 900.0
TEXT_NAME = "us-founding-documents"
TEXT_LICENCE = "public domain (US founding documents and Lincoln's addresses, 1776-1865)"
LOGITS_NAME = "baseline-logits.kld"


class PplReporter(Protocol):
    def arm_started(self, arm: str, index: int, total: int, mode: Mode) -> None: ...

    def arm_done(self, arm: str, result: PerplexityArm) -> None: ...

    def note(self, text: str) -> None: ...


class NullPplReporter:
    def arm_started(self, arm: str, index: int, total: int, mode: Mode) -> None:
        pass

    def arm_done(self, arm: str, result: PerplexityArm) -> None:
        pass

    def note(self, text: str) -> None:
        pass


class RichPplReporter:
    """A spinner per arm (each takes tens of seconds on two cores), then one line per result."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self._status: Status | None = None

    def arm_started(self, arm: str, index: int, total: int, mode: Mode) -> None:
        what = "saving baseline logits" if mode == "save" else "KL divergence vs baseline"
        self._status = self.console.status(f"[{index}/{total}] {arm}: llama-perplexity, {what}")
        self._status.start()

    def arm_done(self, arm: str, result: PerplexityArm) -> None:
        if self._status is not None:
            self._status.stop()
        kld = result.kld
        extra = f", KLD {kld['mean']:.6f}" if kld else ""
        self.console.print(
            f"{arm}: PPL {result.ppl:.4f} ± {result.ppl_err:.4f}{extra} ({result.seconds:.1f} s)"
        )

    def note(self, text: str) -> None:
        self.console.print(f"note: {text}")


# --- the text --------------------------------------------------------------------------------


def text_bytes() -> bytes:
    """The packaged evaluation text (src/servelab/data/ppl/, provenance in its README.md)."""
    return resources.files("servelab").joinpath(f"data/ppl/{TEXT_NAME}.txt").read_bytes()


def text_info(data: bytes) -> PerplexityText:
    return PerplexityText(
        name=TEXT_NAME, file=f"quality/{TEXT_NAME}.txt", sha256=hashlib.sha256(data).hexdigest(),
        bytes=len(data), licence=TEXT_LICENCE,
    )  # fmt: skip


# --- the run ---------------------------------------------------------------------------------


def ppl_path(run_dir: Path) -> Path:
    return run_dir / "quality" / "ppl.json"


@dataclass
class _PplFile:
    """The document being measured; every ``save`` rewrites the file atomically."""

    path: Path
    doc: PerplexityDoc

    def update(self, **changes: object) -> None:
        self.doc = self.doc.model_copy(update=changes)

    def save(self, **changes: object) -> None:
        self.update(**changes)
        write_json_atomic(self.path, self.doc.to_json())


def run_ppl(
    run_dir: Path,
    *,
    ctx: int = DEFAULT_CTX,
    force: bool = False,
    keep_logits: bool = False,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    reporter: PplReporter | None = None,
) -> PerplexityDoc:
    """Measure every llama.cpp arm's perplexity on the packaged text, and each non-baseline arm's
    KL divergence from the baseline arm; write and return ``quality/ppl.json``.

    A finished result for the same text and ``ctx`` is returned as it is unless ``force``.
    """
    rep = reporter or NullPplReporter()
    manifest = read_manifest(run_dir)
    baseline, arms = _arms(run_dir, manifest)
    if ctx < 8:
        raise UsageError(f"--ctx {ctx} is too small; use 128 or more (default {DEFAULT_CTX})")
    data = text_bytes()
    previous = _previous(run_dir, ctx, data)
    if previous is not None and not force:
        rep.note(f"{ppl_path(run_dir)} already holds this measurement; --force measures again")
        return previous
    qdir = run_dir / "quality"
    text = qdir / f"{TEXT_NAME}.txt"
    configs, skipped = _configs(arms, text, ctx, baseline)  # refuses before writing
    out = _PplFile(ppl_path(run_dir), _new_doc(run_dir, manifest, ctx, data, skipped))
    qdir.mkdir(parents=True, exist_ok=True)
    text.write_bytes(data)
    logits = qdir / LOGITS_NAME
    logits.unlink(missing_ok=True)
    try:
        try:
            _measure_all(run_dir, out, configs, baseline, logits, timeout_s, rep)
        finally:
            out.update(logits=_logits_done(logits, keep_logits))
    except BaseException:
        out.save(status="failed")  # what finished stays; a rerun measures everything again
        raise
    out.save(status="complete")
    return out.doc


def _has_logits(eff: Effective) -> bool:
    kind = eff.get("engine.kind")
    engine = find_engine_class(kind) if isinstance(kind, str) else None
    return engine is not None and engine.has_logits


def _arms(run_dir: Path, manifest: Manifest) -> tuple[str, dict[str, Effective]]:
    if manifest.kind != "experiment":
        raise UsageError(
            f"{run_dir} is a {manifest.kind} run, not an experiment; "
            "`servelab quality ppl` needs the run directory of `servelab run SPEC`"
        )
    baseline = manifest.baseline
    arms: dict[str, Effective] = {name: a.effective for name, a in manifest.arms.items()}
    if baseline not in arms or not _has_logits(arms[baseline]):
        raise UsageError(
            f"baseline arm {baseline!r} of {run_dir} is not a llama.cpp arm; perplexity and "
            "KL divergence need the baseline's logits from llama.cpp"
        )
    return baseline, {a: arms[a] for a in manifest.arm_names}


def _previous(run_dir: Path, ctx: int, data: bytes) -> PerplexityDoc | None:
    doc = read_perplexity(ppl_path(run_dir))
    if doc is None or doc.ctx != ctx or doc.text.sha256 != text_info(data).sha256:
        return None
    return doc if doc.status == "complete" else None


def _new_doc(
    run_dir: Path, manifest: Manifest, ctx: int, data: bytes, skipped: dict[str, str]
) -> PerplexityDoc:
    return PerplexityDoc(
        run_id=run_dir.name, created_utc=datetime.now(UTC).isoformat(timespec="seconds"),
        text=text_info(data), ctx=ctx, baseline=manifest.baseline or None, status="running",
        skipped=skipped,
    )  # fmt: skip


def _configs(
    arms: dict[str, Effective], text: Path, ctx: int, baseline: str
) -> tuple[dict[str, PerplexityConfig], dict[str, str]]:
    configs: dict[str, PerplexityConfig] = {}
    skipped: dict[str, str] = {}
    for arm, eff in arms.items():
        reason = _skip_reason(eff)
        if reason is not None:
            if arm == baseline:
                raise UsageError(f"baseline arm {arm!r}: {reason}")
            skipped[arm] = reason
            continue
        binary = perplexity_binary_beside(Path(str(eff["engine.binary"])))
        options = {k.removeprefix("llama."): v for k, v in eff.items() if k.startswith("llama.")}
        configs[arm] = config_from_llama_options(
            binary, Path(str(eff["model.path"])), text, ctx, options
        )
    return configs, skipped


def _skip_reason(eff: Effective) -> str | None:
    if not _has_logits(eff):
        return f"not a llama.cpp arm (engine {eff.get('engine.kind')}); no logits to compare"
    if not eff.get("model.path") or not eff.get("engine.binary"):
        return "the manifest has no model.path or engine.binary for it"
    model = Path(str(eff["model.path"]))
    if not model.is_file():
        return f"model file {model} is missing; pull it again (`servelab models pull NAME`)"
    return None


def _logits_done(path: Path, keep: bool) -> LogitsFile:
    """Record the logits file's size, and delete it unless it is to be kept."""
    size = path.stat().st_size if path.exists() else None
    if not keep:
        path.unlink(missing_ok=True)
    return LogitsFile(path=f"quality/{path.name}", bytes=size, kept=keep)


def _measure_all(
    run_dir: Path,
    out: _PplFile,
    configs: dict[str, PerplexityConfig],
    baseline: str,
    logits: Path,
    timeout_s: float,
    rep: PplReporter,
) -> None:
    for arm, reason in out.doc.skipped.items():
        rep.note(f"skipping arm {arm}: {reason}")
    for i, (arm, config) in enumerate(configs.items(), start=1):
        mode: Mode = "save" if arm == baseline else "kld"
        rep.arm_started(arm, i, len(configs), mode)
        result = measure_arm(run_dir, arm, config, mode, logits, timeout_s)
        out.save(arms={**out.doc.arms, arm: result})
        rep.arm_done(arm, result)


def measure_arm(
    run_dir: Path, arm: str, config: PerplexityConfig, mode: Mode, logits: Path, timeout_s: float
) -> PerplexityArm:
    """One arm's llama-perplexity run, as its ``ppl.json`` entry."""
    argv = perplexity_argv(config, mode, logits)
    log = run_dir / "quality" / f"ppl-{arm}.log"
    started = time.perf_counter()
    output = run_perplexity(argv, log, timeout_s, f"arm {arm}")
    seconds = time.perf_counter() - started
    try:
        result = parse_perplexity_output(output)
    except ValueError as exc:
        raise EngineError(f"llama-perplexity for arm {arm}: {exc}; see {log}") from exc
    return PerplexityArm(
        ppl=result.ppl, ppl_err=result.ppl_err, chunks=result.chunks, ctx=result.ctx,
        kld=result.kld, mode=mode, argv=tuple(_relative(a, run_dir) for a in argv),
        log=str(log.relative_to(run_dir)), seconds=round(seconds, 3),
        cache_type_k=config.cache_type_k, cache_type_v=config.cache_type_v,
        flash_attn=config.flash_attn,
    )  # fmt: skip


def _relative(arg: str, run_dir: Path) -> str:
    """Paths inside the run directory are stored relative to it, so the directory can move."""
    path = Path(arg)
    return str(path.relative_to(run_dir)) if path.is_relative_to(run_dir) else arg
