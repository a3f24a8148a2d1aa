"""`vllm bench serve --save-result --save-detailed` result files as servelab rows.

Owns the mapping of vLLM's per-request arrays (vllm/benchmarks/serve.py, ``benchmark()``):
``input_lens``, ``output_lens``, ``ttfts`` (s), ``itls`` (s per chunk gap), ``generated_texts``,
``errors`` ("" when the request succeeded), and, in newer vLLM, ``latencies`` (s),
``start_times`` (perf_counter, not wall clock) and ``queue_times``. A file written with
``--append-result`` holds several JSON documents, one per line: each is read as its own run.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from itertools import accumulate
from pathlib import Path

from servelab.errors import UsageError
from servelab.importers.common import (
    Imported,
    Partial,
    SourceRef,
    SourceSpec,
    classify_error,
    number_or_none,
    numbers,
)
from servelab.importers.table import stem_arms
from servelab.store import ArmEntry, as_json_object

Doc = Mapping[str, object]
"""One vllm bench serve result object (JSON boundary: vLLM's file, read as it is)."""

ARRAYS = ("input_lens", "output_lens", "ttfts", "itls", "generated_texts", "errors")
OPTIONAL_ARRAYS = ("latencies", "start_times", "queue_times")
SPEC_KEYS = (
    "spec_decode_acceptance_rate",
    "spec_decode_acceptance_length",
    "spec_decode_num_drafts",
    "spec_decode_draft_tokens",
    "spec_decode_accepted_tokens",
    "spec_decode_per_position_acceptance_rates",
)


def load_documents(path: Path) -> list[Doc]:
    """One or more JSON objects (``--append-result`` separates them with newlines)."""
    text = path.read_text(encoding="utf-8")
    decoder, docs, pos = json.JSONDecoder(), list[Doc](), 0
    while pos < len(text):
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            break
        try:
            doc, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
        if not isinstance(doc, dict):
            raise UsageError(f"{path}: expected vllm bench serve result objects")
        docs.append(doc)
    return docs


def is_vllm_result(doc: object) -> bool:
    return isinstance(doc, dict) and "ttfts" in doc and "itls" in doc


def _check(doc: Doc, where: str) -> int:
    missing = [k for k in ("ttfts", "itls", "errors") if k not in doc]
    if missing:
        raise UsageError(
            f"{where}: no per-request arrays ({', '.join(missing)}); "
            "rerun vllm bench serve with --save-result --save-detailed"
        )
    ttfts = doc["ttfts"]
    if not isinstance(ttfts, list):
        raise UsageError(f"{where}: ttfts is not a list; is this a vllm bench serve result?")
    n = len(ttfts)
    for key in (*ARRAYS, *OPTIONAL_ARRAYS):
        values = doc.get(key)
        if isinstance(values, list) and len(values) != n:
            raise UsageError(f"{where}: {key} has {len(values)} entries, ttfts has {n}")
    return n


def _arm_names(
    specs: Sequence[SourceSpec], docs: list[list[Doc]], arm_from: str | None
) -> list[list[str]]:
    stems = stem_arms(specs)
    names = []
    for spec, stem, file_docs in zip(specs, stems, docs, strict=True):
        per_doc = []
        for k, doc in enumerate(file_docs):
            if arm_from:
                if arm_from not in doc:
                    keys = ", ".join(k2 for k2, v in doc.items() if not isinstance(v, list))
                    raise UsageError(f"--arm-from {arm_from!r}: not in {spec.path}; keys: {keys}")
                per_doc.append(str(doc[arm_from]))
            elif len(file_docs) > 1 and not spec.arm:
                per_doc.append(str(doc.get("label") or f"{stem}-{k}"))
            else:
                per_doc.append(stem)
        names.append(per_doc)
    return names


def _concurrency(doc: Doc, n: int, result: Imported, arm: str) -> int | None:
    cap = number_or_none(doc.get("max_concurrency"))
    if cap is not None:
        return int(cap)
    rate = doc.get("request_rate", "inf")
    if str(rate) == "inf":
        return n  # every request was sent at time 0
    result.add_note(
        "open_loop",
        f"arm {arm}: requests were sent at {rate} req/s (open loop) with no concurrency cap: "
        "concurrency is not fixed and is recorded as null",
    )
    return None


def _at(doc: Doc, key: str, i: int) -> object:
    """``doc[key][i]``: the request's entry of a per-request array (None when absent)."""
    values = doc.get(key)
    return values[i] if isinstance(values, list) and i < len(values) else None


def _row(doc: Doc, i: int, arm: str, where: SourceRef) -> Partial:
    ttft = number_or_none(_at(doc, "ttfts", i))
    gaps = _at(doc, "itls", i)
    itls = list(numbers(gaps))
    error = _at(doc, "errors", i) or None
    n_out = _at(doc, "output_lens", i)
    chunks = list(accumulate([ttft, *itls])) if ttft else []
    latencies = doc.get("latencies")
    e2e = _at(doc, "latencies", i) if latencies else (chunks[-1] if chunks else None)
    verified = bool(chunks) and n_out == len(chunks)
    raw = {
        k: _at(doc, k, i) for k in ("start_times", "queue_times") if isinstance(doc.get(k), list)
    }
    return {
        "arm": arm,
        "block": i,
        "prompt_id": str(i),
        "outcome": classify_error(str(error)) if error else "ok",
        "error": str(error) if error else None,
        "ttft_s": ttft if ttft else None,
        "e2e_s": e2e,
        "n_out": n_out,
        "n_in": _at(doc, "input_lens", i),
        "text": _at(doc, "generated_texts", i),
        "chunk_t_s": chunks,
        "chunk_tokens": [1] * len(chunks),
        "chunk_tokens_source": "verified" if verified else "estimated",
        "itl_s": itls if verified else [],
        "source": where,
        "raw": raw,
    }


def _arm_meta(doc: Doc) -> ArmEntry:
    per_request = set(ARRAYS) | set(OPTIONAL_ARRAYS)
    meta = {k: v for k, v in doc.items() if k not in per_request and k not in SPEC_KEYS}
    spec = {k: doc[k] for k in SPEC_KEYS if k in doc}
    if not spec:
        return ArmEntry(source_meta=as_json_object(meta))
    return ArmEntry(source_meta=as_json_object(meta), engine_counters=as_json_object(spec))


def read_vllm(specs: Sequence[SourceSpec], arm_from: str | None, result: Imported) -> None:
    docs = [load_documents(s.path) for s in specs]
    names = _arm_names(specs, docs, arm_from)
    reconstructed = False
    for spec, file_docs, arms in zip(specs, docs, names, strict=True):
        for k, (doc, arm) in enumerate(zip(file_docs, arms, strict=True)):
            where = f"{spec.path}" + (f" (document {k})" if len(file_docs) > 1 else "")
            n = _check(doc, where)
            concurrency = _concurrency(doc, n, result, arm)
            for i in range(n):
                src: SourceRef = {"file": str(spec.path), "index": i}
                if len(file_docs) > 1:
                    src["document"] = k
                row = _row(doc, i, arm, src)
                result.rows.append({**row, "concurrency": concurrency})
            result.arms[arm] = _arm_meta(doc)
            reconstructed = reconstructed or "latencies" not in doc
    _notes(result, reconstructed)
    result.map_with(
        arrays={
            "ttfts": "ttft_s (s)",
            "itls": "chunk gaps: chunk_t_s = ttft + cumulative itls; itl_s when n_out == chunks",
            "latencies": "e2e_s (s)",
            "output_lens": "n_out",
            "input_lens": "n_in",
            "generated_texts": "text",
            "errors": "outcome / error ('' = ok)",
        },
        prompt_id="index of the request in the run (the dataset sample order)",
    )


def _notes(result: Imported, reconstructed: bool) -> None:
    result.add_note(
        "ttft_definition",
        "vLLM's ttft is from the send to the first chunk with text; it excludes client-side "
        "queueing (queue_times, when present, are kept in raw)",
    )
    if reconstructed:
        result.add_note(
            "reconstructed",
            "this vLLM version saves no per-request latency: e2e_s is ttft + sum(itls), the "
            "arrival of the last chunk (the end of the stream after it is not counted)",
        )
    result.add_note(
        "source_summary",
        "vllm bench serve warms up only with --num-warmups (default 0) after one readiness "
        "request; the result file does not say how many were sent",
    )
