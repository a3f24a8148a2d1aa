"""``servelab bench --rate``: the open loop against the real llama-server and default model.

The issue's must-show: ``bench --rate 2 -n 40`` achieves 2 +- 0.3 requests/s, its rows carry
the scheduled and the actual send times, and requests overlap (a slow reply never holds back
the next send). ``--max-tokens 8`` keeps it at about 25 s.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from servelab.store.jsonl import read_jsonl
from tests.integration.conftest import run_cli

pytestmark = pytest.mark.engine


def test_rate_two_is_sent_on_schedule(engine_ready: None, tmp_path: Path) -> None:
    out = tmp_path / "rate2"
    res = run_cli(
        "bench", "--rate", "2", "-n", "40", "--warmup", "1", "--max-tokens", "8", "--quiet",
        "--out", str(out),
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    rows = [r for r in read_jsonl(out / "requests.jsonl").rows if r["phase"] == "trial"]
    assert len(rows) == 40 and all(r["outcome"] == "ok" for r in rows)
    assert all(r["schema_version"] == 2 and r["rate_rps"] == 2.0 for r in rows)
    for r in rows:
        assert r["lag_s"] == pytest.approx(r["t_send_unix_s"] - r["t_sched_unix_s"], abs=1e-6)
        assert 0 <= r["lag_s"] < 0.1
    sends = sorted(r["t_send_unix_s"] for r in rows)
    assert 39 / (sends[-1] - sends[0]) == pytest.approx(2.0, abs=0.3)
    spans = sorted((r["t_send_unix_s"], r["t_send_unix_s"] + r["e2e_s"]) for r in rows)
    assert any(start < end for (_, end), (start, _) in itertools.pairwise(spans))
    figures = json.loads((out / "summary.json").read_text())["open_loop"]
    assert figures["requested_rps"] == 2.0 and figures["n_sent"] == 40
    assert figures["achieved_rps"] == pytest.approx(2.0, abs=0.3)
    assert "open loop: requested 2 req/s, achieved" in res.stdout
