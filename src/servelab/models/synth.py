"""Synthetic models: random-weight GGUFs with the real shapes, bytes and kernels of a model.

Owns ``synthesize``: from a catalog shape (``synth_catalog``) plus the tokenizer of a vocab file
from the packed llama.cpp source (found by the caller's ``find_vocab``, in practice
``servelab.engines.installed.find_vocab``, since ``models`` must not import ``engines``), or from
an existing GGUF (a clone: its metadata, tokenizer, tensor names and shapes), it writes a GGUF
whose weights are random quants in the target format (``quant_blocks``) with the per-tensor type
mix of llama-quantize. Tensors are generated and written in chunks, so memory stays small
whatever the model's size. The file is marked ``servelab.synthetic = true`` so that reports can
say that quality figures mean nothing there. Must not start engines or judge the result.
"""

from __future__ import annotations

import math
import mmap
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from servelab.errors import EnvironmentProblem, UsageError
from servelab.models.pull import resolve_model
from servelab.models.quant_blocks import FORMATS, RandomBytes, constant_blocks, random_blocks
from servelab.models.registry import MODELS
from servelab.models.synth_catalog import (
    FILE_TYPE,
    QUANTS,
    SynthShape,
    TypeMix,
    arch_metadata,
    catalog_shape,
    quantizable,
    tensor_shapes,
)
from servelab.models.synth_gguf import RawGGUFWriter, RawValue, bool_array, read_gguf_raw

SYNTHETIC_KEY = "servelab.synthetic"
SYNTHETIC_LIKE_KEY = "servelab.synthetic.like"
CHUNK_BYTES = 16 << 20
_MAX_LAYERS = 512  # LLAMA_MAX_LAYERS
_NOT_COPIED = ("general.architecture", "general.name", "general.file_type", "general.alignment",
               "general.quantization_version", SYNTHETIC_KEY, SYNTHETIC_LIKE_KEY)  # fmt: skip


@dataclass(frozen=True, slots=True)
class PlannedTensor:
    """One tensor to write: random values of spread ``std``, a constant, or bytes copied from
    the source file at ``copy_offset``."""

    name: str
    ne: tuple[int, ...]
    ggml_type: str
    std: float = 0.0
    constant: float | None = None
    copy_offset: int | None = None

    @property
    def n_elements(self) -> int:
        return math.prod(self.ne)

    @property
    def nbytes(self) -> int:
        block, size = GGML_QUANT_SIZES[GGMLQuantizationType[self.ggml_type]]
        return self.n_elements // block * size


@dataclass(frozen=True, slots=True)
class SynthPlan:
    name: str
    arch: str
    metadata: dict[str, object]  # keys in file order; RawValue or plain Python values
    tensors: list[PlannedTensor]
    source: Path | None = None  # the GGUF copied tensors come from

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)


def _fill(name: str, ne: tuple[int, ...], ggml_type: str) -> PlannedTensor:
    if len(ne) == 1 and name.endswith("norm.weight"):
        return PlannedTensor(name, ne, ggml_type, constant=1.0)
    if len(ne) == 1:
        return PlannedTensor(name, ne, ggml_type, constant=0.0)
    return PlannedTensor(name, ne, ggml_type, std=1.0 / math.sqrt(ne[0]))


def _vocab_metadata(shape: SynthShape, path: Path) -> dict[str, object]:
    meta = read_gguf_raw(path).metadata
    tokens = meta.get("tokenizer.ggml.tokens")
    count = int.from_bytes(tokens.payload[4:12], "little") if tokens else 0
    if count != shape.n_vocab:
        raise EnvironmentProblem(
            f"vocab file {path} has {count} tokens, {shape.name} needs {shape.n_vocab}; "
            "reinstall llama.cpp (servelab engines install llamacpp --force)"
        )
    return {k: v for k, v in meta.items() if k.startswith("tokenizer.")}


