"""Theory beside measurement: architectures, KV-cache memory, rooflines, MoE batch scaling and
speculative-decoding predictions (docs/theory.md gives every formula and its assumptions).

Owns nothing itself: it re-exports the public API of its modules. Everything here is pure:
no file I/O, no processes, no network; readers take parsed dicts and tensor tables.
"""

from __future__ import annotations

from servelab.theory.arch import Architecture, LayerSpec, MoeSpec, RecurrentSpec, Weights
from servelab.theory.hardware import CATALOG, Hardware, find_hardware, match_gpu
from servelab.theory.kvcache import KvAllocation, KvSettings, kv_read_bytes, llama_kv_allocation
from servelab.theory.kvreport import MeasuredKv, measured_kv_from_log, report_matches
from servelab.theory.kvtypes import CACHE_TYPES, CacheType, cache_type
from servelab.theory.predict import (
    ArmPrediction,
    PredictInput,
    Prediction,
    predict,
    predict_arm,
    prediction_to_json,
)
from servelab.theory.roofline import distinct_experts, fit_concurrency
from servelab.theory.specdec import break_even_acceptance, expected_tokens, speedup

__all__ = [
    "CACHE_TYPES",
    "CATALOG",
    "Architecture",
    "ArmPrediction",
    "CacheType",
    "Hardware",
    "KvAllocation",
    "KvSettings",
    "LayerSpec",
    "MeasuredKv",
    "MoeSpec",
    "PredictInput",
    "Prediction",
    "RecurrentSpec",
    "Weights",
    "break_even_acceptance",
    "cache_type",
    "distinct_experts",
    "expected_tokens",
    "find_hardware",
    "fit_concurrency",
    "kv_read_bytes",
    "llama_kv_allocation",
    "match_gpu",
    "measured_kv_from_log",
    "predict",
    "predict_arm",
    "prediction_to_json",
    "report_matches",
    "speedup",
]
