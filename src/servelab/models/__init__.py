"""Models: the registry of named models, pulling them from PyPI wheels, resolving a name or path
to a GGUF file, and reading GGUF metadata.

Owns nothing itself: it re-exports the public API of its modules. Must not import anything that
runs code on import.
"""

from __future__ import annotations

from servelab.models.gguf_info import GgufInfo, read_gguf_info
from servelab.models.pull import (
    PulledModel,
    ResolvedModel,
    file_sha256,
    pull_model,
    pulled_model,
    resolve_model,
)
from servelab.models.registry import DEFAULT_MODEL, MODELS, RegistryModel, known_model_names

__all__ = [
    "DEFAULT_MODEL",
    "MODELS",
    "GgufInfo",
    "PulledModel",
    "RegistryModel",
    "ResolvedModel",
    "file_sha256",
    "known_model_names",
    "pull_model",
    "pulled_model",
    "read_gguf_info",
    "resolve_model",
]
