"""An API key a server echoes back reaches no file and no terminal line (issue 10)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from servelab.cli import main as cli_main
from servelab.engines.openai import OpenAIEndpoint
from servelab.errors import EngineStartError
from servelab.records import Observation, Outcome, ToolCall
from servelab.redact import REDACTED, forget_secrets, redact, redact_data, register_secret
from servelab.runner.drive import scrubbed
from servelab.spec.engine import EngineConfig
from servelab.store.jsonl import JsonlWriter, write_json_atomic, write_text_atomic

KEY = "sk-test-0123456789abcdef"
ECHO = f'HTTP 401: {{"error": "Incorrect API key provided: Bearer {KEY}"}}'


@pytest.fixture(autouse=True)
def no_secrets() -> Iterator[None]:
    forget_secrets()
    yield
    forget_secrets()


@pytest.fixture
def endpoint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> OpenAIEndpoint:
    """The engine that reads the key from the environment, as servelab bench builds it."""
    monkeypatch.setenv("SERVELAB_TEST_KEY", KEY)
    config = EngineConfig(
        kind="openai", model="m", endpoint="http://127.0.0.1:9", api_key_env="SERVELAB_TEST_KEY"
    )
    return OpenAIEndpoint(config, tmp_path / "engine.log")


def test_known_answer() -> None:
    register_secret(f"  {KEY}\n")
    assert redact(ECHO) == f'HTTP 401: {{"error": "Incorrect API key provided: Bearer {REDACTED}"}}'
    assert redact_data({"a": [KEY, (1, f"x{KEY}")], KEY: None}) == {
        "a": [REDACTED, (1, f"x{REDACTED}")],
        REDACTED: None,
    }


def test_nothing_registered_leaves_data_untouched() -> None:
    data = {"text": KEY}
    assert redact_data(data) is data


def test_short_values_are_not_secrets() -> None:
    register_secret("ab")
    assert redact("a cab") == "a cab"


def test_the_endpoint_registers_the_key_it_reads(endpoint: OpenAIEndpoint) -> None:
    assert endpoint.request_headers()["Authorization"] == f"Bearer {KEY}"  # still sent
    assert KEY not in redact(ECHO)


def test_an_echoed_key_leaves_the_observation(endpoint: OpenAIEndpoint) -> None:
    obs = Observation(
        outcome=Outcome.HTTP_ERROR, wait_s=0.0, end_s=0.1, http_status=401, error=ECHO,
        text=f"key {KEY}", tool_calls=(ToolCall(0, "f", json.dumps({"k": KEY})),),
    )  # fmt: skip
    clean = scrubbed(obs)
    assert KEY not in repr(clean)
    assert clean.error is not None and REDACTED in clean.error
    assert clean.http_status == 401 and clean.outcome is Outcome.HTTP_ERROR


def test_nothing_written_to_a_run_directory_keeps_the_key(
    endpoint: OpenAIEndpoint, tmp_path: Path
) -> None:
    with JsonlWriter(tmp_path / "requests.jsonl") as writer:
        writer.write({"error": ECHO, "nested": {"models": [KEY]}})
    write_json_atomic(tmp_path / "manifest.json", {"describe": {"owned_by": KEY}})
    write_text_atomic(tmp_path / "report.md", f"error: {ECHO}\n")
    for path in tmp_path.iterdir():
        assert KEY.encode() not in path.read_bytes(), path.name
    assert REDACTED in (tmp_path / "requests.jsonl").read_text()


def test_an_error_message_on_the_terminal_is_redacted(
    endpoint: OpenAIEndpoint, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def fail(**_: object) -> None:
        raise EngineStartError(f"endpoint said: {ECHO}")

    monkeypatch.setattr(cli_main, "app", fail)
    assert cli_main.main(["bench"]) == EngineStartError.exit_code
    captured = capsys.readouterr()
    assert KEY not in captured.err + captured.out
    assert REDACTED in captured.err


def test_no_part_of_a_key_survives_the_error_cut(endpoint: OpenAIEndpoint) -> None:
    from servelab.client.reading import http_error

    _, error = http_error(401, b"x" * 290 + f"Bearer {KEY}".encode())
    assert KEY[:6] not in error
