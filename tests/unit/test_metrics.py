"""Tests for the metric dictionary (servelab.metrics) and the requests.jsonl row (servelab.store).

Known answers are worked by hand with binary-exact numbers; properties check the identities the
definitions imply (decode_tps * tpot_s == 1, itl gaps add up to the decode span).
"""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from servelab.metrics import (
    METRIC_BY_NAME,
    METRICS,
    SUMMARY_METRICS,
    Provenance,
    derive,
    itl_s,
    n_out,
)
from servelab.records import Observation, Outcome, Phase, ToolCall, Usage
from servelab.store import ROW_SCHEMA_VERSION, RowContext
from servelab.store import build_row as build_request_row

LATENCY = ("ttft_s", "ttft_content_s", "ttft_tool_s", "e2e_s", "tpot_s", "decode_tps", "e2e_tps")

TIMINGS = {
    "cache_n": 0,
    "prompt_n": 36,
    "prompt_ms": 141.5,
    "prompt_per_token_ms": 3.93,
    "prompt_per_second": 254.4,
    "predicted_n": 6,
    "predicted_ms": 40.0,
    "predicted_per_token_ms": 8.0,
    "predicted_per_second": 125.0,
    "draft_n": 16,
    "draft_n_accepted": 12,
}

# wait 0.5 s, first content 1.0 s after the send, end 3.0 s after the send, 6 tokens out
OBS = Observation(
    outcome=Outcome.OK,
    wait_s=0.5,
    end_s=3.0,
    first_byte_s=0.75,
    first_content_s=1.0,
    chunk_t_s=(1.0, 1.5, 2.0, 3.0),
    chunk_tokens=(1, 2, 0, 3),
    chunk_tokens_source="server",
    text="abcdef",
    finish_reason="length",
    usage=Usage(prompt_tokens=36, completion_tokens=6),
    server_timings=TIMINGS,
    http_status=200,
    extra={"saw_done": True},
)


def build_row(obs: Observation, ctx: RowContext) -> dict[str, object]:
    """The row's JSON object, as ``requests.jsonl`` holds it."""
    return dict(build_request_row(obs, ctx).to_json())


def test_known_answers() -> None:
    m = derive(OBS)
    assert m["ttft_s"] == 1.5  # includes wait_s
    assert m["ttft_content_s"] == 1.5
    assert m["ttft_tool_s"] is None
    assert m["e2e_s"] == 3.5
    assert m["wait_s"] == 0.5
    assert m["tpot_s"] == pytest.approx(2.0 / 5)
    assert m["decode_tps"] == pytest.approx(5 / 2.0)
    assert m["e2e_tps"] == pytest.approx(6 / 3.5)
    # gaps: 1.0 -> 1.5 carries 2 tokens; 2.0 carried none (merged); 1.5 -> 3.0 carries 3
    assert m["itl_s"] == [0.25, 0.5]
    assert (m["n_out"], m["n_out_source"], m["n_in"]) == (6, "usage", 36)


def test_server_reported_fields_come_from_timings() -> None:
    m = derive(OBS)
    assert m["server_prompt_s"] == pytest.approx(0.1415)
    assert m["prefill_tps"] == 254.4
    assert m["server_decode_tps"] == 125.0
    assert m["cache_n"] == 0
    assert m["draft_n"] == 16
    assert m["draft_accepted"] == 12
    assert m["acceptance_rate"] == 0.75


@pytest.mark.parametrize(
    ("timings", "expected"),
    [
        (None, dict.fromkeys(("prefill_tps", "server_prompt_s", "draft_n"), None)),
        ({}, {"acceptance_rate": None, "cache_n": None}),
        ({"draft_n": 0, "draft_n_accepted": 0}, {"draft_n": 0, "acceptance_rate": None}),
        ({"draft_n": 8}, {"draft_n": 8, "draft_accepted": None, "acceptance_rate": None}),
        ({"prompt_ms": "12", "cache_n": True}, {"server_prompt_s": None, "cache_n": None}),
        ({"prompt_ms": 250}, {"server_prompt_s": 0.25}),
    ],
)
def test_server_fields_missing_or_odd(
    timings: dict[str, Any] | None, expected: dict[str, Any]
) -> None:
    m = derive(replace(OBS, server_timings=timings))
    assert {k: m[k] for k in expected} == expected


