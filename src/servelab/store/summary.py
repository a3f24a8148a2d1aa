"""The typed summary of a run: the records behind ``summary.json`` (docs/summary-json.md).

Owns the frozen records ``servelab.analysis`` produces and ``servelab.report`` renders:
``Summary`` (an experiment, import or compare run, as ``servelab report`` writes it) with its
``ArmSummary``, ``MetricSummary``, ``RateCI``, ``Comparison``, ``Proportion``, ``SweepRow``,
``Stopping``, ``Warning``, ``GateResult``, theory and quality sections, the cross-hardware
matrix of a run spread over Ray nodes (``HardwareMatrixRow``), the spec-decode and
prefix-cache records (``store.engine_records``); and ``BenchSummary``
(what ``servelab bench`` writes: arms, engine counter figures and open-loop figures).

``to_json()`` gives exactly the layout of docs/summary-json.md, keys in the order they have
always been written (so summary files stay diff-friendly), optional keys left out when unset;
``from_json(obj)`` reads one back (keys a reader does not know are ignored: keys are only ever
added). Pure: no files; writing and reading the file is the caller's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Literal, Self, TypeVar

from pydantic import BaseModel, TypeAdapter

from servelab.stats.batch_fit import BatchFit, BatchFitPoint
from servelab.stats.capacity import CapacitySection, GoodputLevel

# One definition each, in the pure core: k of n with its Wilson interval; one metric over the
# successful trials. Re-exported under the names summary.json's records use.
from servelab.stats.prompt_effects import PromptEffect
from servelab.stats.proportions import Rate as RateCI
from servelab.stats.summary import Summary as MetricSummary
from servelab.store.engine_records import PrefixCacheRecord, SpecDecodeRecord
from servelab.store.perplexity import PerplexityDoc
from servelab.theory.hardware import Hardware

Number = int | float
Verdict = Literal["better", "worse", "no_difference", "inconclusive"]

SUMMARY_SCHEMA_VERSION = 1
_T = TypeVar("_T")


def to_jsonable(value: object) -> object:
    """Records to plain JSON values: fields in declaration order, ``OMIT_NONE`` keys left out
    when None, tuples as lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        omit: frozenset[str] = getattr(value, "OMIT_NONE", frozenset())
        out: dict[str, object] = {}
        for f in dataclasses.fields(value):
            v = getattr(value, f.name)
            if v is None and f.name in omit:
                continue
            out[f.name] = to_jsonable(v)
        return out
    if isinstance(value, BaseModel):  # a record of its own file (quality/ppl.json)
        return to_jsonable(value.model_dump())
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    return value


class _Record:
    """Mixin: ``to_json`` and ``from_json`` for a frozen dataclass record."""

    __slots__ = ()
    OMIT_NONE: ClassVar[frozenset[str]] = frozenset()

    def to_json(self) -> dict[str, object]:
        out = to_jsonable(self)
        assert isinstance(out, dict)
        return out

    @classmethod
    def from_json(cls, obj: object) -> Self:
        """The record read back from parsed JSON (unknown keys are ignored)."""
        record: Self = _adapter(cls).validate_python(obj)
        return record


# ------------------------------------------------------------------------------ per arm


@dataclass(frozen=True, slots=True)
class ArmSummary(_Record):
    """Counts over an arm's trial requests and its metric summaries.

    A bench arm has only the fields up to ``metrics``; ``servelab report`` adds the rest.
    """

    OMIT_NONE: ClassVar[frozenset[str]] = frozenset(
        {"n_blocks", "error_rate", "truncated_rate", "by_concurrency"}
    )

    n_ok: int
    n_failed: int
    n_warmup: int
    failures: dict[str, int]
    finish_reasons: dict[str, int]
    n_out_fallback: int
    itl_unverified: int
    invalid_utf8_requests: int
    metrics: dict[str, MetricSummary]
    n_blocks: int | None = None
    error_rate: RateCI | None = None
    truncated_rate: RateCI | None = None
    by_concurrency: dict[str, dict[str, MetricSummary]] | None = None

    def rates(self) -> dict[str, RateCI]:
        """The arm's rates by name (error_rate first)."""
        named = (("error_rate", self.error_rate), ("truncated_rate", self.truncated_rate))
        return {name: r for name, r in named if r is not None}


# ------------------------------------------------------------------------------ between arms


