"""The library function behind ``servelab predict``: theory for a model before measuring it.

Owns ``predict``: find the architecture behind a model name or path (models/), the hardware
behind a name (a catalog entry, a user file, the local GPU), and hand both to the pure
arithmetic of ``servelab.theory.predict``. The CLI command only parses options, calls this and
prints. Must not print, and must not compute anything theory/ computes.
"""

from __future__ import annotations

from pathlib import Path

from servelab.models.arch_files import load_architecture
from servelab.runner.hardware import resolve_hardware
from servelab.theory.hardware import Hardware
from servelab.theory.predict import PredictInput, Prediction
from servelab.theory.predict import predict as predict_architecture

__all__ = ["predict"]


def predict(
    model: str | Path,
    inputs: PredictInput | None = None,
    *,
    hardware: str | Hardware | None = "auto",
    weight_bits: float | None = None,
) -> Prediction:
    """Predict KV memory, decode/prefill ceilings, MoE batch scaling and spec-decode speedup.

    ``model``: a registry model name, a GGUF file, a Hugging Face ``config.json`` (or its
    folder) or an architecture YAML file. ``inputs``: the configuration (default: 4096 tokens
    per slot, one slot, f16 KV). ``hardware``: a catalog or user hardware name, ``"auto"`` (the
    local NVIDIA GPU, if the catalog knows it), ``"none"`` or None (no ceilings), or a
    ``Hardware`` record. ``weight_bits`` sizes the weights of config.json and YAML sources.
    Raises ``UsageError`` for a source or setting that cannot be used.
    """
    arch = load_architecture(str(model), weight_bits=weight_bits)
    machine = resolve_hardware(hardware) if isinstance(hardware, str) else hardware
    return predict_architecture(arch, machine, inputs or PredictInput(ctx_per_slot=4096))
