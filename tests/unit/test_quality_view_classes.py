"""The report's quality section shows what the per-arm rates are made of: tool outcomes and
script classes as counts, the target-script shares with their intervals, and one console line
per arm with every headline rate and its interval (issue 16)."""

from __future__ import annotations

from typing import Any

from servelab.report.blocks import Para, Table
from servelab.report.quality_view import arm_quality_words, quality_blocks
from servelab.scoring.aggregate import QUALITY_METRICS, ArmTally, summary_of_rates
from servelab.store.summary import QualitySection


def _score(outcome: str, script: str | None, args_valid: bool | None = None) -> dict[str, Any]:
    score: dict[str, Any] = {
        "tool": {"outcome": outcome, "args_valid": args_valid, "malformed": []},
        "coherence": {"flags": []},
    }
    if script is not None:
        score["script"] = {"target": "traditional", "class": script,
                           "after_s2t": {"class": "traditional"}}  # fmt: skip
    return score


def _section() -> QualitySection:
    stub, full = ArmTally(), ArmTally()
    for s in [
        _score("correct", None, True),
        _score("missed", None),
        _score("false_fire", "none"),
        _score("correct_no_call", "simplified"),
        _score("correct_no_call", "mixed"),
    ]:
        stub.add(s)  # type: ignore[arg-type]
    for s in [
        _score("correct", None, True),
        _score("correct", None, True),
        _score("correct_no_call", "traditional"),
        _score("correct_no_call", "neutral"),
    ]:
        full.add(s)  # type: ignore[arg-type]
    rates = {"stub": stub.rates(), "full": full.rates()}
    return QualitySection.from_json({**summary_of_rates(rates, "stub"), "notes": []})


def _table(blocks: tuple[object, ...], first: str) -> Table:
    return next(b for b in blocks if isinstance(b, Table) and b.headers[0] == first)


def test_tool_outcomes_and_script_classes_are_counted_per_arm() -> None:
    blocks = quality_blocks(_section())
    outcomes = _table(blocks, "tool outcome")
    assert outcomes.headers == ("tool outcome", "stub", "full")
    assert ("correct", "1", "2") in outcomes.rows and ("false_fire", "1", "0") in outcomes.rows
    classes = _table(blocks, "script class")
    counts = {row[0]: row[1:] for row in classes.rows}
    assert counts["traditional"] == ("0", "1") and counts["none"] == ("1", "0")
    assert counts["mixed"] == ("1", "0") and counts["simplified"] == ("1", "0")
    share = counts["share reading Traditional (traditional or neutral)"]
    assert share[0].startswith("0.0 % (0.0 % - ") and share[0].endswith("0 of 3")
    assert share[1].startswith("100.0 % (") and share[1].endswith("2 of 2")
    assert any(isinstance(b, Para) and "Script classes" in b.text for b in blocks)


def test_every_headline_rate_has_an_interval_in_the_console_line() -> None:
    q = _section()
    assert q.arms is not None
    line = arm_quality_words("full", q.arms["full"])
    assert line.startswith("quality full: tool accuracy 100.0 % (")
    assert "; false fires 0.0 % (0.0 % - " in line and "0 of 2; args valid" in line
    assert "Traditional 100.0 % (" in line and "script classes traditional 1, neutral 1" in line
    stub = arm_quality_words("stub", q.arms["stub"])
    for label in ("tool accuracy", "false fires", "args valid", "Traditional"):
        part = next(p for p in stub.split("; ") if label in p)
        assert " - " in part and " of " in part, part  # "p (lo - hi), k of n"
    assert stub.endswith("script classes mixed 1, simplified 1, none 1")


def test_rates_named_in_the_console_line_exist() -> None:
    names = {m.name for m in QUALITY_METRICS}
    assert {"tool_accuracy", "false_fire_rate", "args_valid_rate", "traditional_rate"} <= names
