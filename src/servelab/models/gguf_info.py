"""What a GGUF file says about its model: architecture, size, quantisation, context, template.

Owns reading GGUF metadata through ``gguf.GGUFReader`` (memory-mapped, read-only). Must not load
tensor data into memory or write to the file; a file the reader cannot parse becomes a
UsageError naming the file, never a raw numpy or struct error.

The stock reader turns every element of every array field into numpy views: the vocabulary of a
262k-token model costs over ten seconds. ``_MetadataReader`` skips array values instead (their
type and length stay readable) and measures string arrays with ``struct``; everything else is the
stock parser. A unit test checks it against the stock reader, so a change to gguf's internals
shows up as a failing test, not as wrong metadata.
"""

from __future__ import annotations

import hashlib
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import numpy.typing as npt
from gguf import GGUFReader, GGUFValueType

from servelab.errors import UsageError

_PARSE_ERRORS = (ValueError, IndexError, KeyError, TypeError, OverflowError, struct.error)


_ScalarSize = {t: np.dtype(n).itemsize for t, n in GGUFReader.gguf_scalar_to_np.items()}


class _MetadataReader(GGUFReader):
    """GGUFReader whose array fields hold only their item type and length, not their values."""

    def _get_field_parts(
        self, orig_offs: int, raw_type: int
    ) -> tuple[int, list[npt.NDArray[Any]], list[int], list[GGUFValueType]]:
        if raw_type != GGUFValueType.ARRAY:
            return super()._get_field_parts(orig_offs, raw_type)
        item_type = self._get(orig_offs, np.uint32)
        count = self._get(orig_offs + 4, np.uint64)
        item = GGUFValueType(int(item_type[0]))
        if item == GGUFValueType.ARRAY:
            return super()._get_field_parts(orig_offs, raw_type)
        payload_bytes = self._array_payload_bytes(orig_offs + 12, item, int(count[0]))
        return 12 + payload_bytes, [item_type, count], [], [GGUFValueType.ARRAY, item]

    def _array_payload_bytes(self, start: int, item: GGUFValueType, count: int) -> int:
        if item != GGUFValueType.STRING:
            payload_bytes = _ScalarSize[item] * count
            if start + payload_bytes > len(self.data):
                raise ValueError(f"array field runs past the end of the file at offset {start}")
            return payload_bytes
        length = struct.Struct(">Q" if self.byte_order == "S" else "<Q")
        buffer, offset = self.data.data, start
        for _ in range(count):
            offset += 8 + length.unpack_from(buffer, offset)[0]
        return offset - start


@dataclass(frozen=True, slots=True)
class GgufInfo:
    """``quantisation`` is the file type from ``general.file_type`` (e.g. ``Q4_1``), else the
    tensor type holding the most parameters. ``context_length`` is the trained context.
    ``synthetic`` marks random-weight files written by ``servelab models synth``: their quality
    figures mean nothing."""

    name: str | None
    architecture: str | None
    parameter_count: int
    quantisation: str | None
    context_length: int | None
    has_chat_template: bool
    tensor_count: int
    chat_template_sha256: str | None = None  # of tokenizer.chat_template's text
    synthetic: bool = False  # servelab.synthetic: random weights (servelab models synth)
    synthetic_like: str | None = None  # servelab.synthetic.like: the shape it copies


def _string(reader: GGUFReader, key: str) -> str | None:
    field = reader.get_field(key)
    if field is None or not field.types or field.types[0] != GGUFValueType.STRING:
        return None
    return bytes(field.parts[field.data[0]]).decode("utf-8", errors="replace")


def _integer(reader: GGUFReader, key: str) -> int | None:
    field = reader.get_field(key)
    if (
        field is None
        or not field.types
        or field.types[0] in (GGUFValueType.STRING, GGUFValueType.ARRAY)
    ):
        return None
    return int(field.parts[field.data[0]][0])


def _file_type_name(code: int | None) -> str | None:
    if code is None:
        return None
    try:
        name = gguf.LlamaFileType(code).name
    except ValueError:
        return None
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")


def _dominant_tensor_type(reader: GGUFReader) -> str | None:
    weights: Counter[str] = Counter()
    for tensor in reader.tensors:
        weights[tensor.tensor_type.name] += int(tensor.n_elements)
    return weights.most_common(1)[0][0] if weights else None


def _info(reader: GGUFReader) -> GgufInfo:
    arch = _string(reader, "general.architecture")
    quant = _file_type_name(_integer(reader, "general.file_type"))
    return GgufInfo(
        name=_string(reader, "general.name"),
        architecture=arch,
        parameter_count=sum(int(t.n_elements) for t in reader.tensors),
        quantisation=quant or _dominant_tensor_type(reader),
        context_length=_integer(reader, f"{arch}.context_length") if arch else None,
        has_chat_template=reader.get_field("tokenizer.chat_template") is not None,
        tensor_count=len(reader.tensors),
        chat_template_sha256=_sha256_of(_string(reader, "tokenizer.chat_template")),
        synthetic=_flag(reader, "servelab.synthetic"),
        synthetic_like=_string(reader, "servelab.synthetic.like"),
    )


def _flag(reader: GGUFReader, key: str) -> bool:
    field = reader.get_field(key)
    if field is None or not field.types or field.types[0] != GGUFValueType.BOOL:
        return False
    return bool(field.parts[field.data[0]][0])


def _sha256_of(text: str | None) -> str | None:
    return hashlib.sha256(text.encode("utf-8")).hexdigest() if text is not None else None


def read_gguf_info(path: str | Path) -> GgufInfo:
    """Read the metadata of the GGUF file at ``path``; a missing, truncated or corrupt file
    raises UsageError naming it."""
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"GGUF file {file} does not exist or is not a file")
    try:
        return _info(_MetadataReader(file, "r"))
    except OSError as exc:
        raise UsageError(f"cannot read GGUF file {file}: {exc}") from exc
    except _PARSE_ERRORS as exc:
        raise UsageError(f"{file} is not a valid GGUF file (truncated or corrupt: {exc})") from exc
