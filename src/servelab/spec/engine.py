"""The declarative configuration of one engine: what to launch or where to connect.

Owns ``EngineConfig``. Pure: it validates and describes; engines/ turns it into a process or a
connection. API keys never appear here, only the name of the environment variable that holds one.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DEFAULT_CTX_PER_SLOT = 4096


class EngineConfig(BaseModel):
    """One engine. ``llamacpp`` is launched and managed; ``openai`` is an existing endpoint."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["llamacpp", "openai"] = "llamacpp"
    model: str = Field(description="model name or GGUF path (llamacpp), served name (openai)")
    flags: tuple[str, ...] = Field(default=(), description="extra engine arguments, one per item")
    env: dict[str, str] = Field(default_factory=dict)
    host: str = "127.0.0.1"
    port: int | None = Field(default=None, ge=1, le=65535, description="None: pick a free port")
    binary: str | None = Field(default=None, description="path to a llama-server to use")
    endpoint: str | None = Field(default=None, description="base URL of an openai endpoint")
    api_key_env: str | None = Field(default=None, description="env var holding the API key")
    parallel: int = Field(default=1, ge=1, description="server slots (-np)")
    ctx_per_slot: int = Field(default=DEFAULT_CTX_PER_SLOT, ge=256)
    prefix_cache: bool = Field(default=False, description="let the engine reuse cached prompts")
    unique_prefix: bool = Field(
        default=False, description="prepend a unique id to each prompt (defeats prefix caches)"
    )
    chunk_timings: bool = Field(
        default=False,
        description=(
            "llamacpp: ask for timings on every chunk (exact tokens per chunk, so exact ITL "
            "when text is held back, as for CJK characters split across tokens); costs the "
            "engine about 1 % of its decode speed on a 2-core machine"
        ),
    )
    startup_timeout_s: float = Field(default=180.0, gt=0)

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        if v is not None and not v.replace("_", "").isalnum():
            raise ValueError(f"api_key_env must be an environment variable name, got {v!r}")
        return v

    @model_validator(mode="after")
    def _kind_fields(self) -> EngineConfig:
        if self.kind == "openai" and not self.endpoint:
            raise ValueError("engine kind 'openai' needs an endpoint (--endpoint URL)")
        if self.kind == "llamacpp" and self.endpoint:
            raise ValueError("engine kind 'llamacpp' is launched by servelab; drop --endpoint")
        return self