def test_ttft_is_the_earliest_token_bearing_event() -> None:
    obs = replace(OBS, first_content_s=1.25, first_tool_s=0.75, extra={"first_reasoning_s": 1.0})
    m = derive(obs)
    assert m["ttft_s"] == 1.25  # 0.5 wait + 0.75 tool name
    assert m["ttft_tool_s"] == 1.25
    assert m["ttft_content_s"] == 1.75
    reasoning_first = replace(OBS, first_content_s=2.0, extra={"first_reasoning_s": 0.5})
    assert derive(reasoning_first)["ttft_s"] == 1.0


def test_n_out_fallback_to_chunks_is_recorded() -> None:
    obs = replace(OBS, usage=None)
    assert n_out(obs) == (6, "chunks")
    m = derive(obs)
    assert (m["n_out"], m["n_out_source"], m["n_in"]) == (6, "chunks", None)
    assert m["tpot_s"] == pytest.approx(2.0 / 5)


def test_single_token_or_no_token_has_no_decode_rate() -> None:
    one = derive(replace(OBS, usage=Usage(36, 1)))
    assert one["tpot_s"] is None
    assert one["decode_tps"] is None
    assert one["e2e_tps"] == pytest.approx(1 / 3.5)
    empty = derive(
        replace(OBS, first_content_s=None, chunk_t_s=(), chunk_tokens=(), usage=Usage(36, 0))
    )
    assert empty["ttft_s"] is None
    assert empty["tpot_s"] is None
    assert empty["decode_tps"] is None
    assert empty["itl_s"] == []
    assert empty["e2e_s"] == 3.5


@pytest.mark.parametrize("outcome", [o for o in Outcome if o is not Outcome.OK])
def test_failed_observations_have_no_latency(outcome: Outcome) -> None:
    m = derive(replace(OBS, outcome=outcome, error="boom"))
    for name in LATENCY:
        assert m[name] is None, name
    assert m["itl_s"] == []
    # counts are still reported (they are not latency)
    assert m["n_out"] == 6


@pytest.mark.parametrize(
    ("times", "tokens", "expected"),
    [
        ((), (), []),
        ((1.0,), (1,), []),
        ((1.0, 2.0, 4.0), (1, 1, 1), [1.0, 2.0]),
        ((1.0, 2.0, 4.0), (1, 4, 2), [0.25, 1.0]),
        ((1.0, 2.0, 3.0, 5.0), (0, 1, 0, 2), [1.5]),  # zero-token chunks are merged
        ((1.0, 1.0), (1, 1), [0.0]),
    ],
)
def test_itl_known_answers(
    times: tuple[float, ...], tokens: tuple[int, ...], expected: list[float]
) -> None:
    assert itl_s(times, tokens) == pytest.approx(expected)


def test_itl_refuses_mismatched_lengths() -> None:
    with pytest.raises(ValueError):
        itl_s((1.0, 2.0), (1,))


def seconds(max_s: float) -> st.SearchStrategy[float]:
    """Durations as the clock gives them: whole nanoseconds."""
    return st.integers(min_value=0, max_value=int(max_s * 1e9)).map(lambda ns: ns / 1e9)


chunk_series = st.lists(
    st.tuples(seconds(2), st.integers(min_value=0, max_value=6)),
    min_size=1,
    max_size=40,
)


@settings(deadline=None)
@given(chunk_series)
def test_itl_gaps_times_tokens_span_the_token_chunks(chunks: list[tuple[float, int]]) -> None:
    times = tuple(itertools.accumulate(gap for gap, _ in chunks))
    tokens = tuple(n for _, n in chunks)
    gaps = itl_s(times, tokens)
    counted = [(t, n) for t, n in zip(times, tokens, strict=True) if n > 0]
    assert len(gaps) == max(len(counted) - 1, 0)
    assert all(g >= 0 for g in gaps)
    if len(counted) >= 2:
        later_tokens = [n for _, n in counted[1:]]
        span = sum(g * n for g, n in zip(gaps, later_tokens, strict=True))
        assert span == pytest.approx(counted[-1][0] - counted[0][0], abs=1e-9)


