"""llama-bench results (``-o json`` or ``-o jsonl``) as servelab rows, one per repetition.

Owns the mapping of llama-bench entries: each test (``pp N``, ``tg N``, ``pp N + tg M``, at an
optional depth) has ``samples_ns`` / ``samples_ts``, one value per repetition. ``tg`` repetitions
give ``decode_tps``, ``pp`` ones ``prefill_tps``, mixed ones ``e2e_s``. The arm is built from the
parameters that differ between entries (``n_threads=2,type_k=q8_0``) or from ``--arm-from``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from servelab.errors import UsageError
from servelab.importers.common import Imported, Partial, SourceRef, SourceSpec, number_or_none
from servelab.importers.table import stem_arms
from servelab.store import as_json_object

Entry = dict[str, object]
"""One llama-bench result object (JSON boundary: the tool's own output, read as it is)."""

# Fields that describe a test or its measurement, not the configuration under test.
TEST_KEYS = frozenset(
    {"n_prompt", "n_gen", "n_depth", "test_time", "avg_ns", "stddev_ns", "avg_ts", "stddev_ts",
     "samples_ns", "samples_ts"}
)  # fmt: skip
# Fields that follow from the model file: shown once, as model=<stem>.
MODEL_KEYS = frozenset({"model_filename", "model_type", "model_size", "model_n_params"})


def load_entries(path: Path) -> list[tuple[Entry, SourceRef]]:
    """(entry, where) pairs of a llama-bench JSON array or JSONL file."""
    text = path.read_text(encoding="utf-8")
    pairs: list[tuple[object, SourceRef]] = []
    try:
        doc = json.loads(text)
        items = doc if isinstance(doc, list) else [doc]
        pairs = [(e, {"file": str(path), "index": i}) for i, e in enumerate(items)]
    except json.JSONDecodeError:
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                pairs.append((json.loads(line), {"file": str(path), "line": number}))
            except json.JSONDecodeError as exc:
                raise UsageError(
                    f"{path}:{number}: not llama-bench JSON ({exc.msg}); was the run cut short?"
                ) from exc
    entries: list[tuple[Entry, SourceRef]] = []
    for entry, where in pairs:
        if not isinstance(entry, dict) or "samples_ns" not in entry:
            raise UsageError(
                f"{path}: entry {where} has no samples_ns; is this llama-bench -o json?"
            )
        entries.append((entry, where))
    return entries


def _int(value: object) -> int:
    number = number_or_none(value)
    return int(number) if number else 0


def is_llama_bench(doc: object) -> bool:
    items = doc if isinstance(doc, list) else [doc]
    return bool(items) and all(isinstance(e, dict) and "samples_ns" in e for e in items)


def test_name(entry: Mapping[str, object]) -> str:
    n_p, n_g, depth = (_int(entry.get(k)) for k in ("n_prompt", "n_gen", "n_depth"))
    parts = ([f"pp{n_p}"] if n_p else []) + ([f"tg{n_g}"] if n_g else [])
    return "+".join(parts) + (f"@d{depth}" if depth else "")


def _params(entry: Mapping[str, object]) -> dict[str, object]:
    params = {k: v for k, v in entry.items() if k not in TEST_KEYS and k not in MODEL_KEYS}
    if "model_filename" in entry:
        params = {"model": Path(str(entry["model_filename"])).stem, **params}
    return params


def differing(entries: list[Entry]) -> list[str]:
    """Parameter names whose values are not the same in every entry, in entry order."""
    keys: dict[str, None] = {}
    for e in entries:
        keys.update(dict.fromkeys(_params(e)))
    return [k for k in keys if len({json.dumps(_params(e).get(k)) for e in entries}) > 1]


def _arm(params: Mapping[str, object], keys: list[str], prefix: str | None) -> str:
    parts = [f"{k}={params.get(k)}" for k in keys]
    if prefix:
        parts.insert(0, prefix)
    return ",".join(parts)


def _arm_from(params: Mapping[str, object], fields: list[str], where: str) -> str:
    missing = [f for f in fields if f not in params]
    if missing:
        raise UsageError(
            f"--arm-from {missing[0]!r}: not a llama-bench field in {where}; "
            f"fields: {', '.join(params)}"
        )
    if len(fields) == 1:
        return str(params[fields[0]])
    return ",".join(f"{f}={params[f]}" for f in fields)


def _samples(entry: Mapping[str, object], key: str) -> list[float]:
    values = entry.get(key)
    if not isinstance(values, list):
        return []
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError) as exc:
        raise UsageError(f"llama-bench {key}: {values!r:.60} are not numbers") from exc


