"""Reading the files an architecture or a hardware entry can come from.

Owns file access for ``servelab.theory``: a GGUF's metadata and tensor table (memory-mapped,
arrays over 4096 items skipped so a 262k vocabulary costs nothing), a Hugging Face
``config.json`` (or the folder holding one), a hand-written architecture YAML, and the user's
hardware file (``$SERVELAB_HARDWARE_FILE``, else ``~/.config/servelab/hardware.yaml``). It
turns each into plain dicts and hands them to the pure readers; it must not compute anything
itself. Unreadable or malformed files raise UsageError naming the file.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import yaml
from gguf import GGUFReader, GGUFValueType

from servelab.errors import UsageError
from servelab.models.gguf_info import _MetadataReader
from servelab.models.pull import resolve_model
from servelab.models.registry import MODELS
from servelab.theory.arch import Architecture, TensorEntry
from servelab.theory.arch_gguf import architecture_from_gguf
from servelab.theory.arch_hf import architecture_from_hf_config
from servelab.theory.arch_yaml import architecture_from_yaml
from servelab.theory.hardware import Hardware, hardware_from_user_dict
from servelab.userfiles import read_text

HARDWARE_FILE_ENV = "SERVELAB_HARDWARE_FILE"
ARRAY_LIMIT = 4096  # per-layer arrays are far shorter; vocabularies far longer
_PARSE_ERRORS = (ValueError, IndexError, KeyError, TypeError, OverflowError, struct.error)


class _ArchReader(_MetadataReader):
    """Keeps the values of short arrays (per-layer head counts, window patterns); long arrays
    keep only their type and length, as in ``gguf_info``."""

    def _get_field_parts(
        self, orig_offs: int, raw_type: int
    ) -> tuple[int, list[npt.NDArray[Any]], list[int], list[GGUFValueType]]:
        if raw_type == GGUFValueType.ARRAY:
            count = int(self._get(orig_offs + 4, np.uint64)[0])
            if count <= ARRAY_LIMIT:
                return GGUFReader._get_field_parts(self, orig_offs, raw_type)
        return super()._get_field_parts(orig_offs, raw_type)


def _value(field: Any) -> Any:
    kind = field.types[0] if field.types else None
    if kind == GGUFValueType.ARRAY:
        if len(field.types) < 2 or not field.data:
            return None  # a skipped long array
        if field.types[1] == GGUFValueType.STRING:
            return [bytes(field.parts[i]).decode("utf-8", "replace") for i in field.data]
        return [field.parts[i].tolist()[0] for i in field.data]
    if kind == GGUFValueType.STRING:
        return bytes(field.parts[field.data[0]]).decode("utf-8", "replace")
    return field.parts[field.data[0]].tolist()[0] if field.data else None


def read_gguf_tables(path: Path) -> tuple[dict[str, object], list[TensorEntry]]:
    """A GGUF's metadata (plain values; long arrays omitted) and its tensor table."""
    try:
        reader = _ArchReader(path, "r")
        meta = {name: _value(field) for name, field in reader.fields.items()}
        tensors = [TensorEntry(t.name, int(t.n_bytes), int(t.n_elements)) for t in reader.tensors]
    except OSError as exc:
        raise UsageError(f"cannot read GGUF file {path}: {exc}") from exc
    except _PARSE_ERRORS as exc:
        raise UsageError(f"{path} is not a valid GGUF file (truncated or corrupt: {exc})") from exc
    return {k: v for k, v in meta.items() if v is not None}, tensors


def _read_json(path: Path) -> dict[str, object]:
    try:
        data = json.loads(read_text(path, "file"))
    except ValueError as exc:
        raise UsageError(f"{path} is not valid JSON ({exc}); fix or re-download it") from exc
    if not isinstance(data, dict):
        raise UsageError(f"{path} must hold a JSON object (a Hugging Face config.json)")
    return data


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(read_text(path, "file"))
    except yaml.YAMLError as exc:
        raise UsageError(f"{path} is not valid YAML ({exc}); fix its syntax") from exc


def load_architecture(source: str, *, weight_bits: float | None = None) -> Architecture:
    """The architecture behind ``source``: a registry model name, a GGUF file, a Hugging Face
    ``config.json`` (or its folder), or an architecture YAML file. ``weight_bits`` sizes the
    weights of sources without a tensor table (default: the config's dtype, else 16)."""
    path = Path(source).expanduser()
    if source in MODELS or source.endswith(".gguf"):
        return _gguf_by_magic(source)
    if path.is_dir() and (path / "config.json").is_file():
        path = path / "config.json"
    if path.suffix == ".json" and path.is_file():
        return architecture_from_hf_config(
            _read_json(path), name=path.parent.name or path.name, weight_bits=weight_bits
        )
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return architecture_from_yaml(_read_yaml(path), name=path.stem, weight_bits=weight_bits)
    if path.is_file():  # a GGUF without the suffix: resolve_model checks the magic
        return _gguf_by_magic(path)
    raise UsageError(
        f"{source!r} is not a registry model, a GGUF file, a config.json (or folder with "
        "one) or an architecture .yaml; give one of those"
    )


def _gguf_by_magic(source: str | Path) -> Architecture:
    """A registry name or GGUF path (``resolve_model`` checks the file's magic)."""
    resolved = resolve_model(str(source))
    meta, tensors = read_gguf_tables(resolved.path)
    label = str(source) if str(source) in MODELS else resolved.path.stem
    return architecture_from_gguf(meta, tensors, name=label)


def hardware_file() -> Path:
    explicit = os.environ.get(HARDWARE_FILE_ENV, "")
    if explicit:
        return Path(explicit).expanduser()
    config = os.environ.get("XDG_CONFIG_HOME", "") or str(Path.home() / ".config")
    return Path(config).expanduser() / "servelab" / "hardware.yaml"


def read_user_hardware(path: Path | None = None) -> tuple[Hardware, ...]:
    """The user's hardware entries; none when the file does not exist."""
    file = path or hardware_file()
    if not file.is_file():
        if path is not None:
            raise UsageError(f"hardware file {file} does not exist; create it or drop the path")
        return ()
    return hardware_from_user_dict(_read_yaml(file), where=str(file))
