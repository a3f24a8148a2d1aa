"""``servelab calibrate``: measure this machine with llama-bench and store a hardware profile.

Owns running the installed engine's ``llama-bench`` (``-o json``, all layers on the GPU), the
same-shape quantisation variants the bandwidth fit needs (``models.synth.synthesize``), the
profile's place on disk
(``cache_dir()/profiles/<hardware>--<engine>.json``) and finding the profile of a machine
(``load_profile``). The arithmetic (fits, r, c) is ``theory.calibration``'s; the CLI command
only parses options and prints.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from servelab.errors import EngineError, UsageError
from servelab.models.arch_files import load_architecture
from servelab.models.pull import ResolvedModel, resolve_model, sha256_file
from servelab.paths import cache_dir, write_json_atomic
from servelab.theory.calibration import (
    HardwareProfile,
    ModelCalibration,
    ServerPair,
    StepPoint,
    fit_step,
    fit_verify,
)
from servelab.theory.kvtypes import cache_type
from servelab.theory.roofline import step_bytes

HOST_CPU = "host-cpu"
QUANTS = ("Q4_0", "Q4_K_M", "Q8_0", "F16")
BenchRunner = Callable[[Sequence[str]], list[dict[str, object]]]
_TIMEOUT_S = 1800


@dataclass(frozen=True, slots=True)
class Calibration:
    """What a calibrate run left: the profile (merged with the machine's earlier one) and
    where it is stored."""

    profile: HardwareProfile
    path: Path


def profiles_dir() -> Path:
    return cache_dir() / "profiles"


def profile_hardware_name(name: str | None) -> str:
    """The profile key of a resolved hardware name: ``host-cpu (measured)`` -> ``host-cpu``."""
    return HOST_CPU if not name or name.startswith(HOST_CPU) else name


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "unknown"


def profile_path(hardware: str, engine: str) -> Path:
    return profiles_dir() / f"{_slug(hardware)}--{_slug(engine)}.json"


def read_profile(path: Path) -> HardwareProfile:
    """A profile file; unreadable or damaged is a one-line ``UsageError``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read hardware profile {path}: {exc}; give another file") from exc
    if not isinstance(data, dict):
        raise UsageError(f"{path}: not a hardware profile (a JSON object); give another file")
    return HardwareProfile.from_json(data, str(path))


def load_profile(hardware_name: str) -> HardwareProfile | None:
    """The newest stored profile of ``hardware_name`` (``host-cpu (measured)`` counts as
    ``host-cpu``), or None when this machine was never calibrated."""
    key = profile_hardware_name(hardware_name)
    folder = profiles_dir()
    files = sorted(folder.glob(f"{_slug(key)}--*.json")) if folder.is_dir() else []
    found = [p for p in (_try_read(f) for f in files) if p is not None and p.hardware == key]
    return max(found, key=lambda p: p.created_utc) if found else None


def _try_read(path: Path) -> HardwareProfile | None:
    try:
        return read_profile(path)
    except UsageError:
        return None


def run_llama_bench(
    args: Sequence[str], *, binary: Path | None = None, prefix: Sequence[str] = ()
) -> list[dict[str, object]]:
    """``llama-bench ARGS -o json`` (the installed engine's unless ``binary``), parsed.
    ``prefix`` wraps the command (tests: ``flock LOCKFILE``)."""
    from servelab.engines.installed import find_llama_binary

    exe = binary or find_llama_binary("llama-bench")
    argv = [*prefix, str(exe), *args, "-o", "json"]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EngineError(f"llama-bench could not run ({exc}); check {exe}") from exc
    tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
    if out.returncode != 0:
        raise EngineError(f"llama-bench failed (exit {out.returncode}): {tail}; see its stderr")
    try:
        parsed = json.loads(out.stdout)
    except ValueError as exc:
        raise EngineError(f"llama-bench printed no JSON ({tail}); is {exe} llama-bench?") from exc
    if not isinstance(parsed, list) or not parsed:
        raise EngineError(f"llama-bench printed no results ({tail}); check the model file")
    return [r for r in parsed if isinstance(r, dict)]


def _best_s(row: dict[str, object]) -> float:
    """The fastest repetition: fixed work, so slower ones measured interference (a shared
    machine, a clock ramping up), not the hardware."""
    samples = row.get("samples_ns")
    values = samples if isinstance(samples, list) and samples else [row.get("avg_ns")]
    return min(float(str(v)) for v in values) / 1e9


def engine_id(row: dict[str, object]) -> str:
    """commit-backend-arch of the build that produced a llama-bench row."""
    backend = str(row.get("backends") or "unknown").lower().replace(",", "+")
    return f"{row.get('build_commit') or 'unknown'}-{backend}-{platform.machine()}"


class _Session:
    """One calibrate run: the bench seam, its common flags and the progress bar."""

    def __init__(self, bench: BenchRunner, reps: int, tokens: int, bar: Progress) -> None:
        self.bench, self.reps, self.tokens, self.bar = bench, reps, tokens, bar
        self.task = bar.add_task("calibrating", total=None)
        self.engine = ""

    def run(self, what: str, model: Path, extra: Sequence[str]) -> list[dict[str, object]]:
        self.bar.update(self.task, description=what)
        rows = self.bench(["-m", str(model), "-r", str(self.reps), "-ngl", "999", *extra])
        self.engine = self.engine or engine_id(rows[0])
        self.bar.advance(self.task)
        return rows

    def step(self, label: str, model: Path, sha256: str, group: str = "") -> StepPoint:
        rows = self.run(f"decode step: {label}", model, ["-p", "0", "-n", str(self.tokens)])
        arch = load_architecture(str(model))
        f16 = cache_type("f16")
        nbytes = step_bytes(arch, batch=1, position=self.tokens // 2, type_k=f16, type_v=f16)
        step_s = _best_s(rows[0]) / self.tokens
        return StepPoint(sha256, label, nbytes.total_bytes, step_s, group)

    def verify(self, label: str, model: Path, k_max: int) -> tuple[float, ...]:
        ks = ",".join(str(k) for k in range(1, k_max + 1))
        rows = self.run(f"verify batches 1..{k_max}: {label}", model, ["-p", ks, "-n", "0"])
        by_k = {int(str(r["n_prompt"])): _best_s(r) for r in rows}
        return tuple(by_k[k] for k in range(1, k_max + 1))


def make_variant(source: Path, out: Path, quant: str) -> Path:
    """A same-shape copy of ``source`` at ``quant`` with random weights (``models.synth``)."""
    if quant.upper() not in QUANTS:
        raise UsageError(f"unknown variant {quant!r}; use one of {', '.join(QUANTS)}")
    from servelab.models.synth import synthesize

    return synthesize(str(source), out, quant=quant.upper(), progress=False)


def _target(s: _Session, model: ResolvedModel, k_max: int) -> tuple[ModelCalibration, StepPoint]:
    point = s.step(model.name, model.path, model.sha256)
    seconds = s.verify(model.name, model.path, k_max)
    arch = load_architecture(str(model.path))
    moe = arch.moe
    fit = fit_verify(seconds, n_expert=moe.n_expert if moe else 0,
                     n_used=moe.n_expert_used if moe else 0)  # fmt: skip
    entry = ModelCalibration(
        model.sha256, model.name, point.bytes_per_step, point.step_s, seconds, fit
    )
    return entry, point


def calibrate(
    model: str, *, drafts: Sequence[str] = (), variants: Sequence[str] = ("Q8_0", "F16"),
    k_max: int = 16, reps: int = 3, tokens: int = 64, hardware: str = "auto",
    progress: bool = True, bench: BenchRunner | None = None, console: Console | None = None,
    server: bool = True, server_tokens: int = 128, prompt_tokens: int | None = None,
) -> Calibration:  # fmt: skip
    """Measure ``model`` (its decode step and batch costs t(1..k_max)), each quant variant's
    and each draft's decode step, fit the profile, merge it into the machine's stored profile
    of the same engine build and write it. ``hardware``: ``auto`` (the local GPU, else
    ``host-cpu``) or a name to file the profile under. With no ``variants`` the bandwidth is
    the stored profile's (calibrate a model with variants first) and ``model`` adds its own
    fixed cost. ``server_tokens`` out and ``prompt_tokens`` in (None: a 40-token text) per
    request of the llama-server timing: give the workload's own lengths."""
    if not 2 <= k_max <= 64 or reps < 1 or tokens < 2:
        raise UsageError("--k-max must be 2..64, --reps >= 1 and --tokens >= 2; fix them")
    if server_tokens < 16 or (prompt_tokens is not None and not 1 <= prompt_tokens <= 65536):
        raise UsageError(
            "--server-tokens must be 16 or more and --prompt-tokens 1..65536 (the workload's "
            "request lengths); fix them"
        )
    hw_name = _hardware_name(hardware)
    if not variants and load_profile(hw_name) is None:
        raise UsageError(
            f"--variants none needs this machine's bandwidth from an earlier calibration and "
            f"{hw_name} has none; calibrate a model with --variants Q8_0,F16 first"
        )
    target = resolve_model(model)
    draft_models = [resolve_model(d) for d in drafts]
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    bar = Progress(*columns, TimeElapsedColumn(), console=console, disable=not progress)
    session = _Session(bench or run_llama_bench, reps, tokens, bar)
    # variants beside the model (its disk has room for models), each deleted after its run
    where = target.path.parent if os.access(target.path.parent, os.W_OK) else None
    with bar, tempfile.TemporaryDirectory(prefix=".servelab-calibrate-", dir=where) as tmp:
        bar.update(session.task, total=2 + len(variants) + len(draft_models))
        entry, point = _target(session, target, k_max)
        points, models = [point], [entry]
        for quant in variants:
            bar.update(session.task, description=f"making the {quant} variant")
            path = make_variant(target.path, Path(tmp) / f"variant-{quant}.gguf", quant)
            label = f"{target.name} {quant}"
            points.append(session.step(label, path, sha256_file(path), target.sha256))
            path.unlink()
        for d in draft_models:  # timed for c; not in the bandwidth fit (another shape)
            p = session.step(d.name, d.path, d.sha256)
            models.append(ModelCalibration(d.sha256, d.name, p.bytes_per_step, p.step_s))
        logs = profiles_dir() / "logs"  # kept: a failed start names its log
        pairs = (
            _server_pairs(session, target, entry, draft_models, logs, server_tokens, prompt_tokens)
            if server else []
        )  # fmt: skip
    # --variants none: the stored bandwidth stands; the model's own step, fixed cost and
    # batch costs are measured anew, and its earlier variant points stay in the fit
    return _store(hw_name, session.engine, models, points if variants else (), pairs)


def _server_pairs(
    s: _Session, target: ResolvedModel, entry: ModelCalibration,
    drafts: Sequence[ResolvedModel], log_dir: Path, tokens: int, prompt_tokens: int | None,
) -> list[ServerPair]:  # fmt: skip
    """llama-server's own speculative cycle for the target with each draft (acceptance 1.0
    at K = 2, 4, 8), where llama-bench cannot see the sampling and drafting overheads; each
    timed request is ``prompt_tokens`` in (None: a 40-token text) and ``tokens`` out."""
    from servelab.runner.calibrate_server import SERVER_KS, time_server_pair

    if entry.verify_fit is None or not drafts:
        return []
    s.bar.update(s.task, total=(s.bar.tasks[0].total or 0) + len(drafts) * (1 + len(SERVER_KS)))

    def step(what: str) -> None:
        s.bar.update(s.task, description=what)
        s.bar.advance(s.task)

    return [
        time_server_pair(target.path, target.sha256, d.path, d.sha256, entry.verify_fit,
                         log_dir=log_dir, reps=max(2, min(s.reps, 3)), on_step=step,
                         tokens=tokens, prompt_tokens=prompt_tokens)
        for d in drafts
    ]  # fmt: skip


def _hardware_name(hardware: str) -> str:
    from servelab.runner.hardware import resolve_hardware

    if hardware.strip().lower() == "auto":
        found = resolve_hardware("auto")
        return profile_hardware_name(found.name if found else None)
    return profile_hardware_name(hardware.strip())


def _store(
    hw: str, engine: str, models: Sequence[ModelCalibration], points: Sequence[StepPoint],
    pairs: Sequence[ServerPair] = (),
) -> Calibration:  # fmt: skip
    from servelab.store.manifest import utc_now

    path = profile_path(hw, engine)
    old = _try_read(path) if path.is_file() else None
    if old is not None and old.engine == engine:
        if points:  # the step refitted over the old points and the new ones
            profile = old.with_models(models, points)
        else:  # no new bandwidth points: the stored fit stands
            profile = replace(old, models={**old.models, **{m.sha256: m for m in models}})
        profile = HardwareProfile(
            profile.hardware, engine, utc_now(), profile.step, profile.points, profile.models,
            pairs=profile.pairs,
        )  # fmt: skip
    else:
        models_by_sha = {m.sha256: m for m in models}
        profile = HardwareProfile(hw, engine, utc_now(), fit_step(points), tuple(points),
                                  models_by_sha)  # fmt: skip
    profile = profile.with_pairs(pairs)
    write_json_atomic(path, profile.to_json())
    return Calibration(profile, path)
