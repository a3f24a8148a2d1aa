"""``servelab bench``'s input: one engine configuration, one workload, one load shape."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from servelab.spec.engine import EngineConfig


class BenchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    engine: EngineConfig
    workload: str = "chat-tools"
    requests: int = Field(default=20, ge=1)
    concurrency: int = Field(default=1, ge=1)
    warmup: int = Field(default=2, ge=0)
    max_tokens: int = Field(default=128, ge=1)
    temperature: float = Field(default=0.0, ge=0.0)
    seed: int = 0
    ignore_eos: bool = False
    name: str = "bench"
    request_timeout_s: float = Field(default=300.0, gt=0)
