"""A hardware profile: what ``servelab calibrate`` measured on one machine and engine build,
and the fits the roofline and the speculative-decoding predictor take from it.

Owns the profile record (``HardwareProfile``, its JSON form with ``schema_version``) and the
least-squares fits behind it:

- decode step time = fixed + bytes read per step / ``bandwidth_bytes_s``: one bandwidth per
  machine, fitted over each calibrated model and its same-shape quant variants (a ``group``:
  points of one group share a fixed cost, groups share the bandwidth); the fixed part is what a
  step costs whatever it reads (kernel launches, sampling, sync), and it depends on the model's
  layers, kernels and vocabulary, so each measured model keeps its own: its measured step -
  its bytes / bandwidth. A model the profile never measured gets the machine's fixed cost, the
  median of the groups' fitted intercepts;
- the time to process K tokens in one batch, t(K) = a + b N(K) for a MoE (N(K) the expected
  distinct experts per layer, ``theory.roofline.distinct_experts``) and a + b K for a dense
  model, fitted over K = 1..k_max;
- a draft model's own decode step time.

r (verifying K + 1 tokens vs one step) is t(K + 1) / t(1) from the fit; c (one draft token vs
one target step) is the draft's step time / the target's. Models are keyed by the sha256 of
their file. Assumptions are in docs/theory.md. Pure: reading and writing files is
``runner.calibrate``'s.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

import numpy as np

from servelab.errors import UsageError
from servelab.theory.roofline import distinct_experts

PROFILE_SCHEMA_VERSION = 1
VerifyKind = Literal["union", "linear"]


@dataclass(frozen=True, slots=True)
class StepPoint:
    """One measured decode step: a model file (by sha256) reading ``bytes_per_step``;
    ``group``: the sha256 of the model whose shape it has (itself, or the model it is a quant
    variant of)."""

    model_sha256: str
    label: str
    bytes_per_step: float
    step_s: float
    group: str = ""

    @property
    def group_key(self) -> str:
        return self.group or self.model_sha256


@dataclass(frozen=True, slots=True)
class StepFit:
    """step_s = fixed + bytes / bandwidth_bytes_s with one fixed cost per group of points;
    ``fixed_s`` is the median of the groups' (the machine's, for models not measured).
    ``rms_rel_residual``: root mean square of (fit - measured) / measured over the points;
    ``clamped``: a group's fitted fixed cost was negative (noise) and is taken as 0.
    ``memory_bound`` False: step time did not grow with bytes (a CPU whose steps are bound by
    dequantisation compute), so the bandwidth is the fastest byte rate observed, a lower
    bound, and each group's fixed cost is what its steps took beyond that."""

    fixed_s: float
    bandwidth_bytes_s: float
    rms_rel_residual: float
    n_points: int
    clamped: bool = False
    memory_bound: bool = True


@dataclass(frozen=True, slots=True)
class VerifyFit:
    """t(K) = a_s + b_s x (N(K) for ``union``, K for ``linear``) over the measured K."""

    kind: VerifyKind
    a_s: float
    b_s: float
    rms_rel_residual: float
    n_expert: int = 0
    n_used: int = 0

    def x(self, k: float) -> float:
        return distinct_experts(self.n_expert, self.n_used, k) if self.kind == "union" else k

    def seconds(self, k: float) -> float:
        return self.a_s + self.b_s * self.x(k)


@dataclass(frozen=True, slots=True)
class ModelCalibration:
    """What was measured for one model file: its decode step, and (targets only) the batch
    cost table t(K) for K = 1..len(verify_s) with its fit."""

    sha256: str
    name: str
    bytes_per_step: float
    step_s: float
    verify_s: tuple[float, ...] = ()
    verify_fit: VerifyFit | None = None


@dataclass(frozen=True, slots=True)
class ServerPair:
    """llama-server's own speculative loop for one target and draft model: its plain decode
    step ``step_s`` and, per K drafted with acceptance 1.0, the cycle time ``cycle_s[K]``
    fitted as verify(K + 1) + ``overhead_s`` + K x ``draft_token_s`` (verify from the
    target's llama-bench batch-cost fit). ``prompt_tokens`` and ``gen_tokens``: the request
    the server was timed with, as the engine counted it (None in profiles written before
    they were recorded: a 40-token prompt and 128 tokens out)."""

    target_sha256: str
    draft_sha256: str
    step_s: float
    cycle_s: Mapping[int, float]
    overhead_s: float
    draft_token_s: float
    rms_rel_residual: float
    prompt_tokens: int | None = None
    gen_tokens: int | None = None

    @property
    def key(self) -> str:
        return pair_key(self.target_sha256, self.draft_sha256)


