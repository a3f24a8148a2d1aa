"""llama-server's own flags, read for their effect on the KV cache exactly as llama-server does.

Owns turning a llama-server command line (``-c 16384 -np 2 -ctk q8_0``) into the KV settings
that server 0c1e57098 ends up with: its argument parser (long flags may spell ``_`` for ``-``,
an integer is read like ``std::stoi``, a repeated flag keeps its last value), its defaults
(``-c 0`` = the model's trained context, ``-np -1`` = auto, ``-b 2048``, ``-ub 512``, ``-fa
auto``, f16 caches) and the rules its ``main`` and ``llama_context`` apply afterwards: ``-np``
auto becomes 4 slots with a unified KV cache, ``--kv-unified-per-slot N`` without ``-c`` sizes
the pool to slots x N, ``--fit`` (on by default) turns ``-c`` 0 with N separate slot caches into
N x the trained context, the slot context is capped by the trained context. Flags that do not
touch the KV cache are stepped over with a note; words llama-server would refuse are refused.
Pure: environment variables (``LLAMA_ARG_*``) and config files are not read.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import asdict, dataclass, replace

from servelab.errors import UsageError
from servelab.theory.kvtypes import CACHE_TYPES
from servelab.theory.server_flag_names import (
    LLAMA_SERVER_COMMIT,
    NO_VALUE,
    ONE_VALUE,
    TWO_VALUES,
)

CELL_PAD = 256
UINT32_MAX = 2**32 - 1
MAX_SEQ = 256  # LLAMA_MAX_SEQ
AUTO_SLOTS = 4  # what llama-server's main() makes of -np -1
_INT = re.compile(r"\s*([+-]?\d+)")
_TRUE = ("on", "enabled", "true", "1")
_FALSE = ("off", "disabled", "false", "0")
_AUTO = ("auto", "-1")
_EXITS = {"-h", "--help", "--usage", "--version", "-cl", "--cache-list", "--completion-bash",
          "--list-devices"}  # fmt: skip
_MODEL = {"-m", "--model", "-mu", "--model-url", "-hf", "-hfr", "--hf-repo", "-dr",
          "--docker-repo"}  # fmt: skip
_DRAFT = {"-md", "--model-draft", "--spec-draft-model", "--spec-type", "-hfd", "-hfrd",
          "--hf-repo-draft"}  # fmt: skip
_QUANTIZED = {name for name, t in CACHE_TYPES.items() if t.block_size > 1}


@dataclass(frozen=True, slots=True)
class ServerFlags:
    """The KV-relevant flags as llama-server read them (its defaults where not given), before
    its start-up rules. ``n_parallel`` -1 is auto; ``kv_unified`` None is not given;
    ``fit_min_ctx`` is ``--fit-ctx`` as the uint32 llama-server compares (``-c 0`` sets it to
    2^32-1, which keeps the trained context); ``notes`` say what was stepped over."""

    given: str
    argv: tuple[str, ...]
    n_ctx: int = 0
    n_parallel: int = -1
    kv_unified: bool | None = None
    kv_unified_per_slot: int = 0
    n_batch: int = 2048
    n_ubatch: int = 512
    swa_full: bool = False
    flash_attn: str = "auto"
    cache_type_k: str = "f16"
    cache_type_v: str = "f16"
    embedding: bool = False
    fit: bool = True
    fit_min_ctx: int = 4096
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """What llama-server runs with after its start-up rules. ``n_ctx`` is the total ``-c`` (0
    still means the trained context, which needs the model); ``flash_attn`` is False only for
    ``-fa off`` (auto sizes the cache as on)."""

    n_ctx: int
    n_parallel: int
    kv_unified: bool
    kv_unified_per_slot: int
    n_batch: int
    n_ubatch: int
    swa_full: bool
    flash_attn: bool
    cache_type_k: str
    cache_type_v: str
    notes: tuple[str, ...]
    trained_ctx_streams: int = 1


def _refuse(problem: str) -> UsageError:
    return UsageError(f"--flags: {problem}")


def _stoi(flag: str, text: str) -> tuple[int, str | None]:
    """``std::stoi``: leading blanks, a sign, digits; the rest is ignored (with a note)."""
    m = _INT.match(text)
    if m is None:
        raise _refuse(f"{flag} needs an integer, not {text!r} (llama-server stops there too)")
    value = int(m[1])
    if not -(2**31) <= value < 2**31:
        raise _refuse(f"{flag} {text} is out of range for llama-server (a 32-bit integer)")
    rest = text[m.end() :]
    note = f"llama-server reads {flag} {text!r} as {value} (stops at {rest!r})" if rest else None
    return value, note


def _canonical(word: str) -> str:
    return word.replace("_", "-") if word.startswith("--") else word


def _split(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError as exc:
        raise _refuse(f"cannot split {text!r} into words ({exc}); check the quotes") from exc


def _arity(flag: str, word: str) -> int:
    if flag in NO_VALUE:
        return 0
    if flag in ONE_VALUE:
        return 1
    if flag in TWO_VALUES:
        return 2
    hint = f" (write {word.split('=')[0]} {word.split('=', 1)[1]})" if "=" in word else ""
    raise _refuse(
        f"llama-server {LLAMA_SERVER_COMMIT} has no flag {word!r}{hint}; it would refuse to "
        "start: fix or remove it"
    )


def _cache_type(flag: str, value: str) -> str:
    if value not in CACHE_TYPES:  # exact: llama-server compares ggml's lower-case names
        raise _refuse(f"{flag} {value!r}: llama-server supports {', '.join(CACHE_TYPES)}")
    return value


def _flash(value: str) -> str:
    for name, spellings in (("on", _TRUE), ("off", _FALSE), ("auto", _AUTO)):
        if value in spellings:
            return name
    raise _refuse(f"-fa {value!r}: llama-server takes on, off or auto")


def _int_field(flag: str, value: str, notes: list[str]) -> int:
    number, note = _stoi(flag, value)
    if note:
        notes.append(note)
    return number


_CTX = ("-c", "--ctx-size")
_SLOTS = ("-np", "--parallel")
_BATCH = ("-b", "--batch-size")
_UBATCH = ("-ub", "--ubatch-size")
_PER_SLOT = ("--kv-unified-per-slot",)
_FIT_CTX = ("-fitc", "--fit-ctx")
_UNIFIED = ("-kvu", "--kv-unified", "-no-kvu", "--no-kv-unified")
_CTK = ("-ctk", "--cache-type-k")
_CTV = ("-ctv", "--cache-type-v")
_FA = ("-fa", "--flash-attn")
_FIT = ("-fit", "--fit")
_EMBEDDING = ("--embedding", "--embeddings")


def _apply_int(f: ServerFlags, flag: str, number: int) -> ServerFlags:
    if flag in _CTX:  # an explicit -c 0 also stops --fit from shrinking the context
        return replace(f, n_ctx=number, fit_min_ctx=UINT32_MAX if number == 0 else f.fit_min_ctx)
    if flag in _SLOTS:
        if number == 0:
            raise _refuse("-np 0 is invalid for llama-server: give the slot count, or -1 for auto")
        return replace(f, n_parallel=number)
    if flag in _BATCH:
        return replace(f, n_batch=number)
    if flag in _UBATCH:
        return replace(f, n_ubatch=number)
    if flag in _PER_SLOT:
        return replace(f, kv_unified_per_slot=number)
    return replace(f, fit_min_ctx=number % 2**32)  # --fit-ctx, compared as uint32


def _apply(f: ServerFlags, flag: str, values: list[str], notes: list[str]) -> ServerFlags:
    """One flag's effect on ``f`` (the handler llama-server's arg.cpp runs for it)."""
    v = values[0] if values else ""
    if flag in _CTX + _SLOTS + _BATCH + _UBATCH + _PER_SLOT + _FIT_CTX:
        return _apply_int(f, flag, _int_field(flag, v, notes))
    if flag in _UNIFIED:
        return replace(f, kv_unified=not flag.startswith(("-no-", "--no-")))
    if flag in _CTK:
        return replace(f, cache_type_k=_cache_type(flag, v))
    if flag in _CTV:
        return replace(f, cache_type_v=_cache_type(flag, v))
    if flag == "--swa-full":
        return replace(f, swa_full=True)
    if flag in _EMBEDDING:
        return replace(f, embedding=True)
    if flag in _FA:
        return replace(f, flash_attn=_flash(v))
    if flag in _FIT:
        if v not in _TRUE + _FALSE:
            raise _refuse(f"--fit {v!r}: llama-server takes on or off")
        return replace(f, fit=v in _TRUE)
    notes.append(_skip_note(flag))
    return f


def _skip_note(flag: str) -> str:
    if flag in _MODEL:
        return f"{flag} ignored: the model is the MODEL argument"
    if flag in _DRAFT or flag.startswith("--spec-draft") or flag.endswith("-draft"):
        return f"{flag}: the draft model's own KV cache is not part of this prediction"
    if flag in ("--override-kv",):
        return "--override-kv not applied: the model's metadata is read as stored in the file"
    return f"ignored (no effect on the KV cache): {flag}"


def _check_word(flag: str, word: str) -> None:
    if flag in _EXITS:
        raise _refuse(f"{word} makes llama-server print and exit without serving; remove it")
    if flag in NO_VALUE and flag.endswith(("-default", "-spec")):
        raise _refuse(
            f"{word} is a preset that downloads a model and sets -c/-np/-b/-ub itself; "
            "give the model as MODEL and spell its flags out"
        )


def parse_server_flags(text: str) -> ServerFlags:
    """The KV-relevant flags in ``text`` as llama-server 0c1e57098 reads them (last value of a
    repeated flag wins). Raises ``UsageError`` for anything llama-server would refuse."""
    words = _split(text)
    notes: list[str] = []
    if words and words[0].rsplit("/", 1)[-1] == "llama-server":  # a pasted command line
        notes.append(f"{words.pop(0)}: the program name, skipped")
    f = ServerFlags(given=text, argv=tuple(words))
    seen: set[str] = set()
    i = 0
    while i < len(words):
        word, flag = words[i], _canonical(words[i])
        n = _arity(flag, word)
        _check_word(flag, word)
        if i + n >= len(words):
            raise _refuse(f"{word} needs {n} value(s) after it (llama-server: expected value)")
        if flag in seen:
            notes.append(f"{word} given more than once; llama-server uses the last one")
        seen.add(flag)
        f = _apply(f, flag, words[i + 1 : i + 1 + n], notes)
        i += 1 + n
    return replace(f, notes=_merge_ignored(notes))


def _merge_ignored(notes: list[str]) -> tuple[str, ...]:
    """One note for every flag stepped over, in order, after the others."""
    head = "ignored (no effect on the KV cache): "
    ignored = [n.removeprefix(head) for n in notes if n.startswith(head)]
    kept = [n for n in notes if not n.startswith(head)]
    if ignored:
        kept.append(head + ", ".join(dict.fromkeys(ignored)))
    return tuple(dict.fromkeys(kept))


def _checked(f: ServerFlags, notes: list[str]) -> None:
    for flag, value in (("-c", f.n_ctx), ("-b", f.n_batch), ("-ub", f.n_ubatch)):
        if value < 0:
            raise _refuse(f"{flag} {value} is negative; llama-server would misread it: give >= 0")
    if f.n_batch == 0 and f.n_ubatch == 0:
        raise _refuse("-b 0 with -ub 0: llama-server refuses both zero; give -b or -ub")
    if f.n_parallel > MAX_SEQ:
        raise _refuse(f"-np {f.n_parallel}: llama.cpp allows at most {MAX_SEQ} sequences")
    if f.flash_attn == "off" and f.cache_type_v in _QUANTIZED:
        raise _refuse(f"-ctv {f.cache_type_v} needs flash attention; llama-server refuses -fa off "
                      "with it: drop -fa off or use -ctv f16")  # fmt: skip
    if f.n_parallel < 0 and f.kv_unified is False:
        notes.append("-no-kvu has no effect with -np auto: llama-server unifies the KV cache")


def server_settings(f: ServerFlags) -> ServerSettings:
    """The settings llama-server's ``main`` makes of ``f``: -np auto = 4 slots with a unified
    cache; ``--embedding`` lowers -b to -ub; ``--kv-unified-per-slot N`` with no -c (nor an
    explicit ``-c 0``) sizes -c to slots x N."""
    notes = list(f.notes)
    _checked(f, notes)
    parallel, unified = f.n_parallel, bool(f.kv_unified)
    if parallel < 0:
        parallel, unified = AUTO_SLOTS, True
        notes.append(f"-np auto (llama-server's default): {AUTO_SLOTS} slots, unified KV cache")
    n_batch = f.n_ubatch if f.embedding and f.n_batch > f.n_ubatch else f.n_batch
    n_ctx = f.n_ctx
    if f.kv_unified_per_slot > 0 and n_ctx == 0 and f.fit_min_ctx != UINT32_MAX:
        n_ctx = parallel * f.kv_unified_per_slot
        notes.append(f"--kv-unified-per-slot {f.kv_unified_per_slot} without -c: -c {n_ctx}")
    # --fit (on by default) resolves an unset -c before llama_context does: the trained
    # context for EACH of the separate slot caches (common/fit.cpp), not one shared by them
    streams = 1 if unified else parallel
    if n_ctx == 0 and f.fit and streams > 1:
        notes.append(
            f"-c unset or 0 with {streams} separate slot caches: llama-server's --fit sizes -c "
            f"to {streams} x the trained context (with -fit off: one trained context in all)"
        )
    if n_ctx == 0 and f.fit and f.fit_min_ctx != UINT32_MAX:
        notes.append("no -c: --fit may shrink the context to fit free GPU memory; predicted for "
                     "the full context (give -c 0 to forbid that)")  # fmt: skip
    return ServerSettings(
        n_ctx=n_ctx, n_parallel=parallel, kv_unified=unified,
        kv_unified_per_slot=f.kv_unified_per_slot, n_batch=n_batch, n_ubatch=f.n_ubatch,
        swa_full=f.swa_full, flash_attn=f.flash_attn != "off", cache_type_k=f.cache_type_k,
        cache_type_v=f.cache_type_v, notes=tuple(dict.fromkeys(notes)),
        trained_ctx_streams=streams if f.fit else 1,
    )  # fmt: skip


def _pad(value: int) -> int:
    return (value + CELL_PAD - 1) // CELL_PAD * CELL_PAD


def total_context(s: ServerSettings, n_ctx_train: int | None) -> int:
    """The -c llama.cpp uses: the given one, or for 0 the trained context (times the number of
    separate slot caches when --fit resolves it)."""
    n_ctx = s.n_ctx or min((n_ctx_train or 0) * s.trained_ctx_streams, UINT32_MAX)
    if n_ctx <= 0:
        raise _refuse("no -c and the model's trained context is unknown; give -c N")
    return n_ctx


def slot_context(s: ServerSettings, n_ctx_train: int | None) -> int:
    """Tokens one slot may hold (llama-server's ``n_ctx_slot``): the padded per-sequence
    context (all of it when unified), capped by ``--kv-unified-per-slot`` and the trained
    context."""
    n_ctx = _pad(total_context(s, n_ctx_train))
    per_seq = n_ctx if s.kv_unified else _pad(n_ctx // s.n_parallel)
    if s.kv_unified_per_slot > 0:
        per_seq = min(per_seq, s.kv_unified_per_slot)
    return min(per_seq, n_ctx_train) if n_ctx_train else per_seq


def equivalent_flags(
    n_ctx: int, parallel: int, kv_k: str, kv_v: str, *, unified: bool = False
) -> str:
    """The llama-server flags that give this KV cache (``-np`` always spelled out: its
    default is auto, not 1)."""
    return f"-c {n_ctx} -np {parallel}{' -kvu' if unified else ''} -ctk {kv_k} -ctv {kv_v}"


def flags_json(f: ServerFlags) -> dict[str, object]:
    """``settings.flags`` of docs/predict-json.md: as given, as read, as llama-server runs."""
    read = {k: v for k, v in asdict(f).items() if k not in ("given", "argv", "notes")}
    effective = server_settings(f)
    return {
        "given": f.given, "argv": list(f.argv), "read": read,
        "effective": {k: v for k, v in asdict(effective).items() if k != "notes"},
        "notes": list(effective.notes), "llama_server_commit": LLAMA_SERVER_COMMIT,
    }  # fmt: skip
