"""Fast GGUF plumbing for synthetic models: read a file's metadata as raw values plus its tensor
table, and write a GGUF tensor by tensor.

Owns byte-level access for ``servelab.models.synth``. gguf-py's reader builds a numpy view per
array element (half a minute for a 262k-token vocabulary on a busy machine), so ``read_gguf_raw``
walks the key/value section with ``struct`` and keeps each value's encoded bytes; the writer
(a ``GGUFWriter``) copies them back unchanged. Tensor data is streamed in chunks after the tensor
infos, so no tensor, let alone a model, has to fit in memory. Must not choose tensor types or
values. Little-endian GGUF v2/v3 only; anything else is a UsageError naming the file.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from gguf import GGUFValueType, GGUFWriter
from gguf.gguf_writer import WriterState

from servelab.errors import UsageError

ARRAY_DECODE_LIMIT = 4096  # longer arrays (vocabularies) stay encoded only
_SCALAR = {
    GGUFValueType.UINT8: "<B", GGUFValueType.INT8: "<b", GGUFValueType.UINT16: "<H",
    GGUFValueType.INT16: "<h", GGUFValueType.UINT32: "<I", GGUFValueType.INT32: "<i",
    GGUFValueType.FLOAT32: "<f", GGUFValueType.BOOL: "<?", GGUFValueType.UINT64: "<Q",
    GGUFValueType.INT64: "<q", GGUFValueType.FLOAT64: "<d",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class RawValue:
    """A metadata value as the file encodes it (after its type tag); ``value`` is the decoded
    scalar, string or short array, None for long arrays."""

    vtype: GGUFValueType
    payload: bytes
    value: Any


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """A tensor as the file lists it: ``ne`` in ggml order (row length first)."""

    name: str
    ne: tuple[int, ...]
    ggml_type: int
    data_offset: int  # absolute, in the file


@dataclass(frozen=True, slots=True)
class GgufTables:
    metadata: dict[str, RawValue]
    tensors: list[TensorInfo]


class _Cursor:
    def __init__(self, data: bytes | mmap.mmap) -> None:
        self.data, self.pos = data, 0

    def unpack(self, fmt: str) -> Any:
        value = struct.unpack_from(fmt, self.data, self.pos)[0]
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        n = self.unpack("<Q")
        text = bytes(self.data[self.pos : self.pos + n]).decode("utf-8", "replace")
        self.pos += n
        return text

    def value(self, vtype: GGUFValueType, decode: bool = True) -> Any:
        if vtype == GGUFValueType.STRING:
            return self.string()
        if vtype in _SCALAR:
            return self.unpack(_SCALAR[vtype])
        if vtype != GGUFValueType.ARRAY:
            raise ValueError(f"unknown value type {vtype}")
        item, count = GGUFValueType(self.unpack("<I")), self.unpack("<Q")
        keep = decode and count <= ARRAY_DECODE_LIMIT
        if item in _SCALAR and not keep:
            self.pos += struct.calcsize(_SCALAR[item]) * count  # skip numeric arrays at once
            return None
        if item == GGUFValueType.STRING and not keep:
            for _ in range(count):
                self.pos += 8 + struct.unpack_from("<Q", self.data, self.pos)[0]
            return None
        items = [self.value(item, keep) for _ in range(count)]
        return items if keep else None


def _read_kv(cur: _Cursor, n_kv: int) -> dict[str, RawValue]:
    out: dict[str, RawValue] = {}
    for _ in range(n_kv):
        key = cur.string()
        vtype = GGUFValueType(cur.unpack("<I"))
        start = cur.pos
        value = cur.value(vtype)
        out[key] = RawValue(vtype, bytes(cur.data[start : cur.pos]), value)
    return out


def _read_tensors(cur: _Cursor, n_tensors: int, alignment: int) -> list[TensorInfo]:
    infos = []
    for _ in range(n_tensors):
        name = cur.string()
        n_dims = cur.unpack("<I")
        ne = tuple(cur.unpack("<Q") for _ in range(n_dims))
        infos.append(TensorInfo(name, ne, cur.unpack("<I"), cur.unpack("<Q")))
    start = -(-cur.pos // alignment) * alignment
    return [TensorInfo(t.name, t.ne, t.ggml_type, start + t.data_offset) for t in infos]


def read_gguf_raw(path: Path) -> GgufTables:
    """The metadata (encoded values) and tensor table of the GGUF at ``path``."""
    try:
        with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
            cur = _Cursor(data)
            if bytes(data[0:4]) != b"GGUF" or cur.unpack("<4xI") not in (2, 3):
                raise UsageError(f"{path} is not a little-endian GGUF v2/v3 file; give a GGUF")
            n_tensors, n_kv = cur.unpack("<Q"), cur.unpack("<Q")
            meta = _read_kv(cur, n_kv)
            alignment = meta.get("general.alignment")
            align = int(alignment.value) if alignment else 32
            return GgufTables(meta, _read_tensors(cur, n_tensors, align))
    except OSError as exc:
        raise UsageError(f"cannot read GGUF file {path}: {exc}") from exc
    except (ValueError, struct.error, IndexError) as exc:
        raise UsageError(f"{path} is not a valid GGUF file (truncated or corrupt: {exc})") from exc


class RawGGUFWriter(GGUFWriter):
    """A GGUFWriter that also accepts ``RawValue`` metadata (copied byte for byte) and writes
    tensor data in chunks."""

    def _pack_val(
        self, val: Any, vtype: GGUFValueType, add_vtype: bool, sub_type: GGUFValueType | None = None
    ) -> bytes:
        if isinstance(val, RawValue):
            return (self._pack("I", vtype) if add_vtype else b"") + val.payload
        return super()._pack_val(val, vtype, add_vtype, sub_type)

    def add_raw(self, key: str, raw: RawValue) -> None:
        self.add_key_value(key, raw, raw.vtype)

    def write_streamed(self, nbytes: int, chunks: Iterable[bytes | memoryview]) -> Iterator[int]:
        """Write the next tensor's data from ``chunks`` (``nbytes`` in all), yielding the size of
        each chunk once written; mirrors ``write_tensor_data`` without holding the tensor."""
        if self.state not in (WriterState.TI_DATA, WriterState.WEIGHTS) or self.fout is None:
            raise ValueError(f"expected tensor infos written first, got {self.state}")
        fout: BinaryIO = self.fout[0]
        name = next(iter(self.tensors[0]))
        info = self.tensors[0].pop(name)
        if info.nbytes != nbytes:
            raise ValueError(f"tensor {name}: {nbytes} bytes given, {info.nbytes} declared")
        self.write_padding(fout, fout.tell())
        written = 0
        for chunk in chunks:
            fout.write(chunk)
            size = chunk.nbytes if isinstance(chunk, memoryview) else len(chunk)
            written += size
            yield size
        if written != nbytes:
            raise ValueError(f"tensor {name}: wrote {written} bytes of {nbytes}")
        self.write_padding(fout, nbytes)
        self.state = WriterState.WEIGHTS


def bool_array(values: list[bool]) -> RawValue:
    """A BOOL array value (per-layer flags such as a sliding-window pattern)."""
    payload = struct.pack("<IQ", int(GGUFValueType.BOOL), len(values))
    payload += np.asarray(values, dtype=np.uint8).tobytes()
    return RawValue(GGUFValueType.ARRAY, payload, list(values))
