"""``servelab bench``'s input: one engine configuration, one workload, one load shape.

The load is closed loop (``concurrency`` requests in flight) or, with ``rate``, open loop:
arrivals at ``rate`` requests/s (``arrival``, ``burstiness``, seeded by ``seed``) with an
optional cap on requests in flight (``max_concurrency``). ``slos`` holds per-request SLO texts
(``ttft_s.p90<=0.3``; ``spec.slo``). ``trace`` replays a JSONL trace instead (one request per
line at its arrival time divided by ``time_scale``; ``requests`` does not apply). ``blocks``
(closed loop only) repeats the measurement on that many fresh starts of the engine, each with
its own warm-up and ``requests`` measured requests, so a comparison with the bench has blocks
to resample (``servelab verify`` uses 3). ``ray`` (``local:N`` or a Ray address) sends the
measured requests from client workers on ``workers`` Ray nodes (None: every worker node), one
engine, one merged run (``distributed.load``; docs/distributed.md).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from servelab.spec.engine import EngineConfig
from servelab.spec.limits import (
    DEFAULT_MAX_FAILURE_RATE,
    MaxFailureRate,
    MaxTokens,
    context_problem,
)
from servelab.spec.load import Arrival, OpenLoop
from servelab.spec.slo import Slo, SloTexts, parse_slos


class BenchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    engine: EngineConfig
    workload: str = "chat-tools"
    system_prompt: str | None = None  # one of the workload's named system prompts (``systems``)
    requests: int = Field(default=20, ge=1)
    blocks: int = Field(default=1, ge=1)  # closed loop: engine starts, ``requests`` each
    concurrency: int = Field(default=1, ge=1)
    warmup: int = Field(default=2, ge=0)
    max_tokens: MaxTokens = 128
    temperature: float = Field(default=0.0, ge=0.0)
    seed: int = 0
    ignore_eos: bool = False
    name: str = "bench"
    request_timeout_s: float = Field(default=300.0, gt=0)
    max_failure_rate: MaxFailureRate = DEFAULT_MAX_FAILURE_RATE
    rate: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    arrival: Arrival = "poisson"
    burstiness: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    max_concurrency: int | None = Field(default=None, ge=1)
    slos: SloTexts = ()
    trace: str | None = None  # a JSONL trace to replay at its own arrival times
    time_scale: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    ray: str | None = None  # client workers on a Ray cluster: ``local:N`` or HOST:PORT
    workers: int | None = Field(default=None, ge=1)  # with ``ray``: nodes used (None: all)

    @property
    def parsed_slos(self) -> tuple[Slo, ...]:
        return parse_slos(self.slos)

    @model_validator(mode="after")
    def _load_workers(self) -> BenchConfig:
        if self.ray is None:
            if self.workers is not None:
                raise ValueError("--workers splits the load over Ray nodes: give --ray too")
            return self
        if self.blocks > 1:
            raise ValueError("--ray drives one engine start: drop --blocks (or --ray)")
        n = self.workers or 1
        if self.rate is None and self.trace is None and self.concurrency < n:
            raise ValueError(f"--concurrency {self.concurrency} is less than --workers {n}: "
                             "each worker needs a request in flight")  # fmt: skip
        if self.max_concurrency is not None and self.max_concurrency < n:
            raise ValueError(f"--max-concurrency {self.max_concurrency} is less than "
                             f"--workers {n}: each worker needs a request in flight")  # fmt: skip
        return self

    @model_validator(mode="after")
    def _load_shape(self) -> BenchConfig:
        if self.blocks > 1 and (self.trace is not None or self.rate is not None):
            raise ValueError("--blocks repeats a closed-loop bench on fresh engine starts: "
                             "drop --rate and --trace, or --blocks")  # fmt: skip
        if self.trace is not None:
            if self.rate is not None or self.concurrency != 1:
                raise ValueError("--trace sets when requests go: drop --rate and --concurrency "
                                 "(cap requests in flight with --max-concurrency)")  # fmt: skip
            return self
        if self.time_scale != 1.0:
            raise ValueError("--time-scale speeds up a trace: give --trace")
        if self.rate is None:
            if self.max_concurrency is not None:
                raise ValueError("--max-concurrency caps an open loop: give --rate too "
                                 "(closed loop: --concurrency)")  # fmt: skip
            if self.arrival != "poisson" or self.burstiness != 1.0:
                raise ValueError("--arrival and --burstiness shape an open loop: give --rate")
        elif self.concurrency != 1:
            raise ValueError("--concurrency is the closed loop; with --rate cap requests in "
                             "flight with --max-concurrency")  # fmt: skip
        if self.burstiness != 1.0 and self.arrival != "gamma":
            raise ValueError("--burstiness is the gamma shape: give --arrival gamma")
        return self

    @property
    def open_loop(self) -> OpenLoop | None:
        if self.rate is None:
            return None
        return OpenLoop(self.rate, self.arrival, self.burstiness, self.max_concurrency)

    @property
    def slots(self) -> int:
        """Requests the engine must serve at once (its parallel slots)."""
        return self.max_concurrency or self.concurrency

    @field_validator("max_tokens")
    @classmethod
    def _fits_context(cls, v: int, info: ValidationInfo) -> int:
        engine, concurrency = info.data.get("engine"), info.data.get("concurrency", 1)
        if isinstance(engine, EngineConfig):
            slots = max(engine.parallel, concurrency)  # as the bench launches it
            problem = context_problem(v, engine.slot_context(slots))
            if problem:
                raise ValueError(f'{problem}; lower it, or raise the context: --flags "-c N"')
        return v