def plan_catalog(shape: SynthShape, quant: str, n_layer: int, vocab_file: Path) -> SynthPlan:
    """The metadata and tensors of ``shape`` with ``n_layer`` blocks at ``quant``; the
    tokenizer comes from ``vocab_file`` (the GGUF of ``shape.vocab``)."""
    shapes = tensor_shapes(shape, n_layer)
    n_attn_v = sum(1 for name, _ in shapes if "attn_v.weight" in name)
    mix = TypeMix(quant, n_layer, n_attn_v, shape.tied_embeddings)
    arch_keys = {f"{shape.arch}.{k}": v for k, v in arch_metadata(shape, n_layer).items()}
    meta = {**arch_keys, **_vocab_metadata(shape, vocab_file)}
    tensors = [_fill(name, ne, mix.pick(name, ne)) for name, ne in shapes]
    return SynthPlan(shape.name, shape.arch, meta, tensors)


def plan_clone(path: Path, quant: str) -> SynthPlan:
    """A plan with ``path``'s metadata and tensor table: quantizable weights random at
    ``quant``; norms, routers and other tensors llama-quantize leaves alone copied as they are."""
    tables = read_gguf_raw(path)
    arch_raw = tables.metadata.get("general.architecture")
    if arch_raw is None or not isinstance(arch_raw.value, str):
        raise UsageError(f"{path} has no general.architecture; give a model GGUF to clone")
    arch = arch_raw.value
    block_count = tables.metadata.get(f"{arch}.block_count")
    n_layer = int(block_count.value) if block_count else 0
    names = [t.name for t in tables.tensors]
    n_attn_v = sum(1 for n in names if "attn_v.weight" in n)
    mix = TypeMix(quant, n_layer, n_attn_v, "output.weight" not in names)
    meta: dict[str, object] = {
        k: v
        for k, v in tables.metadata.items()
        if k not in _NOT_COPIED and not k.startswith("split.")
    }
    tensors = []
    for t in tables.tensors:
        if quantizable(t.name, t.ne):
            tensors.append(_fill(t.name, t.ne, mix.pick(t.name, t.ne)))
        else:
            source_type = GGMLQuantizationType(t.ggml_type).name
            tensors.append(PlannedTensor(t.name, t.ne, source_type, copy_offset=t.data_offset))
    return SynthPlan(path.name, arch, meta, tensors, source=path)


def _add_value(writer: RawGGUFWriter, key: str, value: object) -> None:
    if isinstance(value, RawValue):
        writer.add_raw(key, value)
    elif isinstance(value, bool):
        writer.add_bool(key, value)
    elif isinstance(value, int):
        writer.add_uint32(key, value)
    elif isinstance(value, float):
        writer.add_float32(key, value)
    elif isinstance(value, str):
        writer.add_string(key, value)
    elif isinstance(value, list) and all(isinstance(v, bool) for v in value):
        writer.add_raw(key, bool_array(value))
    else:
        raise TypeError(f"metadata {key}: unsupported value {value!r}")


