"""``engines.identify`` against mock servers that play each engine at the HTTP edge.

Each engine is played from ``tests/fixtures/endpoints/<engine>.json``: its routes' status,
content type and body, its ``Server`` header and its answer to a path it does not serve.
llama.cpp's, vLLM's and mlx_lm's were recorded from the real servers here; SGLang's and Ollama's
are composed from their source (each file's ``source`` says how).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from servelab.analysis.engine_facts import counter_names, identity_engine
from servelab.engines.identify import ENGINES, SGLANG_COUNTERS, counters_for, identify
from servelab.engines.llamacpp import LLAMA_COUNTERS
from servelab.engines.openai import ENDPOINT_COUNTERS
from servelab.engines.vllm import VLLM_COUNTERS

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "endpoints"


@dataclass
class Played:
    """What one mock server answers, and the requests it saw."""

    routes: dict[str, dict[str, object]]
    not_found: dict[str, object]
    server: str
    delay_s: float = 0.0
    seen: list[tuple[str, str | None]] = field(default_factory=list)


Play = Callable[[Played], str]  # starts a mock server playing an engine; its base URL


def _handler(played: Played) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = played.server
        sys_version = ""

        def do_GET(self) -> None:
            played.seen.append((self.path, self.headers.get("Authorization")))
            if played.delay_s:
                time.sleep(played.delay_s)
            answer = played.routes.get(self.path, played.not_found)
            body = str(answer["body"]).encode()
            # the slow endpoint's client may have timed out and left
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.send_response(int(str(answer["status"])))
                self.send_header("Content-Type", str(answer["content_type"]))
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def play() -> Iterator[Play]:
    servers: list[ThreadingHTTPServer] = []

    def start(played: Played) -> str:
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(played))
        httpd.daemon_threads = True
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}"

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


def played(engine: str) -> Played:
    data = json.loads((FIXTURES / f"{engine}.json").read_text())
    return Played(data["routes"], data["not_found"], data["server"])


def test_llama_server_is_identified_by_props(play: Play) -> None:
    ident = identify(play(played("llamacpp")) + "/v1", {}, 2.0)
    assert ident.engine == "llamacpp"
    assert ident.version == "b0-0c1e57098"
    assert ident.model and ident.model.endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert ident.models == (ident.model,)
    assert ident.metrics is True
    assert ident.spec_decode_counters == (
        "llamacpp:spec_decode_num_accepted_tokens_total",
        "llamacpp:spec_decode_num_draft_tokens_total",
        "llamacpp:spec_decode_num_drafts_total",
    )
    assert "/props" in ident.evidence


def test_vllm_is_identified_by_version_and_owned_by(play: Play) -> None:
    ident = identify(play(played("vllm")), {}, 2.0)
    assert (ident.engine, ident.version, ident.model) == ("vllm", "0.32.0", "smol")
    assert ident.models == ("smol",)
    assert ident.metrics is True
    # recorded with an n-gram speculative config: vLLM's four spec-decode counters
    assert ident.spec_decode_counters == (
        "vllm:spec_decode_num_accepted_tokens_per_pos_total",
        "vllm:spec_decode_num_accepted_tokens_total",
        "vllm:spec_decode_num_draft_tokens_total",
        "vllm:spec_decode_num_drafts_total",
    )
    assert "/version" in ident.evidence and "owned_by vllm" in ident.evidence


def test_sglang_is_identified_by_get_server_info(play: Play) -> None:
    ident = identify(play(played("sglang")), {}, 2.0)
    assert (ident.engine, ident.version) == ("sglang", "0.5.23")
    assert ident.model == "Qwen/Qwen2.5-0.5B-Instruct"
    assert ident.metrics is True
    # its acceptance length is a gauge, so only the verify-call counter is listed
    assert ident.spec_decode_counters == ("sglang:spec_verify_calls_total",)
    assert "/get_server_info" in ident.evidence


def test_sglang_without_the_old_path_answers_server_info(play: Play) -> None:
    p = played("sglang")
    del p.routes["/get_server_info"]
    ident = identify(play(p), {}, 2.0)
    assert ident.engine == "sglang" and "/server_info" in ident.evidence


def test_ollama_is_identified_by_api_version(play: Play) -> None:
    ident = identify(play(played("ollama")), {}, 2.0)
    assert (ident.engine, ident.version) == ("ollama", "0.13.5")
    assert ident.models == ("smollm2:135m", "qwen2.5:0.5b")
    assert ident.model is None  # it serves every local model; the request names one
    assert ident.metrics is False and ident.spec_decode_counters == ()


def test_mlx_lm_is_identified_by_its_model_list(play: Play) -> None:
    ident = identify(play(played("mlx_lm")), {}, 2.0)
    assert ident.engine == "mlx_lm"
    assert ident.version is None  # mlx_lm.server has no version endpoint
    assert ident.model == "/srv/models/smollm2-135m-instruct/hf"
    assert ident.metrics is False


def test_an_endpoint_that_is_none_of_them_is_unknown(play: Play) -> None:
    ident = identify(play(played("unknown")), {}, 2.0)
    assert ident.engine == "unknown"
    assert ident.version is None and ident.model == "gpt-x" and ident.metrics is False
    assert "matched none" in ident.evidence


def test_an_endpoint_that_does_not_answer_is_unknown_within_the_timeout(play: Play) -> None:
    slow = played("llamacpp")
    slow.delay_s = 3.0
    base = play(slow)
    t0 = time.monotonic()
    ident = identify(base, {}, 0.3)
    assert time.monotonic() - t0 < 2.0  # stopped after /v1/models went unanswered
    assert ident.engine == "unknown" and ident.models == ()
    assert "no answer within 0.3 s" in ident.evidence
    assert [path for path, _ in slow.seen] == ["/v1/models"]


def test_nothing_listening_is_unknown() -> None:
    ident = identify("http://127.0.0.1:9", {}, 0.5)
    assert ident.engine == "unknown" and not ident.metrics


def test_every_probe_carries_the_endpoint_headers(play: Play) -> None:
    p = played("ollama")
    identify(play(p), {"Authorization": "Bearer k"}, 2.0)
    assert len(p.seen) >= 3 and all(auth == "Bearer k" for _, auth in p.seen)


def test_to_json_is_plain_json() -> None:
    ident = identify("http://127.0.0.1:9", {}, 0.2)
    data = ident.to_json()
    assert json.loads(json.dumps(data)) == data
    assert set(data) == {"engine", "version", "model", "models", "metrics",
                         "spec_decode_counters", "evidence"}  # fmt: skip


def test_counters_for_each_engine() -> None:
    assert counters_for("vllm") is VLLM_COUNTERS
    assert counters_for("llamacpp") is LLAMA_COUNTERS
    assert counters_for("sglang") is SGLANG_COUNTERS
    assert [counters_for(e) for e in ("ollama", "mlx_lm", "unknown", None)] == [None] * 4
    assert set(ENGINES) == {"llamacpp", "vllm", "sglang", "ollama", "mlx_lm", "unknown"}


def test_analysis_reads_counters_under_the_identified_engine() -> None:
    assert counter_names("openai") == ENDPOINT_COUNTERS  # not identified: llama.cpp's names
    assert counter_names("openai", "unknown") == ENDPOINT_COUNTERS
    assert counter_names("openai", "vllm") is VLLM_COUNTERS
    assert counter_names("openai", "ollama") == counter_names("no-such-kind")  # none at all
    assert counter_names("llamacpp") is LLAMA_COUNTERS
    describes = [{"kind": "openai"}, {"kind": "openai", "identity": {"engine": "vllm"}}]
    assert identity_engine(describes) == "vllm"
    assert identity_engine([{"identity": None}]) is None


def test_sglang_counters_read_its_labelled_samples() -> None:
    deltas = {
        'sglang:prompt_tokens_total{is_streaming="false",model_name="m"}': 20.0,
        'sglang:prompt_tokens_total{is_streaming="true",model_name="m"}': 4.0,
        'sglang:cached_tokens_total{cache_source="device",model_name="m"}': 8.0,
    }
    assert SGLANG_COUNTERS.read(deltas, SGLANG_COUNTERS.prefix_cache_queries) == 24.0
    assert SGLANG_COUNTERS.read(deltas, SGLANG_COUNTERS.prefix_cache_hits) == 8.0
