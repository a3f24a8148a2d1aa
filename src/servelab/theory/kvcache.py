"""KV-cache memory: what llama.cpp allocates for a context, and what decoding reads.

Owns two predictions. ``llama_kv_allocation`` sizes the caches exactly as llama.cpp
(0c1e57098) does at start-up, so it equals llama-server's ``llama_kv_cache: size = ... MiB``
lines: the context is padded to 256 cells; without ``--kv-unified`` each of the ``-np``
sequences gets its own stream of ``pad256(n_ctx / n_seq)`` cells; sliding-window layers get
``pad256(min(cells, window * (n_seq if unified else 1) + n_ubatch))`` cells (the micro-batch
margin); layers that reuse another layer's KV store nothing; recurrent layers hold f32 states
per sequence. ``kv_read_bytes`` is the ideal: the K/V a decode step at a given position reads.
``KvSettings`` are llama_context's inputs; how llama-server's flags and start-up rules (``-np``
auto, ``--fit`` sizing an unset ``-c``) arrive at them is ``theory.server_flags``. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from servelab.errors import UsageError
from servelab.theory.arch import Architecture, LayerSpec
from servelab.theory.kvtypes import CACHE_TYPES, CacheType

CELL_PAD = 256  # llama_context pads n_ctx and n_ctx_seq; the SWA cache is padded the same
F32_BYTES = 4


def pad(value: int, multiple: int) -> int:
    return (value + multiple - 1) // multiple * multiple


@dataclass(frozen=True, slots=True)
class KvSettings:
    """llama-server's KV-relevant flags: ``-c`` (``n_ctx``, total over sequences; 0 = the
    trained context), ``-np``, ``-ctk``/``-ctv``, ``--kv-unified``, ``-b``, ``-ub``,
    ``--swa-full``, ``-fa`` (off pads V rows to the widest layer) and the recurrent rollback
    rows speculative MTP/EAGLE asks for (``n_rs_seq``)."""

    n_ctx: int
    n_seq: int = 1
    type_k: CacheType = field(default_factory=lambda: CACHE_TYPES["f16"])
    type_v: CacheType = field(default_factory=lambda: CACHE_TYPES["f16"])
    unified: bool = False
    n_batch: int = 2048
    n_ubatch: int = 512
    swa_full: bool = False
    flash_attn: bool = True
    n_rs_seq: int = 0


@dataclass(frozen=True, slots=True)
class KvGroup:
    """One cache: ``kind`` is ``full``, ``sliding``, ``shared`` (reuses another layer's KV,
    stores nothing) or ``recurrent`` (K = rolling state r, V = recurrent state s)."""

    kind: str
    layers: tuple[int, ...]
    cells: int
    streams: int
    k_bytes: int
    v_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.k_bytes + self.v_bytes


@dataclass(frozen=True, slots=True)
class KvAllocation:
    """The caches llama.cpp allocates; ``n_ctx``/``n_ctx_seq`` after its padding."""

    n_ctx: int
    n_ctx_seq: int
    n_ubatch: int
    groups: tuple[KvGroup, ...]

    @property
    def kv_bytes(self) -> int:
        """Attention K+V bytes (what the ``llama_kv_cache: size`` lines sum to)."""
        return sum(g.total_bytes for g in self.groups if g.kind != "recurrent")

    @property
    def recurrent_bytes(self) -> int:
        return sum(g.total_bytes for g in self.groups if g.kind == "recurrent")

    @property
    def total_bytes(self) -> int:
        return self.kv_bytes + self.recurrent_bytes

    def group(self, kind: str) -> KvGroup | None:
        return next((g for g in self.groups if g.kind == kind), None)


def _context_cells(arch: Architecture, s: KvSettings) -> tuple[int, int, int]:
    """(n_ctx, n_ctx_seq, n_ubatch) after llama_context's clamping and padding."""
    if s.n_ctx < 0 or s.n_seq < 1:
        raise UsageError("context must be >= 0 and parallel sequences >= 1; fix -c / -np")
    n_ctx_raw = s.n_ctx or arch.n_ctx_train or 0
    if n_ctx_raw <= 0:
        raise UsageError(f"{arch.name}: no trained context known; give the context length")
    n_ubatch = min(min(n_ctx_raw, s.n_batch), s.n_ubatch or s.n_batch)
    n_ctx = pad(n_ctx_raw, CELL_PAD)
    if s.unified:
        return n_ctx, n_ctx, n_ubatch
    n_ctx_seq = pad(n_ctx // s.n_seq, CELL_PAD)
    return n_ctx_seq * s.n_seq, n_ctx_seq, n_ubatch


def _swa_cells(arch: Architecture, s: KvSettings, n_ctx_seq: int, n_ubatch: int) -> int:
    if s.swa_full or not arch.sliding_window:
        return n_ctx_seq
    window = arch.sliding_window * (s.n_seq if s.unified else 1) + n_ubatch
    return pad(min(n_ctx_seq, window), CELL_PAD)


def _attention_group(
    kind: str, layers: list[LayerSpec], cells: int, streams: int, s: KvSettings, v_max: int
) -> KvGroup:
    k_bytes = sum(s.type_k.row_bytes(x.k_elements) for x in layers) * cells * streams
    v_rows = [v_max if not s.flash_attn else x.v_elements for x in layers]
    v_bytes = sum(s.type_v.row_bytes(v) for v in v_rows) * cells * streams
    return KvGroup(kind, tuple(x.index for x in layers), cells, streams, k_bytes, v_bytes)


def _recurrent_group(arch: Architecture, s: KvSettings) -> KvGroup | None:
    layers = [x.index for x in arch.layers if x.kind == "recurrent"]
    if not layers or arch.recurrent is None:
        return None
    rows = max(1, s.n_seq) * (1 + s.n_rs_seq)
    r_bytes = arch.recurrent.conv_elements * F32_BYTES * rows * len(layers)
    s_bytes = arch.recurrent.state_elements * F32_BYTES * rows * len(layers)
    return KvGroup("recurrent", tuple(layers), rows, 1, r_bytes, s_bytes)


def llama_kv_allocation(arch: Architecture, settings: KvSettings) -> KvAllocation:
    """The KV and recurrent-state memory llama.cpp allocates for ``arch`` under ``settings``."""
    n_ctx, n_ctx_seq, n_ubatch = _context_cells(arch, settings)
    streams = 1 if settings.unified else settings.n_seq
    owners = [x for x in arch.layers if x.owns_kv]
    v_max = max((x.v_elements for x in owners), default=0)
    full = [x for x in owners if not x.sliding]
    sliding = [x for x in owners if x.sliding]
    swa_cells = _swa_cells(arch, settings, n_ctx_seq, n_ubatch)
    groups = [_attention_group("full", full, n_ctx_seq, streams, settings, v_max)]
    if sliding:
        groups.append(_attention_group("sliding", sliding, swa_cells, streams, settings, v_max))
    shared = tuple(x.index for x in arch.layers if x.kv_source is not None)
    if shared:
        groups.append(KvGroup("shared", shared, 0, streams, 0, 0))
    recurrent = _recurrent_group(arch, settings)
    if recurrent is not None:
        groups.append(recurrent)
    return KvAllocation(n_ctx, n_ctx_seq, n_ubatch, tuple(groups))


def kv_read_bytes(arch: Architecture, position: int, type_k: CacheType, type_v: CacheType) -> int:
    """Bytes of cache one decode step reads at sequence ``position``: every attention layer
    that stores KV reads ``position`` rows (a sliding layer at most its window), every
    recurrent layer its f32 states. The ideal, without llama.cpp's padding."""
    total = 0
    for layer in arch.layers:
        if layer.owns_kv:
            rows = min(position, arch.sliding_window or position) if layer.sliding else position
            k = type_k.row_bytes(layer.k_elements)
            total += (k + type_v.row_bytes(layer.v_elements)) * rows
        elif layer.kind == "recurrent" and arch.recurrent is not None:
            total += (arch.recurrent.conv_elements + arch.recurrent.state_elements) * F32_BYTES
    return total
