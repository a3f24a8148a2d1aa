"""``servelab bench``'s input: one engine configuration, one workload, one load shape."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from servelab.spec.engine import EngineConfig
from servelab.spec.limits import (
    DEFAULT_MAX_FAILURE_RATE,
    MaxFailureRate,
    MaxTokens,
    context_problem,
)


class BenchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    engine: EngineConfig
    workload: str = "chat-tools"
    requests: int = Field(default=20, ge=1)
    concurrency: int = Field(default=1, ge=1)
    warmup: int = Field(default=2, ge=0)
    max_tokens: MaxTokens = 128
    temperature: float = Field(default=0.0, ge=0.0)
    seed: int = 0
    ignore_eos: bool = False
    name: str = "bench"
    request_timeout_s: float = Field(default=300.0, gt=0)
    max_failure_rate: MaxFailureRate = DEFAULT_MAX_FAILURE_RATE

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