@dataclass(frozen=True, slots=True)
class Comparison(_Record):
    """Candidate / reference ratio of one decision metric and statistic at one concurrency
    level. The fields after ``summary`` are absent from summaries of servelab 0.1."""

    OMIT_NONE: ClassVar[frozenset[str]] = frozenset(
        {"ratio_median", "method", "n_pairs", "prompts", "heterogeneity", "rate_rps"}
    )

    metric: str
    baseline: str
    candidate: str
    concurrency: int
    statistic: str
    lower_is_better: bool
    ratio: float | None
    ci_low: float | None
    ci_high: float | None
    ratio_mean: float | None
    ci_low_mean: float | None
    ci_high_mean: float | None
    verdict: str
    min_effect: float
    n_blocks: int
    blocks_needed: int | None
    paired: bool
    confidence_level: float
    ci_width: float | None
    n_blocks_baseline: int
    n_blocks_candidate: int
    summary: str
    ratio_median: float | None = None  # the medians' point ratio, for tables
    method: str | None = None  # rounds, rounds_prompts, prompt_noise or blocks_unpaired
    n_pairs: int | None = None  # (round, prompt) pairs compared; 0 when unpaired
    prompts: tuple[PromptEffect, ...] | None = None  # per-prompt paired effects
    heterogeneity: str | None = None  # the split of per-prompt effects in words
    rate_rps: float | None = None  # an open-loop level's rate (``concurrency``: its cap, 0 none)


@dataclass(frozen=True, slots=True)
class Proportion(_Record):
    """A rate (error, truncation) of a candidate against the baseline: exact test."""

    metric: str
    baseline: str
    candidate: str
    baseline_p: float | None
    candidate_p: float | None
    baseline_k: int
    baseline_n: int
    candidate_k: int
    candidate_n: int
    difference: float | None
    diff_ci_low: float | None
    diff_ci_high: float | None
    p_value: float | None
    verdict: str


@dataclass(frozen=True, slots=True)
class SweepRow(_Record):
    """One arm at one concurrency level: aggregate and per-stream rates, scaling efficiency."""

    concurrency: int
    aggregate_tps: float | None
    per_stream_tps: float | None
    ttft_s: float | None
    efficiency: float | None
    efficiency_reference: int | None
    n_blocks: int


@dataclass(frozen=True, slots=True)
class Stopping(_Record):
    """The stopping rule applied and why the run ended where it did."""

    rule: str
    sequential: bool
    spending: str | None
    alpha: float
    min_blocks: int | None
    max_blocks: int | None
    target_ci_width: float | None
    looks: int
    n_rounds: int
    confidence_level: float
    stopped_early: bool
    reason: str | None


@dataclass(frozen=True, slots=True)
class Confound(_Record):
    """A field the arms differ in, allowed with --allow-confound: its value per arm."""

    field: str
    values: dict[str, object]


@dataclass(frozen=True, slots=True, kw_only=True)
class Warning(_Record):
    """One of the fixed warning kinds, with the advice that removes it."""

    OMIT_NONE: ClassVar[frozenset[str]] = frozenset({"arm"})

    kind: str
    arm: str | None = None
    detail: str
    advice: str


@dataclass(frozen=True, slots=True)
class GateResult(_Record):
    """One arm against one gate rule, judged on an interval."""

    OMIT_NONE: ClassVar[frozenset[str]] = frozenset({"threshold_value"})

    passed: bool
    value: Number | None
    threshold: Number | None
    interval: tuple[Number | None, Number | None]
    note: str
    threshold_value: Number | None = None


# ------------------------------------------------------------------------------ theory


HardwareRecord = Hardware  # the hardware recorded at run start (one definition, theory/)


@dataclass(frozen=True, slots=True)
class SpecPrediction(_Record):
    """Speculative decoding: predicted speedup beside the measured one. ``draft_cost`` (c,
    one draft token vs one target step) is written only when a hardware profile gave it."""

    OMIT_NONE: ClassVar[frozenset[str]] = frozenset({"draft_cost"})

    spec_type: str
    mean_draft_length: int
    acceptance: float
    draft_step_fraction: float
    verify_cost: float
    tokens_per_verify_step: float
    tokens_per_verify_step_iid: float
    predicted_speedup_per_draft_step: float
    predicted_speedup: float
    measured_speedup: float | None
    assumes: str
    draft_cost: float | None = None


