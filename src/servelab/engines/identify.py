"""Which engine answers behind an OpenAI-compatible endpoint, and what it offers.

Owns ``identify(base_url, headers, timeout_s)``: a few short GET probes, each on a path only one
engine serves, in a fixed order (the first that decides wins), then ``/metrics``:

- llama.cpp: ``GET /props`` with ``build_info`` and ``default_generation_settings``;
- vLLM: ``GET /version`` (``{"version": ...}``) and a ``/v1/models`` entry ``owned_by: vllm``;
- SGLang: ``GET /get_server_info`` (``/server_info`` on releases that dropped the old name),
  its server arguments with ``version`` and ``model_path``;
- Ollama: ``GET /api/version`` (``{"version": ...}``);
- mlx_lm: its ``/v1/models`` list, whose entries carry no ``owned_by``, served by Python's
  ``http.server`` (``Server: BaseHTTP/...``); it exposes no version.

and ``counters_for(engine)``: the Prometheus counter names of an identified engine. Never fatal:
a probe that fails, times out or answers something else only leaves the engine ``unknown``.
Speaks HTTP only through ``servelab.client.admin``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from servelab.client import admin
from servelab.engines.base import CounterNames
from servelab.engines.llamacpp import LLAMA_COUNTERS
from servelab.engines.prom import parse_metrics
from servelab.engines.vllm import VLLM_COUNTERS

__all__ = [
    "ENGINES",
    "SGLANG_COUNTERS",
    "EndpointIdentity",
    "EngineName",
    "counters_for",
    "identify",
]

EngineName = Literal["llamacpp", "vllm", "sglang", "ollama", "mlx_lm", "unknown"]
ENGINES: tuple[EngineName, ...] = ("llamacpp", "vllm", "sglang", "ollama", "mlx_lm", "unknown")

# SGLang (``--enable-metrics``): prompt tokens count every prompt token, cached or not, and
# cached tokens are labelled by ``cache_source``; one verify call checks one draft. Its
# acceptance figures (``sglang:spec_accept_length``, ``spec_accept_rate``) are gauges, which
# counter deltas cannot carry.
SGLANG_COUNTERS = CounterNames(
    prompt_tokens="sglang:prompt_tokens_total",
    tokens_predicted="sglang:generation_tokens_total",
    drafts="sglang:spec_verify_calls_total",
    prefix_cache_queries="sglang:prompt_tokens_total",
    prefix_cache_hits="sglang:cached_tokens_total",
    extra=("sglang:num_requests_total", "sglang:num_retracted_requests_total"),
)

_COUNTERS: dict[str, CounterNames] = {
    "llamacpp": LLAMA_COUNTERS,
    "vllm": VLLM_COUNTERS,
    "sglang": SGLANG_COUNTERS,
}

IdentityJson = dict[str, str | bool | list[str] | None]


@dataclass(frozen=True, slots=True)
class EndpointIdentity:
    """What an endpoint said about itself. ``model`` is the model it serves (None when it
    serves several, as Ollama does); ``models`` the ids of ``/v1/models``; ``metrics`` whether
    ``GET /metrics`` answered Prometheus text; ``spec_decode_counters`` the speculative-decoding
    counter names found there; ``evidence`` which probe decided, in words."""

    engine: EngineName
    version: str | None
    model: str | None
    models: tuple[str, ...]
    metrics: bool
    spec_decode_counters: tuple[str, ...]
    evidence: str

    def to_json(self) -> IdentityJson:
        return {
            "engine": self.engine,
            "version": self.version,
            "model": self.model,
            "models": list(self.models),
            "metrics": self.metrics,
            "spec_decode_counters": list(self.spec_decode_counters),
            "evidence": self.evidence,
        }


def counters_for(engine: str | None) -> CounterNames | None:
    """The counter names of an identified engine; None for one without Prometheus counters
    (Ollama, mlx_lm) or not identified."""
    return _COUNTERS.get(engine or "")


@dataclass(frozen=True, slots=True)
class _Found:
    engine: EngineName
    version: str | None
    model: str | None
    evidence: str


@dataclass(frozen=True, slots=True)
class _Models:
    """``GET /v1/models``: its entries and the HTTP ``Server`` header it came with."""

    entries: tuple[Mapping[str, object], ...]
    server: str

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(str(e["id"]) for e in self.entries if isinstance(e.get("id"), str))


class _Prober:
    def __init__(self, base_url: str, headers: Mapping[str, str], timeout_s: float) -> None:
        self.base = base_url.rstrip("/").removesuffix("/v1")
        self.headers = dict(headers)
        self.timeout_s = timeout_s

    def json(self, path: str) -> Mapping[str, object] | None:
        """The JSON object a 200 answer to ``GET path`` holds; None for anything else."""
        try:
            body = admin.get_json(self.base + path, self.timeout_s, self.headers)
        except admin.AdminHttpError:
            return None
        return body if isinstance(body, dict) else None

    def models(self) -> _Models | None:
        """``/v1/models``; None when nothing answered (the endpoint is not worth probing)."""
        try:
            response = admin.get(self.base + "/v1/models", self.timeout_s, self.headers)
        except admin.AdminHttpError:
            return None
        try:
            body = response.json() if response.status_code == 200 else {}
        except ValueError:
            body = {}
        data = body.get("data") if isinstance(body, dict) else None
        entries = tuple(e for e in data if isinstance(e, dict)) if isinstance(data, list) else ()
        return _Models(entries, response.headers.get("server", ""))

    def metrics(self) -> tuple[bool, tuple[str, ...]]:
        """Whether ``/metrics`` answered Prometheus text, and its spec-decode counter names."""
        try:
            snapshot = parse_metrics(admin.get_text(self.base + "/metrics", self.timeout_s,
                                                    self.headers))  # fmt: skip
        except (admin.AdminHttpError, ValueError):
            return False, ()
        if not snapshot.kinds:
            return False, ()
        names = {k.split("{", 1)[0] for k in snapshot.samples}
        spec = sorted(n for n in names if snapshot.kinds.get(n) == "counter" and _is_spec(n))
        return True, tuple(spec)


def _is_spec(name: str) -> bool:
    """A speculative-decoding counter's value sample (not its ``_created`` timestamp)."""
    local = name.split(":", 1)[-1]
    return local.startswith("spec_") and local.endswith("_total")


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _llamacpp(p: _Prober, models: _Models) -> _Found | None:
    props = p.json("/props")
    if props is None or "build_info" not in props:
        return None
    if not isinstance(props.get("default_generation_settings"), dict):
        return None
    model = _text(props.get("model_alias")) or _text(props.get("model_path"))
    return _Found("llamacpp", _text(props.get("build_info")), model,
                  "GET /props answered build_info and default_generation_settings")  # fmt: skip