def pair_key(target_sha256: str, draft_sha256: str) -> str:
    return f"{target_sha256}:{draft_sha256}"


@dataclass(frozen=True, slots=True)
class HardwareProfile:
    """Calibration of one machine (``hardware``: a catalog name or ``host-cpu``) with one
    engine build (``engine``: commit-backend-arch)."""

    hardware: str
    engine: str
    created_utc: str
    step: StepFit
    points: tuple[StepPoint, ...]
    models: Mapping[str, ModelCalibration] = field(default_factory=dict)
    schema_version: int = PROFILE_SCHEMA_VERSION
    pairs: Mapping[str, ServerPair] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.hardware} ({self.engine}, {self.created_utc})"

    def fixed_seconds(self, model_sha256: str | None = None) -> float:
        """The fixed per-step cost: the model's own (its measured step - its bytes / bandwidth,
        at least 0) when this profile measured it, else the machine's."""
        m = self.models.get(model_sha256 or "")
        if m is None:
            return self.step.fixed_s
        return max(0.0, m.step_s - m.bytes_per_step / self.step.bandwidth_bytes_s)

    def fixed_source(self, model_sha256: str | None = None) -> str:
        """Which fixed cost ``fixed_seconds`` uses, in words for a summary."""
        if model_sha256 and model_sha256 in self.models:
            return "fixed cost measured for this model"
        return "the machine's fixed cost (this model was not calibrated)"

    def step_seconds(self, bytes_per_step: float, model_sha256: str | None = None) -> float:
        """Predicted decode step time for a step reading ``bytes_per_step``."""
        return self.fixed_seconds(model_sha256) + bytes_per_step / self.step.bandwidth_bytes_s

    def ceiling_tps(self, bytes_per_step: float, model_sha256: str | None = None) -> float:
        return 1.0 / self.step_seconds(bytes_per_step, model_sha256)

    def verify_cost(
        self, model_sha256: str, k: int, draft_sha256: str | None = None
    ) -> float | None:
        """r: verifying k + 1 tokens / one step, from the model's measured batch-cost fit;
        with a timed llama-server pair for ``draft_sha256``, (verify(k + 1) + the server's
        per-cycle overhead) / the server's own step. None when this model was not
        calibrated."""
        m = self.models.get(model_sha256)
        if m is None or m.verify_fit is None or m.verify_fit.seconds(1) <= 0:
            return None
        pair = self.pairs.get(pair_key(model_sha256, draft_sha256 or ""))
        if pair is not None:
            return (m.verify_fit.seconds(k + 1) + pair.overhead_s) / pair.step_s
        return m.verify_fit.seconds(k + 1) / m.verify_fit.seconds(1)

    def verify_cost_from_bytes(
        self, one_bytes: float, many_bytes: float, model_sha256: str | None = None
    ) -> float:
        """r for a model without its own table: (fixed + many / bw) / (fixed + one / bw)."""
        return self.step_seconds(many_bytes, model_sha256) / self.step_seconds(
            one_bytes, model_sha256
        )

    def draft_cost(self, draft_sha256: str, target_sha256: str) -> float | None:
        """c: one draft token / one target step: llama-server's own when the pair was timed,
        else llama-bench's step times; None unless both models were measured."""
        pair = self.pairs.get(pair_key(target_sha256, draft_sha256))
        if pair is not None:
            return pair.draft_token_s / pair.step_s
        d, t = self.models.get(draft_sha256), self.models.get(target_sha256)
        return d.step_s / t.step_s if d is not None and t is not None else None

    def with_pairs(self, pairs: Sequence[ServerPair]) -> HardwareProfile:
        return replace(self, pairs={**self.pairs, **{p.key: p for p in pairs}})

    def with_models(
        self, models: Sequence[ModelCalibration], points: Sequence[StepPoint]
    ) -> HardwareProfile:
        """This profile with ``models`` added or replaced and the step fit redone over the
        old points (those of replaced models dropped) and the new ones."""
        new = {m.sha256 for m in models} | {p.group_key for p in points}
        kept = tuple(p for p in self.points if p.group_key not in new)
        all_points = (*kept, *points)
        return replace(
            self, step=fit_step(all_points), points=all_points,
            models={**self.models, **{m.sha256: m for m in models}},
        )  # fmt: skip

    def to_json(self) -> dict[str, object]:
        return {
            "schema_version": self.schema_version, "hardware": self.hardware,
            "engine": self.engine, "created_utc": self.created_utc, "step": asdict(self.step),
            "points": [asdict(p) for p in self.points],
            "models": {k: _model_json(m) for k, m in self.models.items()},
            **({"pairs": {k: _pair_json(p) for k, p in self.pairs.items()}} if self.pairs
               else {}),
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: Mapping[str, object], where: str = "profile") -> HardwareProfile:
        """A profile read back; a damaged or newer file is a one-line ``UsageError``."""
        version = data.get("schema_version")
        if not isinstance(version, int) or version > PROFILE_SCHEMA_VERSION:
            raise UsageError(
                f"{where}: profile format {version!r} is not one this servelab reads "
                f"(up to {PROFILE_SCHEMA_VERSION}); run `servelab calibrate` again"
            )
        try:
            return _profile_from(data, version)
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(
                f"{where}: damaged hardware profile ({exc!r}); run `servelab calibrate` again"
            ) from exc


