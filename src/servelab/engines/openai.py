"""An existing OpenAI-compatible endpoint: nothing to launch, only to check and describe.

Owns the ``openai`` kind. The API key is read from the environment variable the configuration
names, at request time, and is never stored in the engine description or any file; its value
is registered with ``servelab.redact`` so server text that echoes it is redacted too.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from servelab.client import admin
from servelab.client.transport import Transport
from servelab.engines.base import CounterNames, EffectiveEngineConfig, NoLocalProcess, token_ids
from servelab.engines.identify import EndpointIdentity, identify
from servelab.engines.llamacpp import LLAMA_COUNTERS
from servelab.engines.prom import MetricsSnapshot, parse_metrics
from servelab.errors import EngineError, EngineStartError, UsageError
from servelab.redact import register_secret
from servelab.spec.engine import EngineConfig

__all__ = ["OpenAIEndpoint", "OpenAIEngine"]

# An OpenAI-compatible endpoint is often a llama-server run by someone else: when it is not
# identified (``engines.identify``), its counters are read under llama.cpp's names (absent
# counters read as None); an identified engine's are read under its own names
# (``analysis.engine_facts.counter_names``).
ENDPOINT_COUNTERS = dataclasses.replace(LLAMA_COUNTERS, extra=())
IDENTIFY_TIMEOUT_S = 5.0  # each identification probe; a probe that times out decides nothing


def _check_api_key(config: EngineConfig) -> None:
    """Refuse an empty API key variable; register the key's value for redaction."""
    if config.api_key_env and not os.environ.get(config.api_key_env):
        raise UsageError(
            f"environment variable {config.api_key_env} is empty; export the API key "
            "there, or drop --api-key-env for an endpoint without authentication"
        )
    if config.api_key_env:
        # A server may echo the key back (in a 401 body): nothing servelab records keeps it.
        register_secret(os.environ[config.api_key_env])


class OpenAIEngine(NoLocalProcess):
    """An OpenAI-compatible endpoint that is already running; servelab only connects."""

    kind: ClassVar[str] = "openai"
    keep_alive: ClassVar[bool] = True  # a remote endpoint: new connections cost real time
    has_logits: ClassVar[bool] = False
    reports_kv: ClassVar[bool] = False
    managed: ClassVar[bool] = False
    process_name: ClassVar[str] = "OpenAI-compatible endpoint"
    counter_names: ClassVar[CounterNames] = ENDPOINT_COUNTERS

    def __init__(self, config: EngineConfig, log_path: Path) -> None:
        self.config = config
        self.log_path = log_path
        self._models: list[object] = []
        self.identity: EndpointIdentity | None = None
        _check_api_key(config)

    # -- class-level: pure functions of a configuration -------------------------------------
    @classmethod
    def effective_config(cls, config: EngineConfig, arm_name: str) -> EffectiveEngineConfig:
        """Where the endpoint is and what it serves; nothing is launched, so no argv. An API
        key variable that is named but empty is refused here, before anything runs."""
        _check_api_key(config)
        return EffectiveEngineConfig(
            values={
                "engine.endpoint": config.endpoint,
                "engine.served_model": config.model,
                "engine.api_key_env": config.api_key_env,
            }
        )

    # -- instance ---------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        url = (self.config.endpoint or "").rstrip("/")
        return url.removesuffix("/v1")

    def launch(self) -> None:
        """Nothing to start: the endpoint is already running."""

    def wait_healthy(self, timeout_s: float) -> None:
        try:
            body = admin.get_json(
                self.base_url + "/v1/models", timeout_s=min(timeout_s, 30.0),
                headers=self.request_headers(),
            )  # fmt: skip
        except admin.AdminHttpError as exc:
            raise EngineStartError(
                f"endpoint {self.base_url} did not answer GET /v1/models ({exc}); "
                "check --endpoint and that the server is running"
            ) from exc
        self._models = body.get("data", []) if isinstance(body, dict) else []
        # Which engine answers (never fatal: an unrecognised one is "unknown").
        self.identity = identify(self.base_url, self.request_headers(),
                                 min(timeout_s, IDENTIFY_TIMEOUT_S))  # fmt: skip

    def check_alive(self, grace_s: float = 0.0) -> None:
        """An external endpoint has no process to watch."""

    def describe(self) -> dict[str, object]:
        """Where the endpoint is, what it lists, and which engine it was identified as
        (``identity``; its ``version`` is repeated at the top level, as managed engines
        record theirs)."""
        identity = self.identity
        return {
            "kind": self.kind,
            "base_url": self.base_url,
            "model_name": self.config.model,
            "models": self._models,
            "api_key_env": self.config.api_key_env,  # the name only, never the value
            "unique_prefix": self.config.unique_prefix,
            "version": identity.version if identity else None,
            "identity": identity.to_json() if identity else None,
        }

    def scrape_metrics(self) -> MetricsSnapshot | None:
        try:
            text = admin.get_text(self.base_url + "/metrics", headers=self.request_headers())
            return parse_metrics(text)
        except (admin.AdminHttpError, ValueError):
            return None

    def stop(self) -> None:
        """Not ours to stop."""

    def request_extras(self) -> dict[str, object]:
        return {}

    def request_headers(self) -> dict[str, str]:
        if self.config.api_key_env:
            return {"Authorization": f"Bearer {os.environ.get(self.config.api_key_env, '')}"}
        return {}

    def chat_url(self) -> str:
        return self.base_url + "/v1/chat/completions"

    def completions_url(self) -> str:
        return self.base_url + "/v1/completions"

    def transport(self) -> Transport | None:
        return None

    def tokenize(self, text: str, *, add_special: bool = False) -> list[int]:
        """``POST /tokenize`` as vLLM (``prompt``, ``add_special_tokens``) and llama-server
        (``content``, ``add_special``) both read it: one body carries both spellings."""
        body = {"model": self.config.model, "prompt": text, "add_special_tokens": add_special,
                "content": text, "add_special": add_special}  # fmt: skip
        return token_ids(self._tokenizer_call("/tokenize", body), f"endpoint {self.base_url}")

    def detokenize(self, tokens: Sequence[int]) -> str:
        """``POST /detokenize``: vLLM answers ``prompt``, llama-server ``content``."""
        answer = self._tokenizer_call("/detokenize", {"model": self.config.model,
                                                      "tokens": list(tokens)})  # fmt: skip
        text = answer.get("prompt", answer.get("content")) if isinstance(answer, dict) else None
        if not isinstance(text, str):
            raise EngineError(f"endpoint {self.base_url}'s /detokenize answered without text")
        return text

    def _tokenizer_call(self, path: str, body: dict[str, object]) -> object:
        try:
            return admin.post_json(self.base_url + path, body, headers=self.request_headers())
        except admin.AdminHttpError as exc:
            raise UsageError(
                f"endpoint {self.base_url} has no usable {path} ({exc}); prompts given as token "
                "counts need a server with a tokenizer endpoint (vLLM, llama-server), or give "
                "the trace's prompts as text"
            ) from exc


OpenAIEndpoint = OpenAIEngine  # the name before 0.2; kept for importers of the old name
