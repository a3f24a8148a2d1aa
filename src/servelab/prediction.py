"""The library function behind ``servelab predict``: theory for a model before measuring it.

Owns ``predict``: find the architecture behind a model name or path (models/), the hardware
behind a name (a catalog entry, a user file, the local GPU), and hand both to the pure
arithmetic of ``servelab.theory.predict``. The CLI command only parses options, calls this and
prints. Must not print, and must not compute anything theory/ computes.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from servelab.errors import UsageError
from servelab.models.arch_files import load_architecture
from servelab.runner.hardware import resolve_hardware
from servelab.theory.hardware import Hardware
from servelab.theory.predict import PredictInput, Prediction
from servelab.theory.predict import predict as predict_architecture

if TYPE_CHECKING:
    from servelab.theory.calibration import HardwareProfile
    from servelab.theory.server_flags import ServerFlags

__all__ = ["predict", "with_server_flags"]


def predict(
    model: str | Path,
    inputs: PredictInput | None = None,
    *,
    hardware: str | Hardware | None = "auto",
    weight_bits: float | None = None,
    flags: str | ServerFlags | None = None,
    profile: str | Path | HardwareProfile | None = None,
    draft: str | Path | None = None,
) -> Prediction:
    """Predict KV memory, decode/prefill ceilings, MoE batch scaling and spec-decode speedup.

    ``model``: a registry model name, a GGUF file, a Hugging Face ``config.json`` (or its
    folder) or an architecture YAML file. ``inputs``: the configuration (default: 4096 tokens
    per slot, one slot, f16 KV). ``flags``: a llama-server command line (``"-c 16384 -np 2"``)
    read as llama-server reads it; its KV settings replace those of ``inputs`` (whose position
    and speculative settings stay). ``hardware``: a catalog or user hardware name, ``"auto"``
    (the local NVIDIA GPU, if the catalog knows it), ``"none"`` or None (no ceilings), or a
    ``Hardware`` record. ``profile``: ``"auto"`` (the stored calibration of that hardware, if
    any), ``"none"``, a profile JSON file or a ``HardwareProfile``. ``weight_bits`` sizes the
    weights of config.json and YAML sources. ``draft``: the draft model (registry name or GGUF)
    whose calibrated cost c the profile holds for this target. Raises ``UsageError`` for a
    source or setting that cannot be used.
    """
    arch = load_architecture(str(model), weight_bits=weight_bits)
    machine = resolve_hardware(hardware) if isinstance(hardware, str) else hardware
    base = inputs or PredictInput(ctx_per_slot=4096)
    if flags is not None:
        base = with_server_flags(base, flags, arch.n_ctx_train)
    no_hw = hardware is None or (isinstance(hardware, str) and hardware.strip().lower() == "none")
    calibrated = _profile(profile, machine, none_asked=no_hw)
    if calibrated is None:
        return predict_architecture(arch, machine, base)
    return predict_architecture(
        arch, machine, base, profile=calibrated, model_sha256=_registry_sha256(model),
        draft_sha256=_registry_sha256(draft) if draft is not None else None,
    )  # fmt: skip


def with_server_flags(
    inputs: PredictInput, flags: str | ServerFlags, n_ctx_train: int | None
) -> PredictInput:
    """``inputs`` with the KV settings llama-server derives from ``flags`` for a model trained
    at ``n_ctx_train`` tokens (``-c 0``/no ``-c`` means that context)."""
    from servelab.theory.server_flags import (
        parse_server_flags,
        server_settings,
        slot_context,
        total_context,
    )

    read = parse_server_flags(flags) if isinstance(flags, str) else flags
    s = server_settings(read)
    return replace(
        inputs, ctx_per_slot=slot_context(s, n_ctx_train), parallel=s.n_parallel,
        kv_k=s.cache_type_k, kv_v=s.cache_type_v, unified=s.kv_unified, n_ubatch=s.n_ubatch,
        flash_attn=s.flash_attn, n_ctx=total_context(s, n_ctx_train), swa_full=s.swa_full,
        n_batch=s.n_batch, server_flags=read,
    )  # fmt: skip


def _profile(
    profile: str | Path | HardwareProfile | None, machine: Hardware | None, *, none_asked: bool
) -> HardwareProfile | None:
    """``auto``: the newest stored calibration of ``machine`` (of this host's CPU when no GPU
    is known; none when ``--hw none``); a path: that file."""
    if profile is None or not isinstance(profile, (str, Path)):
        return profile
    from servelab.runner.calibrate import HOST_CPU, load_profile, read_profile

    text = str(profile)
    if text.strip().lower() == "none":
        return None
    if text.strip().lower() == "auto":
        return None if none_asked else load_profile(machine.name if machine else HOST_CPU)
    path = Path(text).expanduser()
    if not path.is_file():
        raise UsageError(
            f"--profile {text}: no such file; give auto, none or a profile JSON "
            "(`servelab calibrate` writes them)"
        )
    return read_profile(path)


def _registry_sha256(model: str | Path) -> str | None:
    """The sha256 a profile keys this model's fits by: a registry model's pulled hash, a GGUF
    file's own (hashed once, then remembered); None for config.json / YAML sources."""
    from servelab.models.pull import file_sha256, pulled_model
    from servelab.models.registry import MODELS

    name = str(model)
    if name in MODELS:
        pulled = pulled_model(name)
        return pulled.sha256 if pulled else None
    path = Path(name).expanduser()
    return file_sha256(path) if path.is_file() and path.suffix.lower() == ".gguf" else None