@settings(deadline=None)
@given(
    wait=seconds(10),
    first=seconds(100),
    decode=seconds(100),
    n=st.integers(min_value=0, max_value=100_000),
    use_usage=st.booleans(),
)
def test_rate_identities(wait: float, first: float, decode: float, n: int, use_usage: bool) -> None:
    end = first + decode
    obs = Observation(
        outcome=Outcome.OK,
        wait_s=wait,
        end_s=end,
        first_content_s=first,
        chunk_t_s=(first,),
        chunk_tokens=(n,),
        usage=Usage(1, n) if use_usage else None,
    )
    m = derive(obs)
    assert m["n_out"] == n
    assert m["ttft_s"] <= m["e2e_s"]
    if m["decode_tps"] is not None and m["tpot_s"] is not None:
        assert m["decode_tps"] * m["tpot_s"] == pytest.approx(1.0)
    else:
        assert m["decode_tps"] is None and m["tpot_s"] is None
        assert n < 2 or m["e2e_s"] - m["ttft_s"] <= 0
    if m["e2e_tps"] is not None:
        assert m["e2e_tps"] * m["e2e_s"] == pytest.approx(n)
    if m["tpot_s"] is not None:
        assert m["tpot_s"] * (n - 1) == pytest.approx(m["e2e_s"] - m["ttft_s"])


# --- the dictionary itself --------------------------------------------------------------------


def test_metric_names_are_unique_and_carry_units() -> None:
    names = [m.name for m in METRICS]
    assert len(names) == len(set(names))
    assert set(METRIC_BY_NAME) == set(names)
    assert set(SUMMARY_METRICS) <= set(names)
    for m in METRICS:
        if m.unit == "s":
            assert m.name.endswith("_s"), m.name
        if m.unit == "tok/s":
            assert m.name.endswith("_tps"), m.name
        assert isinstance(m.provenance, Provenance)
        assert m.summary


def test_derive_returns_exactly_the_dictionary() -> None:
    names = {m.name for m in METRICS}
    for obs in (OBS, replace(OBS, outcome=Outcome.TIMEOUT)):
        assert set(derive(obs)) == names | {"n_out_source", "chunk_tokens_source"}


def test_provenance_of_key_metrics() -> None:
    assert METRIC_BY_NAME["ttft_s"].provenance is Provenance.MEASURED
    assert METRIC_BY_NAME["tpot_s"].provenance is Provenance.DERIVED
    assert METRIC_BY_NAME["n_out"].provenance is Provenance.SERVER
    assert METRIC_BY_NAME["decode_tps"].lower_is_better is False
    assert METRIC_BY_NAME["ttft_s"].lower_is_better is True


# --- rows -------------------------------------------------------------------------------------

CTX = RowContext(
    run_id="demo-20261122T000000Z",
    arm="A",
    block=2,
    phase=Phase.TRIAL,
    seq=7,
    prompt_id="weather-en",
    concurrency=4,
    t_send_unix_s=1795388603.25,
)