@dataclass(frozen=True, slots=True)
class ArmPrediction(_Record):
    """The roofline ceiling and KV memory of one arm beside what it measured. ``profile``:
    the hardware profile (``servelab calibrate``) behind the ceiling, written only when there
    was one (without, the ceiling is datasheet bandwidth / bytes)."""

    OMIT_NONE: ClassVar[frozenset[str]] = frozenset({"spec", "profile"})

    hardware: str | None
    position: int | None
    bytes_per_token: float
    decode_ceiling_tps: float | None
    measured_decode_tps: float | None
    pct_of_roofline: float | None
    kv_bytes_predicted: int
    kv_mib_reported: float | None
    kv_matches: bool | None
    spec: SpecPrediction | None = None
    profile: str | None = None


@dataclass(frozen=True, slots=True)
class TheoryNote(_Record):
    """An arm that cannot be predicted, and why."""

    note: str


@dataclass(frozen=True, slots=True)
class TheorySection(_Record):
    hardware: HardwareRecord | None
    arms: dict[str, ArmPrediction | TheoryNote]


# ------------------------------------------------------------------------------ hardware


@dataclass(frozen=True, slots=True)
class HardwareMatrixRow(_Record):
    """One arm on one kind of node of a run spread over Ray (``servelab run --ray``): its
    successful trial requests on the nodes of that hardware label, and its measured median
    decode rate over the roofline ceiling of those nodes (``roofline_pct``: a fraction, as
    ``pct_of_roofline`` of a prediction; 0.33 is 33 %)."""

    hardware: str
    arm: str
    nodes: tuple[str, ...]
    blocks: tuple[int, ...]
    n_requests: int
    decode_tps_median: float | None
    decode_tps_pooled: float | None
    ttft_s_median: float | None
    ceiling_tps: float | None
    roofline_pct: float | None


# ------------------------------------------------------------------------------ quality


@dataclass(frozen=True, slots=True)
class QualityMetricInfo(_Record):
    name: str
    higher_is_better: bool
    population: str
    summary: str


@dataclass(frozen=True, slots=True)
class QualityArm(_Record):
    n_rows: int
    rates: dict[str, RateCI]
    tool_outcomes: dict[str, int]
    script_classes: dict[str, int]
    flag_counts: dict[str, int]


@dataclass(frozen=True, slots=True)
class RateComparison(_Record):
    difference: float | None
    diff_ci_low: float | None
    diff_ci_high: float | None
    p_value: float | None
    verdict: str


@dataclass(frozen=True, slots=True)
class QualitySection(_Record):
    """Quality rates per arm and each candidate's exact test against the baseline; ``ppl`` is
    the content of ``quality/ppl.json`` as ``servelab quality ppl`` wrote it."""

    OMIT_NONE: ClassVar[frozenset[str]] = frozenset(
        {"confidence", "baseline", "metrics", "arms", "comparisons", "ppl"}
    )

    notes: tuple[str, ...] = ()
    confidence: float | None = None
    baseline: str | None = None
    metrics: tuple[QualityMetricInfo, ...] | None = None
    arms: dict[str, QualityArm] | None = None
    comparisons: dict[str, dict[str, RateComparison]] | None = None
    ppl: PerplexityDoc | None = None


# ------------------------------------------------------------------------------ whole run


@dataclass(frozen=True, slots=True)
class Summary(_Record):
    """``summary.json`` of an experiment, import or compare run (docs/summary-json.md)."""

    OMIT_NONE: ClassVar[frozenset[str]] = frozenset(
        {"theory", "quality", "gates", "gates_required", "gates_failed", "references", "prompts",
         "capacity", "spec_decode", "prefix_cache", "batch_fit", "hardware_matrix"}
    )  # fmt: skip

    schema_version: int
    kind: str
    run_id: str
    baseline: str
    decision_metrics: tuple[str, ...]
    interleaved: bool
    confidence: float
    seed: int
    n_resamples: int
    arms: dict[str, ArmSummary]
    comparisons: tuple[Comparison, ...]
    proportions: tuple[Proportion, ...]
    sweep: dict[str, tuple[SweepRow, ...]]
    stopping: Stopping
    config_diff: dict[str, dict[str, object]] = field(default_factory=dict)
    allowed_confounds: tuple[Confound, ...] = ()
    warnings: tuple[Warning, ...] = ()
    theory: TheorySection | None = None
    quality: QualitySection | None = None
    gates: dict[str, dict[str, GateResult]] | None = None
    gates_required: tuple[str, ...] | None = None
    gates_failed: tuple[str, ...] | None = None
    references: dict[str, str] | None = None  # candidate -> its reference, when not baseline
    prompts: str | None = None  # "sampled" when the verdicts sample prompts (default fixed)
    capacity: CapacitySection | None = None  # with SLOs: goodput per level, capacity per arm
    spec_decode: dict[str, SpecDecodeRecord] | None = None  # arms that speculated
    prefix_cache: dict[str, PrefixCacheRecord] | None = None  # arms caching or with hits
    batch_fit: dict[str, BatchFit] | None = None  # sweeps of 3+ levels: the batch cost fit
    hardware_matrix: tuple[HardwareMatrixRow, ...] | None = None  # spread over Ray nodes

    def arm_order(self) -> list[str]:
        """Arms, baseline first."""
        arms = list(self.arms)
        if self.baseline in arms:
            arms.remove(self.baseline)
            arms.insert(0, self.baseline)
        return arms