def _raw_ns(entry: Mapping[str, object], r: int) -> object:
    """The repetition's sample as the file holds it (an int of nanoseconds)."""
    values = entry.get("samples_ns")
    return values[r] if isinstance(values, list) else None


def _rows(entry: Mapping[str, object], arm: str, where: SourceRef) -> list[Partial]:
    n_p, n_g = _int(entry.get("n_prompt")), _int(entry.get("n_gen"))
    samples_ts = _samples(entry, "samples_ts")
    rows: list[Partial] = []
    for r, ns in enumerate(_samples(entry, "samples_ns")):
        t = ns / 1e9
        ts = samples_ts[r] if r < len(samples_ts) else (n_p + n_g) / t
        row: Partial = {"arm": arm, "block": r, "prompt_id": test_name(entry)}
        row["n_out_source"] = "usage"  # n_gen: exactly the tokens llama-bench generated
        if n_g and not n_p:
            row.update(decode_tps=ts, n_out=n_g)
        elif n_p and not n_g:
            row.update(prefill_tps=ts, server_prompt_s=t, n_in=n_p)
        else:
            row.update(e2e_s=t, n_in=n_p, n_out=n_g)
        raw: dict[str, object] = {
            "test_time": entry.get("test_time"), "sample_ns": _raw_ns(entry, r), "sample_ts": ts,
        }  # fmt: skip
        if entry.get("n_depth"):
            raw["n_depth"] = entry["n_depth"]
        rows.append({**row, "source": {**where, "repetition": r}, "raw": raw})
    return rows


def read_llama_bench(
    specs: Sequence[SourceSpec], arm_from: list[str] | None, result: Imported
) -> None:
    loaded = [(spec, load_entries(spec.path)) for spec in specs]
    entries = [e for _, pairs in loaded for e, _ in pairs]
    keys = differing(entries)
    stems = stem_arms(specs)
    for (spec, pairs), stem in zip(loaded, stems, strict=True):
        file_keys = differing([e for e, _ in pairs]) if spec.arm else keys
        for entry, where in pairs:
            params = _params(entry)
            if arm_from:
                arm = _arm_from(params, arm_from, str(spec.path))
            elif spec.arm or keys:
                arm = _arm(params, file_keys, spec.arm) or stem
            else:
                arm = stem if len(specs) > 1 else str(params.get("model", stem))
            result.rows.extend(_rows(entry, arm, where))
            if arm not in result.arms:
                result.arm_with(arm, params=as_json_object(params))
    result.map_with(
        tests={
            "tg": "decode_tps = samples_ts, n_out = n_gen",
            "pp": "prefill_tps = samples_ts, server_prompt_s = samples_ns / 1e9, n_in = n_prompt",
            "pp+tg": "e2e_s = samples_ns / 1e9, n_in, n_out",
        },
        block="repetition index",
        prompt_id="the test: pp64, tg32, pp32+tg16, tg32@d512",
        arm_fields=tuple(arm_from or keys),
    )
    _notes(result)


def _notes(result: Imported) -> None:
    result.add_note(
        "synthetic_load",
        "llama-bench times the engine alone: no HTTP, no chat template, no real prompts; tg "
        "rows decode n_gen tokens after an n_depth-token context, pp rows process n_prompt "
        "tokens. It runs one unmeasured warm-up per test unless --no-warmup was given (the "
        "JSON does not say which). Compare with served numbers only with care",
    )
    result.add_note(
        "decode_definition",
        "tg decode_tps is n_gen / time of the n_gen decode steps (all n tokens, no prefill)",
    )
