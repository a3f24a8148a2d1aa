"""The declarative configuration of one engine: what to launch or where to connect.

Owns ``EngineConfig``. Pure: it validates and describes; engines/ turns it into a process or a
connection. API keys never appear here, only the name of the environment variable that holds one.

Where a launched engine listens is servelab's to say, through one setting, ``bind`` (``--bind``
on the command line): llama-server's own ``--host`` / ``--port`` in ``flags``, and
``LLAMA_ARG_HOST`` / ``LLAMA_ARG_PORT`` in ``env``, are refused with a message naming it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

EngineKind = Literal["llamacpp", "openai", "replay", "vllm"]
"""The engine kinds a spec may name: the one list outside ``engines/`` (whose registry maps each
kind to its class). ``replay`` serves recorded streams, for tests of the run loop."""
ENGINE_KINDS: tuple[str, ...] = get_args(EngineKind)

DEFAULT_CTX_PER_SLOT = 4096
LOOPBACK = "127.0.0.1"

# What servelab owns of an engine's listening socket, and the one setting that says it.
OWNED_OPTIONS = {
    "--host": "servelab owns the engine's --host; to listen on another address use "
    "--bind ADDRESS (spec: engine.bind), which warns and is recorded",
    "--port": "servelab owns the engine's --port; use --port PORT (spec: engine.port), "
    "or leave it out to get a free port",
}
_OWNED_ENV = {"LLAMA_ARG_HOST": "--host", "LLAMA_ARG_PORT": "--port"}


def refuse_owned_flags(flags: Iterable[str]) -> None:
    """Refuse ``--host``/``--port`` (any spelling) and ``LLAMA_ARG_HOST``/``_PORT`` in flags."""
    for token in flags:
        name = token.partition("=")[0]
        owned = _OWNED_ENV.get(name.upper().lstrip("-"), name)
        if owned in OWNED_OPTIONS:
            raise ValueError(f"{token!r} is refused: {OWNED_OPTIONS[owned]}")


def refuse_owned_env(env: Iterable[str]) -> None:
    """Refuse ``LLAMA_ARG_HOST`` / ``LLAMA_ARG_PORT`` in an engine's environment."""
    for key in env:
        owned = _OWNED_ENV.get(key.upper())
        if owned:
            raise ValueError(f"{key} is refused: {OWNED_OPTIONS[owned]}")


def _flags_checked(flags: tuple[str, ...]) -> tuple[str, ...]:
    refuse_owned_flags(flags)
    return flags


def _env_checked(env: dict[str, str]) -> dict[str, str]:
    refuse_owned_env(env)
    return env


# Raw engine flags and environment, wherever a spec takes them: servelab owns host and port.
EngineFlags = Annotated[tuple[str, ...], AfterValidator(_flags_checked)]
EngineEnv = Annotated[dict[str, str], AfterValidator(_env_checked)]


def is_loopback(address: str) -> bool:
    """True when ``address`` is reachable only from this machine (127.0.0.0/8)."""
    try:
        return ipaddress.IPv4Address(address).is_loopback
    except ValueError:
        return False


def bind_warning(bind: str) -> str | None:
    """The warning an engine listening on ``bind`` deserves, or None for loopback."""
    if is_loopback(bind):
        return None
    where = "every network interface" if bind == "0.0.0.0" else "a network interface"
    return (
        f"llama-server listens on {bind} ({where}), as --bind / engine.bind asks: any machine "
        "that can reach this one can send it requests; leave bind out to keep it on 127.0.0.1"
    )


def connect_address(bind: str) -> str:
    """Where servelab itself sends requests: loopback when the engine listens everywhere."""
    return LOOPBACK if bind == "0.0.0.0" else bind


class EngineConfig(BaseModel):
    """One engine. ``llamacpp`` and ``vllm`` are launched and managed; ``openai`` is an
    existing endpoint; ``replay`` serves recorded SSE streams in process (tests)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: EngineKind = "llamacpp"
    model: str = Field(
        description="model name or GGUF path (llamacpp), model name or HF directory (vllm), "
        "served name (openai), directory of recorded streams (replay)"
    )
    flags: EngineFlags = Field(default=(), description="extra engine arguments, one per item")
    env: EngineEnv = Field(default_factory=dict)
    bind: str = Field(
        default=LOOPBACK,
        description="llamacpp: IPv4 address to listen on; anything but loopback is reachable "
        "from other machines, so servelab warns and records it",
    )
    port: int | None = Field(default=None, ge=1, le=65535, description="None: pick a free port")
    binary: str | None = Field(
        default=None,
        description="llamacpp: path to a llama-server; vllm: the Python of a vLLM install",
    )
    endpoint: str | None = Field(default=None, description="base URL of an openai endpoint")
    api_key_env: str | None = Field(default=None, description="env var holding the API key")
    parallel: int = Field(
        default=1, ge=1, description="server slots (llamacpp -np; vllm --max-num-seqs)"
    )
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

    @model_validator(mode="before")
    @classmethod
    def _no_host(cls, data: Any) -> Any:
        """``host`` was the old name of ``bind``; its loopback default (in manifests written
        before the rename) is accepted, any other value is refused."""
        if isinstance(data, dict) and "host" in data:
            data = dict(data)
            if data.pop("host") not in (None, LOOPBACK):
                raise ValueError(f"host is refused: {OWNED_OPTIONS['--host']}")
        return data

    @field_validator("bind")
    @classmethod
    def _bind_address(cls, v: str) -> str:
        try:
            return str(ipaddress.IPv4Address(v))
        except ValueError:
            raise ValueError(
                f"bind must be one IPv4 address (127.0.0.1, 0.0.0.0, 192.168.1.5), got {v!r}"
            ) from None

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        if v is not None and not v.replace("_", "").isalnum():
            raise ValueError(f"api_key_env must be an environment variable name, got {v!r}")
        return v

    def slot_context(self, parallel: int | None = None) -> int | None:
        """The tokens of context each slot will have (llamacpp): ``ctx_per_slot``, or a total
        given in ``flags`` (``-c N``, ``--ctx-size N``; the last one wins, as in llama-server)
        shared by ``parallel`` slots. None when unknown: another kind, or ``-c 0`` (the
        model's own context)."""
        if self.kind != "llamacpp":
            return None
        total = _ctx_size_flag(self.flags)
        if total is None:
            return self.ctx_per_slot
        return total // (parallel or self.parallel) if total > 0 else None

    @model_validator(mode="after")
    def _kind_fields(self) -> EngineConfig:
        if self.kind == "openai" and not self.endpoint:
            raise ValueError("engine kind 'openai' needs an endpoint (--endpoint URL)")
        if self.kind in ("llamacpp", "vllm") and self.endpoint:
            raise ValueError(f"engine kind {self.kind!r} is launched by servelab; drop --endpoint")
        if self.kind == "openai" and self.bind != LOOPBACK:
            raise ValueError("engine kind 'openai' is not launched by servelab; drop --bind")
        return self


_CTX_FLAGS = ("-c", "--ctx-size")


def _ctx_size_flag(flags: tuple[str, ...]) -> int | None:
    """The last ``-c``/``--ctx-size`` value in ``flags`` (None: not given or not a number)."""
    found: str | None = None
    for i, token in enumerate(flags):
        name, eq, value = token.partition("=")
        if name in _CTX_FLAGS:
            found = value if eq else (flags[i + 1] if i + 1 < len(flags) else None)
    try:
        return int(found) if found is not None else None
    except ValueError:
        return None