def _chunks(
    t: PlannedTensor, rng: RandomBytes, source: mmap.mmap | None
) -> Iterator[bytes | memoryview]:
    if t.copy_offset is not None:
        if source is None:
            raise ValueError(f"tensor {t.name} copies from a source file but none is open")
        for start in range(0, t.nbytes, CHUNK_BYTES):
            end = min(t.nbytes, start + CHUNK_BYTES)
            yield source[t.copy_offset + start : t.copy_offset + end]
        return
    if t.constant is not None:
        yield constant_blocks(t.ggml_type, t.n_elements, t.constant).tobytes()
        return
    fmt = FORMATS[t.ggml_type]
    n_blocks = t.n_elements // fmt.block_size
    per_chunk = max(1, CHUNK_BYTES // fmt.type_size)
    for start in range(0, n_blocks, per_chunk):
        blocks = random_blocks(fmt.name, min(per_chunk, n_blocks - start), t.std, rng)
        yield blocks.reshape(-1).data


def _open_writer(plan: SynthPlan, path: Path, quant: str, like: str) -> RawGGUFWriter:
    writer = RawGGUFWriter(path, plan.arch)
    writer.add_name(f"servelab synthetic {like}")
    writer.add_file_type(FILE_TYPE[quant])
    writer.add_quantization_version(2)
    writer.add_bool(SYNTHETIC_KEY, True)
    writer.add_string(SYNTHETIC_LIKE_KEY, like)
    for key, value in plan.metadata.items():
        _add_value(writer, key, value)
    for t in plan.tensors:
        qtype = GGMLQuantizationType[t.ggml_type]
        writer.add_tensor_info(t.name, tuple(reversed(t.ne)), np.dtype(np.float32), t.nbytes, qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    return writer


def write_plan(
    plan: SynthPlan, out: Path, *, quant: str, like: str, seed: int, progress: bool
) -> None:
    """Write ``plan`` to ``out`` (through ``out.partial``, renamed when complete)."""
    partial = out.with_name(out.name + ".partial")
    rng = RandomBytes(seed)
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn())
    bar = Progress(
        *columns, TransferSpeedColumn(), console=Console(stderr=True), disable=not progress
    )
    writer = _open_writer(plan, partial, quant, like)
    try:
        with bar, _source_map(plan.source) as source:
            task = bar.add_task(f"writing {out.name}", total=plan.nbytes)
            for t in plan.tensors:
                for size in writer.write_streamed(t.nbytes, _chunks(t, rng, source)):
                    bar.advance(task, size)
        writer.close()
    except BaseException:
        writer.close()
        partial.unlink(missing_ok=True)
        raise
    partial.replace(out)


@contextmanager
def _source_map(path: Path | None) -> Iterator[mmap.mmap | None]:
    """The source GGUF memory-mapped for copying (None for catalog shapes)."""
    if path is None:
        yield None
        return
    with path.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
        yield data


def _check_target(out: Path, nbytes: int, force: bool) -> None:
    if out.exists() and not force:
        raise UsageError(f"{out} exists; pass --force to overwrite it or choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(out.parent).free
    if free < nbytes + (64 << 20):
        raise EnvironmentProblem(
            f"{out.parent} has {free / 1e9:.1f} GB free, the model needs {nbytes / 1e9:.1f} GB; "
            "free space or choose another --out (or fewer --layers)"
        )


def _clone_source(like: str) -> tuple[Path, str] | None:
    """The GGUF ``like`` names (a pulled registry model or a file) and its label; None for a
    catalog shape."""
    if like in MODELS:
        return resolve_model(like).path, like
    source = Path(like).expanduser()
    if like.endswith(".gguf") or source.is_file():
        if not source.is_file():
            raise UsageError(f"GGUF file {source} does not exist; give an existing model file")
        return source, source.name
    return None


def _plan(
    like: str, quant: str, layers: int | None, find_vocab: Callable[[str], Path] | None
) -> tuple[SynthPlan, str]:
    clone = _clone_source(like)
    if clone is not None:
        if layers is not None:
            raise UsageError("--layers applies to catalog shapes only; drop it to clone a model")
        return plan_clone(clone[0], quant), clone[1]
    shape = catalog_shape(like)
    n_layer = shape.n_layer if layers is None else layers
    if not 1 <= n_layer <= _MAX_LAYERS:
        raise UsageError(f"--layers {n_layer} is out of range; give 1 to {_MAX_LAYERS}")
    if find_vocab is None:
        raise UsageError(
            f"synthesizing {like} needs a vocab file: pass "
            "find_vocab=servelab.engines.installed.find_vocab"
        )
    return plan_catalog(shape, quant, n_layer, find_vocab(shape.vocab)), like


def synthesize(
    like: str,
    out: Path,
    *,
    quant: str = "Q4_K_M",
    layers: int | None = None,
    seed: int = 0,
    progress: bool = True,
    force: bool = True,
    find_vocab: Callable[[str], Path] | None = None,
) -> Path:
    """Write a random-weight GGUF shaped like ``like`` to ``out`` at ``quant`` and return
    ``out``. ``like`` is a catalog shape, or a GGUF file or pulled registry model to clone.
    ``layers`` keeps the first N blocks of a catalog shape. ``force=False`` refuses to overwrite
    an existing file. ``find_vocab`` maps a vocab name to its GGUF
    (``servelab.engines.installed.find_vocab``); catalog shapes need it."""
    if quant not in QUANTS:
        raise UsageError(f"unknown quant {quant!r}; give one of {', '.join(QUANTS)}")
    plan, label = _plan(like, quant, layers, find_vocab)
    out = Path(out).expanduser()
    _check_target(out, plan.nbytes, force)
    write_plan(plan, out, quant=quant, like=label, seed=seed, progress=progress)
    return out


__all__ = [
    "SYNTHETIC_KEY", "SYNTHETIC_LIKE_KEY", "SynthPlan", "plan_catalog", "plan_clone", "synthesize",
]  # fmt: skip