def _model_json(m: ModelCalibration) -> dict[str, object]:
    out = asdict(m)
    out["verify_s"] = list(m.verify_s)
    return out


def _pair_json(p: ServerPair) -> dict[str, object]:
    out = {k: v for k, v in asdict(p).items() if v is not None}
    out["cycle_s"] = {str(k): v for k, v in p.cycle_s.items()}
    return out


def _pair_from(d: Mapping[str, object]) -> ServerPair:
    cycles = d["cycle_s"]
    if not isinstance(cycles, Mapping):
        raise TypeError("cycle_s must be an object")
    lengths = [d.get(k) for k in ("prompt_tokens", "gen_tokens")]
    return ServerPair(
        str(d["target_sha256"]), str(d["draft_sha256"]), _f(d["step_s"]),
        {int(k): _f(v) for k, v in cycles.items()}, _f(d["overhead_s"]),
        _f(d["draft_token_s"]), _f(d["rms_rel_residual"]),
        *(None if v is None else int(_f(v)) for v in lengths),
    )  # fmt: skip


def _f(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected a number, got {value!r}")
    return float(value)


def _model_from(d: Mapping[str, object]) -> ModelCalibration:
    v = d.get("verify_fit")
    fit = None
    if isinstance(v, Mapping):
        kind: VerifyKind = "union" if v["kind"] == "union" else "linear"
        fit = VerifyFit(
            kind, _f(v["a_s"]), _f(v["b_s"]), _f(v["rms_rel_residual"]),
            int(_f(v.get("n_expert", 0))), int(_f(v.get("n_used", 0))),
        )  # fmt: skip
    verify = d.get("verify_s") or []
    if not isinstance(verify, list):
        raise TypeError("verify_s must be a list")
    return ModelCalibration(
        str(d["sha256"]), str(d["name"]), _f(d["bytes_per_step"]), _f(d["step_s"]),
        tuple(_f(x) for x in verify), fit,
    )  # fmt: skip


def _profile_from(data: Mapping[str, object], version: int) -> HardwareProfile:
    s = data["step"]
    points, models = data.get("points") or [], data.get("models") or {}
    if not isinstance(s, Mapping) or not isinstance(points, list):
        raise TypeError("step must be an object and points a list")
    if not isinstance(models, Mapping):
        raise TypeError("models must be an object")
    pairs = data.get("pairs") or {}
    if not isinstance(pairs, Mapping):
        raise TypeError("pairs must be an object")
    step = StepFit(
        _f(s["fixed_s"]), _f(s["bandwidth_bytes_s"]), _f(s["rms_rel_residual"]),
        int(_f(s["n_points"])), bool(s.get("clamped", False)),
        bool(s.get("memory_bound", True)),
    )  # fmt: skip
    return HardwareProfile(
        hardware=str(data["hardware"]), engine=str(data["engine"]),
        created_utc=str(data["created_utc"]), step=step,
        points=tuple(
            StepPoint(str(p["model_sha256"]), str(p["label"]), _f(p["bytes_per_step"]),
                      _f(p["step_s"]), str(p.get("group") or ""))
            for p in points
        ),
        models={str(k): _model_from(m) for k, m in models.items()}, schema_version=version,
        pairs={str(k): _pair_from(p) for k, p in pairs.items()},
    )  # fmt: skip


def _rms_rel(pred: np.ndarray, y: np.ndarray) -> float:
    return float(np.sqrt(np.mean(((pred - y) / y) ** 2)))


def _groups(points: Sequence[StepPoint]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    keys = dict.fromkeys(p.group_key for p in points)
    return {
        k: (np.array([p.bytes_per_step for p in points if p.group_key == k], dtype=float),
            np.array([p.step_s for p in points if p.group_key == k], dtype=float))
        for k in keys
    }  # fmt: skip


def fit_step(points: Sequence[StepPoint]) -> StepFit:
    """Least squares step_s = fixed_g + bytes / bw: one bandwidth, one fixed cost per group
    (a model and its quant variants). Only groups with two or more distinct byte counts say
    anything about the bandwidth; a group of one point gets fixed = step - bytes / bw. A
    negative fixed cost (noise on a machine with almost none) is taken as 0."""
    groups = _groups(points)
    if any(np.any(y <= 0) or np.any(x <= 0) for x, y in groups.values()):
        raise UsageError("decode steps must read > 0 bytes in > 0 s; run calibrate again")
    sxx = sum(float(np.sum((x - x.mean()) ** 2)) for x, _ in groups.values())
    if sxx <= 0:
        raise UsageError(
            "a bandwidth fit needs decode steps of 2 or more different sizes of one model; "
            "give --variants (e.g. Q8_0,F16), or calibrate a model with variants first"
        )
    sxy = sum(float(np.sum((x - x.mean()) * (y - y.mean()))) for x, y in groups.values())
    slope = sxy / sxx
    memory_bound = slope > 0
    if not memory_bound:  # no growth with bytes: bandwidth at least the fastest rate seen
        slope = min(float(np.min(y / x)) for x, y in groups.values())
    fixed = {k: float(y.mean()) - slope * float(x.mean()) for k, (x, y) in groups.items()}
    clamped = any(v < 0 for v in fixed.values())
    fixed = {k: max(0.0, v) for k, v in fixed.items()}
    pred = np.concatenate([fixed[k] + slope * x for k, (x, _) in groups.items()])
    ys = np.concatenate([y for _, y in groups.values()])
    machine = float(
        np.median([fixed[k] for k, (x, _) in groups.items() if len(set(x.tolist())) > 1])
    )
    rms = _rms_rel(pred, ys)
    return StepFit(machine, 1.0 / slope, rms, len(points), clamped, memory_bound)


def fit_verify(seconds: Sequence[float], *, n_expert: int = 0, n_used: int = 0) -> VerifyFit:
    """Least squares t(K) = a + b x(K) over K = 1..len(seconds): x = N(K) for a MoE
    (``n_expert`` > 1), K for a dense model. A negative b (noise) is taken as 0."""
    if len(seconds) < 2 or any(not (s > 0 and math.isfinite(s)) for s in seconds):
        raise UsageError("a verify-cost fit needs t(K) > 0 for 2 or more K; raise --k-max")
    kind: VerifyKind = "union" if n_expert > 1 else "linear"
    probe = VerifyFit(kind, 0.0, 0.0, 0.0, n_expert, n_used)
    x = np.array([probe.x(k) for k in range(1, len(seconds) + 1)], dtype=float)
    y = np.array(seconds, dtype=float)
    b, a = (float(v) for v in np.polyfit(x, y, 1))
    if b < 0:  # cost falling with K is noise (a busy machine): take it as flat, r = 1
        a, b = float(y.mean()), 0.0
    return VerifyFit(kind, a, b, _rms_rel(a + b * x, y), n_expert, n_used)


def fit_server_pair(
    target_sha256: str, draft_sha256: str, step_s: float, cycle_s: Mapping[int, float],
    verify: VerifyFit, *, prompt_tokens: int | None = None, gen_tokens: int | None = None,
) -> ServerPair:  # fmt: skip
    """Least squares cycle(K) - verify(K + 1) = overhead + K x draft_token over the timed K
    (2 or more). Negative parts (noise) are taken as 0 and the other refitted.
    ``prompt_tokens``/``gen_tokens``: the timed request's lengths, recorded with the fit."""
    ks = sorted(cycle_s)
    if len(ks) < 2 or step_s <= 0 or any(not cycle_s[k] > 0 for k in ks):
        raise UsageError("a llama-server pair fit needs a step and cycles at 2 or more K")
    x = np.array(ks, dtype=float)
    y = np.array([cycle_s[k] - verify.seconds(k + 1) for k in ks], dtype=float)
    d, o = (float(v) for v in np.polyfit(x, y, 1))
    if o < 0:
        o, d = 0.0, max(0.0, float(np.dot(x, y) / np.dot(x, x)))
    elif d < 0:
        o, d = max(0.0, float(y.mean())), 0.0
    cycles = np.array([cycle_s[k] for k in ks], dtype=float)
    pred = np.array([verify.seconds(k + 1) for k in ks]) + o + d * x
    return ServerPair(target_sha256, draft_sha256, step_s, {k: cycle_s[k] for k in ks}, o, d,
                      _rms_rel(pred, cycles), prompt_tokens, gen_tokens)  # fmt: skip
