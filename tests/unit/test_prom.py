"""Tests for Prometheus text parsing and counter deltas over llama.cpp /metrics bodies."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from servelab.engines.prom import MetricsSnapshot, counter_deltas, parse_metrics, sample_key

# The shape llama-server --metrics serves: HELP and TYPE before every family, colons in names.
BEFORE = """\
# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed.
# TYPE llamacpp:prompt_tokens_total counter
llamacpp:prompt_tokens_total 72
# HELP llamacpp:prompt_seconds_total Prompt process time
# TYPE llamacpp:prompt_seconds_total counter
llamacpp:prompt_seconds_total 0.283
# HELP llamacpp:tokens_predicted_total Number of generation tokens processed.
# TYPE llamacpp:tokens_predicted_total counter
llamacpp:tokens_predicted_total 24
# HELP llamacpp:tokens_predicted_seconds_total Predict process time
# TYPE llamacpp:tokens_predicted_seconds_total counter
llamacpp:tokens_predicted_seconds_total 0.196
# HELP llamacpp:n_decode_total Total number of llama_decode() calls
# TYPE llamacpp:n_decode_total counter
llamacpp:n_decode_total 26
# HELP llamacpp:spec_decode_num_accepted_tokens_per_pos_total Accepted draft tokens per position
# TYPE llamacpp:spec_decode_num_accepted_tokens_per_pos_total counter
llamacpp:spec_decode_num_accepted_tokens_per_pos_total{position="0"} 10
llamacpp:spec_decode_num_accepted_tokens_per_pos_total{position="1"} 4
# HELP llamacpp:n_busy_slots_per_decode Average number of busy slots per llama_decode() call
# TYPE llamacpp:n_busy_slots_per_decode gauge
llamacpp:n_busy_slots_per_decode 1
# HELP llamacpp:requests_processing Number of requests processing.
# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing 1
# HELP llamacpp:requests_deferred Number of requests deferred.
# TYPE llamacpp:requests_deferred gauge
llamacpp:requests_deferred 0
"""

AFTER = (
    BEFORE.replace("prompt_tokens_total 72", "prompt_tokens_total 432")
    .replace("prompt_seconds_total 0.283", "prompt_seconds_total 1.5")
    .replace("tokens_predicted_total 24", "tokens_predicted_total 1304")
    .replace("tokens_predicted_seconds_total 0.196", "tokens_predicted_seconds_total 10.696")
    .replace("n_decode_total 26", "n_decode_total 26")
    .replace('position="0"} 10', 'position="0"} 110')
    .replace('position="1"} 4', 'position="1"} 54')
    .replace("requests_processing 1", "requests_processing 0")
    .replace("requests_deferred 0", "requests_deferred 3")
)
assert AFTER.count("\n") == BEFORE.count("\n")

POS0 = 'llamacpp:spec_decode_num_accepted_tokens_per_pos_total{position="0"}'
POS1 = 'llamacpp:spec_decode_num_accepted_tokens_per_pos_total{position="1"}'


def test_parse_real_llamacpp_body() -> None:
    snap = parse_metrics(BEFORE)
    assert snap.samples == {
        "llamacpp:prompt_tokens_total": 72.0,
        "llamacpp:prompt_seconds_total": 0.283,
        "llamacpp:tokens_predicted_total": 24.0,
        "llamacpp:tokens_predicted_seconds_total": 0.196,
        "llamacpp:n_decode_total": 26.0,
        POS0: 10.0,
        POS1: 4.0,
        "llamacpp:n_busy_slots_per_decode": 1.0,
        "llamacpp:requests_processing": 1.0,
        "llamacpp:requests_deferred": 0.0,
    }
    assert snap.kinds["llamacpp:tokens_predicted_total"] == "counter"
    assert snap.kinds["llamacpp:spec_decode_num_accepted_tokens_per_pos_total"] == "counter"
    assert snap.kinds["llamacpp:requests_processing"] == "gauge"


def test_sample_key_sorts_labels() -> None:
    assert sample_key("m", {}) == "m"
    assert sample_key("m", {"b": "2", "a": "1"}) == 'm{a="1",b="2"}'


def test_counter_deltas_subtract_counters_and_ignore_gauges() -> None:
    deltas = counter_deltas(parse_metrics(BEFORE), parse_metrics(AFTER))
    assert deltas == pytest.approx(
        {
            "llamacpp:prompt_tokens_total": 360.0,
            "llamacpp:prompt_seconds_total": 1.217,
            "llamacpp:tokens_predicted_total": 1280.0,
            "llamacpp:tokens_predicted_seconds_total": 10.5,
            "llamacpp:n_decode_total": 0.0,
            POS0: 100.0,
            POS1: 50.0,
        }
    )
    for gauge in ("requests_processing", "requests_deferred", "n_busy_slots_per_decode"):
        assert f"llamacpp:{gauge}" not in deltas


def test_counter_reset_gives_the_after_value() -> None:
    restarted = BEFORE.replace("tokens_predicted_total 24", "tokens_predicted_total 5").replace(
        'position="1"} 4', 'position="1"} 1'
    )
    deltas = counter_deltas(parse_metrics(AFTER), parse_metrics(restarted))
    assert deltas["llamacpp:tokens_predicted_total"] == 5.0
    assert deltas[POS1] == 1.0
    assert deltas[POS0] == 10.0  # also reset: 10 < 110


def test_counter_new_in_after_counts_from_zero_and_missing_ones_are_dropped() -> None:
    extra = (
        "# TYPE llamacpp:spec_decode_num_drafts_total counter\n"
        "llamacpp:spec_decode_num_drafts_total 7\n"
    )
    deltas = counter_deltas(parse_metrics(BEFORE), parse_metrics(AFTER + extra))
    assert deltas["llamacpp:spec_decode_num_drafts_total"] == 7.0
    only_prompt = "# TYPE llamacpp:prompt_tokens_total counter\nllamacpp:prompt_tokens_total 80\n"
    assert counter_deltas(parse_metrics(BEFORE), parse_metrics(only_prompt)) == {
        "llamacpp:prompt_tokens_total": 8.0
    }


def test_empty_body() -> None:
    empty = parse_metrics("")
    assert empty == MetricsSnapshot(samples={}, kinds={})
    assert counter_deltas(empty, parse_metrics(BEFORE))["llamacpp:prompt_tokens_total"] == 72.0


@settings(deadline=None)
@given(
    before=st.integers(min_value=0, max_value=10**12),
    after=st.integers(min_value=0, max_value=10**12),
    gauge=st.integers(min_value=0, max_value=100),
)
def test_deltas_are_never_negative(before: int, after: int, gauge: int) -> None:
    def body(counter: int) -> str:
        return (
            "# TYPE llamacpp:tokens_predicted_total counter\n"
            f"llamacpp:tokens_predicted_total {counter}\n"
            "# TYPE llamacpp:requests_processing gauge\n"
            f"llamacpp:requests_processing {gauge}\n"
        )

    deltas = counter_deltas(parse_metrics(body(before)), parse_metrics(body(after)))
    assert list(deltas) == ["llamacpp:tokens_predicted_total"]
    expected = after - before if after >= before else after
    assert deltas["llamacpp:tokens_predicted_total"] == expected >= 0
