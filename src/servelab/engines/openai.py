"""An existing OpenAI-compatible endpoint: nothing to launch, only to check and describe.

Owns the ``openai`` kind. The API key is read from the environment variable the configuration
names, at request time, and is never stored in the engine description or any file; its value
is registered with ``servelab.redact`` so server text that echoes it is redacted too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from servelab.client import admin
from servelab.engines.base import register
from servelab.engines.prom import MetricsSnapshot, parse_metrics
from servelab.errors import EngineStartError, UsageError
from servelab.redact import register_secret
from servelab.spec.engine import EngineConfig


class OpenAIEndpoint:
    kind = "openai"

    def __init__(self, config: EngineConfig, log_path: Path) -> None:
        self.config = config
        self.log_path = log_path
        self._models: list[Any] = []
        if config.api_key_env and not os.environ.get(config.api_key_env):
            raise UsageError(
                f"environment variable {config.api_key_env} is empty; export the API key "
                "there, or drop --api-key-env for an endpoint without authentication"
            )
        if config.api_key_env:
            # A server may echo the key back (in a 401 body): nothing servelab records keeps it.
            register_secret(os.environ[config.api_key_env])

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

    def check_alive(self, grace_s: float = 0.0) -> None:
        """An external endpoint has no process to watch."""

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "base_url": self.base_url,
            "model_name": self.config.model,
            "models": self._models,
            "api_key_env": self.config.api_key_env,  # the name only, never the value
            "unique_prefix": self.config.unique_prefix,
        }

    def scrape_metrics(self) -> MetricsSnapshot | None:
        try:
            text = admin.get_text(self.base_url + "/metrics", headers=self.request_headers())
            return parse_metrics(text)
        except (admin.AdminHttpError, ValueError):
            return None

    def stop(self) -> None:
        """Not ours to stop."""

    def request_extras(self) -> dict[str, Any]:
        return {}

    def request_headers(self) -> dict[str, str]:
        if self.config.api_key_env:
            return {"Authorization": f"Bearer {os.environ.get(self.config.api_key_env, '')}"}
        return {}

    def chat_url(self) -> str:
        return self.base_url + "/v1/chat/completions"

    def completions_url(self) -> str:
        return self.base_url + "/v1/completions"


register("openai", OpenAIEndpoint)
