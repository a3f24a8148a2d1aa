"""Bad input gets one line naming the problem and the fix, and a non-zero exit code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from servelab.cli.main import main


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["bench", "-n", "0"], "--requests"),
        (["bench", "--engine", "sglang"], "--engine"),
        (["bench", "--engine", "openai"], "--endpoint"),
        (["bench", "--timeout", "-1"], "--timeout"),
        (["bench", "--workload", "no-such-workload"], "built-ins"),
        (["bench", "--flags", '"unclosed'], "quotes"),
        (["bench", "--model", "/no/such/model.gguf"], "does not exist"),
        (["bench", "--engine", "openai", "--endpoint", "http://127.0.0.1:9",
          "--api-key-env", "NOT A NAME"], "--api-key-env"),
    ],
)  # fmt: skip
def test_bad_bench_input_is_one_line_exit_2(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("servelab: error: ") and needle in err[0]


def test_unreachable_endpoint_is_an_engine_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # port 9 (discard) on loopback: nothing listens there
    out = tmp_path / "run"
    argv = ["bench", "--engine", "openai", "--endpoint", "http://127.0.0.1:9", "-n", "1", "-q"]
    code = main([*argv, "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 5 and len(err) == 1 and "/v1/models" in err[0]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "engine_error"  # the failed attempt is on record
    assert not (out / "requests.jsonl").exists() or (out / "requests.jsonl").read_text() == ""


def test_version() -> None:
    assert main(["--version"]) == 0