def _vllm(p: _Prober, models: _Models) -> _Found | None:
    if not any(e.get("owned_by") == "vllm" for e in models.entries):
        return None
    answer = p.json("/version")
    version = _text(answer.get("version")) if answer is not None else None
    if version is None:
        return None
    model = models.ids[0] if models.ids else None
    return _Found("vllm", version, model,
                  "GET /version answered a version and /v1/models is owned_by vllm")  # fmt: skip


def _sglang(p: _Prober, models: _Models) -> _Found | None:
    for path in ("/get_server_info", "/server_info"):
        info = p.json(path)
        if info is not None and "model_path" in info and _text(info.get("version")):
            model = _text(info.get("served_model_name")) or _text(info.get("model_path"))
            return _Found("sglang", _text(info.get("version")), model,
                          f"GET {path} answered SGLang's server arguments and version")  # fmt: skip
    return None


def _ollama(p: _Prober, models: _Models) -> _Found | None:
    answer = p.json("/api/version")
    version = _text(answer.get("version")) if answer is not None else None
    if version is None:
        return None
    model = models.ids[0] if len(models.ids) == 1 else None
    return _Found("ollama", version, model, "GET /api/version answered a version")


_MLX_KEYS = {"id", "object", "created"}  # mlx_lm.server's model entries, nothing more


def _mlx_lm(p: _Prober, models: _Models) -> _Found | None:
    bare = bool(models.entries) and all(set(e) == _MLX_KEYS for e in models.entries)
    if not bare or not models.server.startswith("BaseHTTP/"):
        return None
    paths = [i for i in models.ids if i.startswith("/")]  # its --model, listed last
    model = paths[-1] if paths else (models.ids[0] if len(models.ids) == 1 else None)
    evidence = "/v1/models entries carry no owned_by and Python's http.server answered"
    return _Found("mlx_lm", None, model, evidence)


_PROBES: tuple[Callable[[_Prober, _Models], _Found | None], ...] = (
    _llamacpp, _vllm, _sglang, _ollama, _mlx_lm,
)  # fmt: skip


def identify(base_url: str, headers: Mapping[str, str], timeout_s: float) -> EndpointIdentity:
    """Identify the engine at ``base_url`` (with or without ``/v1``). Each probe waits at most
    ``timeout_s``; an endpoint whose ``/v1/models`` does not answer is not probed further."""
    p = _Prober(base_url, headers, timeout_s)
    models = p.models()
    if models is None:
        return EndpointIdentity("unknown", None, None, (), False, (),
                                f"GET /v1/models got no answer within {timeout_s:g} s")  # fmt: skip
    found = next((f for f in (probe(p, models) for probe in _PROBES) if f), None)
    if found is None:
        found = _Found("unknown", None, models.ids[0] if len(models.ids) == 1 else None,
                       "no engine-specific endpoint answered (/props, /version, "
                       "/get_server_info, /api/version) and /v1/models matched none")  # fmt: skip
    metrics, spec = p.metrics()
    return EndpointIdentity(found.engine, found.version, found.model, models.ids, metrics, spec,
                            found.evidence)  # fmt: skip
