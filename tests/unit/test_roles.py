"""The roles registry and the artefacts of a promotion."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from servelab.errors import UsageError
from servelab.runner.promote import command_argv, load_registry, systemd_unit


def test_registry_is_validated_with_the_gate_grammar(tmp_path: Path) -> None:
    f = tmp_path / "roles.yaml"
    f.write_text("schema_version: 1\nroles:\n  fast: {rules: ['decode_tps >= 70']}\n")
    assert load_registry(f).roles["fast"].rules == ("decode_tps >= 70",)
    f.write_text("roles:\n  fast: {rules: ['speed >= 70']}\n")
    with pytest.raises(UsageError, match="unknown metric 'speed'"):
        load_registry(f)
    f.write_text("roles:\n  fast: {rulez: []}\n")
    with pytest.raises(UsageError, match=r"roles\.fast\.rulez: unknown key"):
        load_registry(f)
    with pytest.raises(UsageError, match="does not exist"):
        load_registry(tmp_path / "missing.yaml")


def test_command_line_and_unit_carry_the_exact_argv() -> None:
    argv = ["/opt/llama server/llama-server", "--model", "/m.gguf", "--host", "127.0.0.1",
            "--port", "<free port>", "--cache-ram", "0"]  # fmt: skip
    concrete = command_argv(argv, 9000)
    assert concrete[concrete.index("--port") + 1] == "9000"
    assert shlex.split(shlex.join(concrete)) == concrete  # the .cmd line splits back exactly
    unit = systemd_unit("fast", concrete, {"GGML_X": "1 2"}, "quick")
    assert 'ExecStart="/opt/llama server/llama-server" --model /m.gguf' in unit
    assert 'Environment="GGML_X=1 2"' in unit and "--port 9000" in unit
    assert "Restart=on-failure" in unit and "WantedBy=multi-user.target" in unit