def test_row_layout() -> None:
    obs = replace(
        OBS,
        tool_calls=(ToolCall(0, "get_weather", '{"location": "台北"}', "call_1"),),
        reasoning="hm",
        invalid_utf8_bytes=2,
    )
    row = build_row(obs, CTX)
    assert row["schema_version"] == ROW_SCHEMA_VERSION == 2
    new = ("rate_rps", "t_sched_unix_s", "lag_s", "session_id", "turn", "slo_met")
    assert all(row[k] is None for k in new)  # closed loop, single turn, no SLOs
    assert row["run_id"] == "demo-20261122T000000Z"
    assert (row["arm"], row["block"], row["seq"], row["prompt_id"]) == ("A", 2, 7, "weather-en")
    assert row["phase"] == "trial"
    assert type(row["phase"]) is str
    assert row["outcome"] == "ok"
    assert type(row["outcome"]) is str
    assert row["concurrency"] == 4
    assert row["t_send_unix_s"] == 1795388603.25
    assert row["ttft_s"] == 1.5
    assert row["itl_s"] == [0.25, 0.5]
    assert row["chunk_t_s"] == [1.0, 1.5, 2.0, 3.0]
    assert row["chunk_tokens"] == [1, 2, 0, 3]
    assert row["chunk_tokens_source"] == "server"
    assert row["usage"] == {"prompt_tokens": 36, "completion_tokens": 6}
    assert row["server_timings"] == TIMINGS
    assert row["tool_calls"] == [
        {"index": 0, "name": "get_weather", "arguments": '{"location": "台北"}', "id": "call_1"}
    ]
    assert row["first_byte_s"] == 0.75
    assert row["finish_reason"] == "length"
    assert row["saw_done"] is True
    assert row["invalid_utf8_bytes"] == 2
    assert (row["text"], row["reasoning"]) == ("abcdef", "hm")
    for m in METRICS:
        assert m.name in row


def test_row_is_strict_json_and_round_trips() -> None:
    row = build_row(OBS, CTX)
    text = json.dumps(row, allow_nan=False, ensure_ascii=False)
    assert json.loads(text) == row


def test_failed_row_has_null_latency_and_keeps_the_error() -> None:
    obs = replace(OBS, outcome=Outcome.HTTP_ERROR, http_status=503, error="HTTP 503: busy")
    row = build_row(obs, replace(CTX, phase=Phase.WARMUP))
    assert row["phase"] == "warmup"
    assert row["outcome"] == "http_error"
    assert (row["http_status"], row["error"]) == (503, "HTTP 503: busy")
    assert all(row[name] is None for name in LATENCY)
    assert row["itl_s"] == []
    json.dumps(row, allow_nan=False)


@settings(deadline=None)
@given(
    end=seconds(1e4),
    wait=seconds(1e3),
    n=st.integers(min_value=0, max_value=10_000),
    outcome=st.sampled_from(list(Outcome)),
)
def test_rows_never_hold_nan_or_infinity(end: float, wait: float, n: int, outcome: Outcome) -> None:
    obs = Observation(
        outcome=outcome,
        wait_s=wait,
        end_s=end,
        first_content_s=end / 2,
        chunk_t_s=(end / 2, end),
        chunk_tokens=(1, max(n - 1, 0)),
        usage=Usage(3, n),
    )
    json.dumps(build_row(obs, CTX), allow_nan=False)


def _estimated(n_chunks: int, n_out: int, finish: str) -> Observation:
    times = tuple(0.1 + 0.01 * i for i in range(n_chunks))
    return Observation(
        outcome=Outcome.OK, wait_s=0.0, end_s=times[-1] + 0.01, first_content_s=0.1,
        chunk_t_s=times, chunk_tokens=(1,) * n_chunks, chunk_tokens_source="estimated",
        finish_reason=finish, usage=Usage(prompt_tokens=5, completion_tokens=n_out),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("n_chunks", "n_out", "finish", "source"),
    [
        (10, 10, "length", "verified"),  # one token per chunk, cut at max_tokens
        (10, 11, "stop", "verified"),  # plus the end-of-sequence token, which has no text
        (10, 11, "length", "estimated"),  # a chunk carried two tokens
        (6, 11, "stop", "estimated"),  # CJK-like: many chunks carried two tokens
    ],
)
def test_estimated_chunk_counts_are_verified_against_usage(
    n_chunks: int, n_out: int, finish: str, source: str
) -> None:
    m = derive(_estimated(n_chunks, n_out, finish))
    assert m["chunk_tokens_source"] == source
    if source == "verified":
        assert len(m["itl_s"]) == n_chunks - 1
    else:
        assert m["itl_s"] == []  # never an ITL off by an unknown factor
    assert m["decode_tps"] is not None  # decode speed uses usage, not chunk counts