@dataclass(frozen=True, slots=True)
class EngineCounterFigures(_Record):
    """Run-level figures from the engine's /metrics counter deltas (empty without deltas)."""

    tokens_predicted: float | None
    decode_tps_counters: float | None
    prompt_tokens: float | None
    draft_tokens: float | None
    draft_accepted: float | None
    acceptance_rate: float | None


@dataclass(frozen=True, slots=True)
class OpenLoopFigures(_Record):
    """An open-loop block's sending: requested, scheduled and achieved rates and the lag.

    ``achieved_rps`` = (n - 1) / (last send - first send) over the n trial requests sent (n
    sends span n - 1 gaps); ``scheduled_rps`` the same over their scheduled times.
    ``behind`` names what fell behind (``client_behind``: no cap and the client missed its
    schedule; ``cap_limited``: ``max_concurrency`` held requests back), None when on time."""

    OMIT_NONE: ClassVar[frozenset[str]] = frozenset({"max_concurrency", "behind", "detail"})

    requested_rps: float
    scheduled_rps: float | None
    achieved_rps: float | None
    n_sent: int
    lag_p50_s: float | None
    lag_p99_s: float | None
    lag_max_s: float | None
    max_concurrency: int | None = None
    behind: Literal["client_behind", "cap_limited"] | None = None
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class BenchSummary(_Record):
    """``summary.json`` of ``servelab bench``: its arm(s), the engine counter figures, for an
    open loop its rates and lag (``open_loop``), with SLOs the goodput, its spec-decode and
    prefix-cache records (each left out when None)."""

    OMIT_NONE: ClassVar[frozenset[str]] = frozenset(
        {"open_loop", "goodput", "spec_decode", "prefix_cache"}
    )

    schema_version: int
    arms: dict[str, ArmSummary]
    engine_counters: EngineCounterFigures | dict[str, float] = field(default_factory=dict)
    open_loop: OpenLoopFigures | None = None
    goodput: GoodputLevel | None = None  # with --slo: requests meeting every SLO per second
    spec_decode: dict[str, SpecDecodeRecord] | None = None
    prefix_cache: dict[str, PrefixCacheRecord] | None = None


_ADAPTERS: dict[type, TypeAdapter[object]] = {}


def _adapter(cls: type[_T]) -> TypeAdapter[_T]:
    """One validator per record type, built on first use (building one takes milliseconds)."""
    if cls not in _ADAPTERS:
        _ADAPTERS[cls] = TypeAdapter(cls)
    return _ADAPTERS[cls]  # type: ignore[return-value]


def read_summary(obj: Mapping[str, object]) -> Summary | BenchSummary:
    """A ``summary.json``'s content as the record it is (a bench summary has no ``kind``)."""
    if "kind" in obj:
        return Summary.from_json(obj)
    return BenchSummary.from_json(obj)


__all__ = [
    "SUMMARY_SCHEMA_VERSION",
    "ArmPrediction",
    "ArmSummary",
    "BatchFit",
    "BatchFitPoint",
    "BenchSummary",
    "Comparison",
    "Confound",
    "EngineCounterFigures",
    "GateResult",
    "HardwareMatrixRow",
    "HardwareRecord",
    "MetricSummary",
    "Number",
    "OpenLoopFigures",
    "PrefixCacheRecord",
    "Proportion",
    "QualityArm",
    "QualityMetricInfo",
    "QualitySection",
    "RateCI",
    "RateComparison",
    "SpecDecodeRecord",
    "SpecPrediction",
    "Stopping",
    "Summary",
    "SweepRow",
    "TheoryNote",
    "TheorySection",
    "Verdict",
    "Warning",
    "read_summary",
    "to_jsonable",
]
