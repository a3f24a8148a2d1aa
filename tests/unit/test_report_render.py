"""Report rendering: Markdown and HTML from a summary, the manifest and the rows.

Fixtures in tests/fixtures/report are written by hand from docs/summary-json.md; one test renders
what ``analyze`` makes of a small synthetic run, so the two halves of ``servelab report`` stay in
step.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import random
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from servelab.analysis import analyze
from servelab.report.comparison_view import comparison_phrase
from servelab.report.html import render_html
from servelab.report.markdown import md_text, render_markdown
from servelab.report.plots import report_plots
from servelab.report.sections import report_sections
from servelab.store import Manifest
from servelab.store.summary import ArmSummary, Comparison, Stopping, Summary

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "report"
EVIL = "<script>alert(1)</script> and </textarea><img src=x onerror=alert(2)>"
BROKEN = "broken <b>arm</b>"


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    return data


def _summary(name: str) -> Summary:
    return Summary.from_json(_load(name))


def _manifest(name: str) -> Manifest:
    return Manifest.from_json(_load(name))


Experiment = tuple[Summary, Manifest, list[dict[str, Any]]]


def _row(arm: str, block: int, seq: int, concurrency: int, **kw: Any) -> dict[str, Any]:
    ok = kw.get("outcome", "ok") == "ok"
    return {
        "schema_version": 1, "run_id": "t", "arm": arm, "block": block, "phase": "trial",
        "seq": seq, "prompt_id": f"p{seq % 3}", "concurrency": concurrency,
        "t_send_unix_s": 1.8e9 + seq * 1.5, "outcome": "ok", "error": None,
        "finish_reason": "stop" if ok else None, "n_out": 64 if ok else 0, "n_in": 20,
        "decode_tps": None, "ttft_s": None, "e2e_s": None, "text": "fine", "reasoning": None,
        "tool_calls": [], **kw,
    }  # fmt: skip


def make_rows(
    arms: dict[str, float], blocks: int = 3, levels: tuple[int, ...] = (1,), per_block: int = 4
) -> list[dict[str, Any]]:
    """Interleaved trial rows; an arm whose speed is 0 fails every request."""
    rng = random.Random(7)
    rows, seq = [], 0
    for block in range(blocks):
        order = list(arms) if block % 2 == 0 else list(reversed(arms))
        for arm in order:
            for c in levels:
                for _ in range(per_block):
                    speed = arms[arm]
                    if speed == 0:
                        rows.append(_row(arm, block, seq, c, outcome="http_error",
                                         error="HTTP 400: unknown flag --bogus"))  # fmt: skip
                    else:
                        tps = speed * rng.uniform(0.95, 1.05)
                        ttft = 0.05 * rng.uniform(0.9, 1.1)
                        rows.append(_row(arm, block, seq, c, decode_tps=tps, ttft_s=ttft,
                                         e2e_s=ttft + 63 / tps))  # fmt: skip
                    seq += 1
    return rows


@pytest.fixture(scope="module")
def experiment() -> Experiment:
    rows = make_rows({"none": 120.0, "ngram-simple": 141.0, BROKEN: 0.0}, levels=(1, 4))
    rows[0]["text"] = EVIL
    rows[1]["text"] = "y" * 5000
    rows[2]["tool_calls"] = [{"index": 0, "id": "c1", "name": "get_weather",
                              "arguments": '{"city": "</pre><script>x</script>"}'}]  # fmt: skip
    return _summary("summary-experiment.json"), _manifest("manifest-experiment.json"), rows


@pytest.fixture(scope="module")
def html_report(experiment: Experiment) -> str:
    return render_html(*experiment)


@pytest.fixture(scope="module")
def md_report(experiment: Experiment) -> str:
    summary, manifest, _ = experiment
    return render_markdown(summary, manifest)


# --- HTML safety -----------------------------------------------------------------------------


def test_model_text_is_escaped_never_raw(html_report: str) -> None:
    assert "<script" not in html_report.lower()
    assert "</textarea>" not in html_report
    assert "onerror=alert" not in html_report.replace("onerror=alert(2)&gt;", "")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html_report
    assert "&lt;/textarea&gt;" in html_report
    assert "&lt;/pre&gt;&lt;script&gt;x&lt;/script&gt;" in html_report  # tool-call arguments


def test_run_strings_are_escaped(html_report: str) -> None:
    assert "<b>arm</b>" not in html_report
    assert "broken &lt;b&gt;arm&lt;/b&gt;" in html_report


def test_plots_are_embedded_and_nothing_is_fetched(html_report: str) -> None:
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html_report)
    assert len(images) == 6  # forest, 2 distributions, 2 drift, sweep
    assert all(base64.b64decode(b).startswith(b"\x89PNG\r\n\x1a\n") for b in images)
    assert "http://" not in html_report and "https://" not in html_report
    for attr in re.findall(r'(?:src|href)="([^"]*)"', html_report):
        assert attr.startswith(("data:image/png;base64,", "#")), attr
    assert "@import" not in html_report and "url(" not in html_report
    assert "default-src 'none'" in html_report


def test_html_confound_banner_comes_first(html_report: str) -> None:
    body = html_report.split("<body>", 1)[1]
    assert body.lstrip().startswith('<section id="confounds" class="alert">')
    banner = body.split("</section>", 1)[0]
    assert "ctx_size" in banner and "none = 4096" in banner and "ngram-simple = 8192" in banner
    assert body.index("ctx_size") < body.index("<h1>")


def test_html_sections_in_order(html_report: str) -> None:
    keys = re.findall(r'<section id="([a-z]+)"', html_report)
    assert keys == [
        "confounds", "verdicts", "arms", "proportions", "quality", "distributions", "drift",
        "sweep", "theory", "config", "stopping", "environment", "warnings", "samples",
    ]  # fmt: skip


def test_long_replies_are_truncated(html_report: str) -> None:
    assert "y" * 5000 not in html_report
    assert "more characters]" in html_report


# --- Markdown --------------------------------------------------------------------------------


def test_markdown_confound_banner_is_the_first_line(md_report: str) -> None:
    first = md_report.splitlines()[:6]
    assert first[0].startswith("> **WARNING: CONFOUNDED")
    assert any("ctx_size" in line and "ngram-simple = 8192" in line for line in first)
    assert md_report.index("ctx_size") < md_report.index("# servelab report")


def test_verdict_sentence_comes_before_the_tables(md_report: str) -> None:
    verdict = ("**ngram-simple**: decode median 1.18x faster (95 % CI 1.09-1.27), "
               "TTFT median no difference")  # fmt: skip
    assert verdict in md_report
    assert md_report.index(verdict) < md_report.index("| metric (statistic) | candidate |")
    assert md_report.index(verdict) < md_report.index("## Arms and metrics")


def test_markdown_names_every_arm_and_comparison(experiment: Experiment, md_report: str) -> None:
    summary = experiment[0]
    arms_table = md_report.split("## Arms and metrics", 1)[1].split("##", 1)[0]
    for arm in summary.arms:
        assert arm.replace("<", "\\<").replace(">", "\\>") in arms_table
    table = [line for line in md_report.splitlines() if line.startswith("| ")]
    for c in summary.comparisons:
        cand = c.candidate.replace("<", "\\<").replace(">", "\\>")
        row = f"| {c.metric} ({c.statistic}) | {cand} | none | 1 |"
        assert any(row in line for line in table), c


def test_arm_without_successful_requests_renders(md_report: str, html_report: str) -> None:
    metric_row = next(line for line in md_report.splitlines() if line.startswith("| decode_tps ("))
    assert metric_row.rstrip().endswith("| - |")  # the broken arm's cell
    assert "decode median: no data to compare" in md_report
    assert "no successful requests" not in md_report  # that is the plot's wording
    assert "HTTP 400: unknown flag --bogus" in html_report  # its failures are shown instead


def test_markdown_embeds_no_images_and_points_to_html(md_report: str) -> None:
    assert "data:image" not in md_report and "![" not in md_report
    assert "Plot in report.html" in md_report


def test_markdown_reads_as_plain_text(md_report: str) -> None:
    for needle in ("median TTFT", "Wilson 95 % CI", "AMD EPYC 9B14", "8.0 GiB", "0c1e57098",
                   "5f2a1c0e9d8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f",
                   "look after block 2", "Advice: make the arms agree on ctx_size"):  # fmt: skip
        assert needle in md_report, needle
    assert "--spec-type ngram-simple \\| --spec-draft-n-max 8" in md_report  # pipe kept in cell


def test_markdown_with_rows_fences_replies_safely(
    experiment: Experiment,
) -> None:
    summary, manifest, rows = experiment
    rows = [dict(r) for r in rows]
    rows[0]["text"] = "before ``` after"
    md = render_markdown(summary, manifest, rows)
    assert "````text\nbefore ``` after\n````" in md
    assert "### ngram-simple" in md


def test_md_text_escapes_outside_code_spans_only() -> None:
    assert md_text("read `a|b <c>` then <x> | *y*") == "read `a\\|b <c>` then \\<x\\> \\| \\*y\\*"
    assert md_text("two\nlines") == "two lines"


# --- edge cases ------------------------------------------------------------------------------


def test_imported_run_without_host_describe_or_sweep() -> None:
    summary, manifest = _summary("summary-import.json"), _manifest("manifest-import.json")
    md = render_markdown(summary, manifest)
    html = render_html(summary, manifest, [])
    assert "not recorded" in md and "No engine description recorded." in md
    assert "NOT interleaved" in md
    assert "about 12 blocks per arm would decide" in md
    assert "no warm-up" in md and "llama-bench-jsonl" in md
    assert "No concurrency sweep recorded." in md
    assert md.splitlines()[0] == "# servelab report: import-llama-bench-20261123T020000Z"
    assert html.count("<img") == 1  # the forest plot only: no rows, no sweep


def test_one_concurrency_level_has_no_sweep_plot() -> None:
    full = _summary("summary-experiment.json")
    summary = dataclasses.replace(full, sweep={a: p[:1] for a, p in full.sweep.items()})
    rows = make_rows({"none": 120.0, "ngram-simple": 141.0})
    kinds = [p.kind for p in report_plots(summary, rows)]
    assert "sweep" not in kinds and kinds.count("distributions") == 2
    md = render_markdown(summary, _manifest("manifest-experiment.json"))
    assert "One concurrency level: no scaling to plot." in md


def test_minimal_summary_renders() -> None:
    arm = ArmSummary(
        n_ok=0,
        n_failed=0,
        n_warmup=0,
        failures={},
        finish_reasons={},
        n_out_fallback=0,
        itl_unverified=0,
        invalid_utf8_requests=0,
        metrics={},
    )
    stopping = Stopping("fixed size: one analysis at the end", False, None, 0.05, None, None,
                        None, 0, 0, 0.95, False, None)  # fmt: skip
    summary = Summary(schema_version=1, kind="bench", run_id="bare", baseline="bench",
                      decision_metrics=(), interleaved=True, confidence=0.95, seed=0,
                      n_resamples=2000, arms={"bench": arm}, comparisons=(), proportions=(),
                      sweep={}, stopping=stopping)  # fmt: skip
    bare = Manifest(kind="bench")
    md = render_markdown(summary, bare)
    html = render_html(summary, bare, [])
    assert "No comparisons" in md and "bench" in md
    assert "<h1>servelab report: bare</h1>" in html
    assert next(s.key for s in report_sections(summary, bare)) == "verdicts"


def _comparison(metric: str, ratio: float, lo: float, hi: float, summary: str = "") -> Comparison:
    return Comparison(
        metric=metric, baseline="a", candidate="b", concurrency=1, statistic="median",
        lower_is_better=metric != "decode_tps", ratio=ratio, ci_low=lo, ci_high=hi,
        ratio_mean=None, ci_low_mean=None, ci_high_mean=None, verdict="better", min_effect=0.03,
        n_blocks=4, blocks_needed=None, paired=True, confidence_level=0.95, ci_width=hi - lo,
        n_blocks_baseline=4, n_blocks_candidate=4, summary=summary,
    )  # fmt: skip


def test_phrase_from_numbers_when_analysis_gave_none() -> None:
    decode = _comparison("decode_tps", 1.18, 1.09, 1.27)
    assert comparison_phrase(decode) == "decode median 1.18x faster (95 % CI 1.09-1.27)"
    ttft = _comparison("ttft_s", 0.8, 0.7, 0.9)
    assert comparison_phrase(ttft) == "TTFT median 1.25x faster (ratio 0.80) (95 % CI 0.70-0.90)"
    given = dataclasses.replace(decode, summary="their words")
    assert comparison_phrase(given) == "their words"


def test_rendering_leaves_matplotlib_global_state_alone(
    experiment: Experiment,
) -> None:
    had_pyplot = "matplotlib.pyplot" in sys.modules
    render_html(*experiment)
    assert had_pyplot or "matplotlib.pyplot" not in sys.modules


def test_renders_what_analyze_produces() -> None:
    rows = make_rows({"base": 100.0, "fast": 130.0, "dead": 0.0}, blocks=4)
    manifest = {
        "schema_version": 1, "kind": "experiment", "run_id": "synthetic", "baseline": "base",
        "arms": {"base": {}, "fast": {}, "dead": {}}, "decision_metrics": ["decode_tps", "ttft_s"],
        "status": "complete",
    }  # fmt: skip
    typed = Manifest.from_json(manifest)
    summary = Summary.from_json(
        json.loads(json.dumps(analyze(typed, rows, n_resamples=200).to_json()))
    )
    md = render_markdown(summary, typed, rows)
    html = render_html(summary, typed, rows)
    for c in summary.comparisons:
        assert c.summary in md
        assert c.summary.replace("<", "&lt;") in html
    for arm in ("base", "fast", "dead"):
        assert f"### {arm}" in md and f"<h3>{arm}</h3>" in html
    fast = next(c for c in summary.comparisons
                if c.candidate == "fast" and c.metric == "decode_tps")  # fmt: skip
    assert fast.verdict == "better"
    assert md.index(fast.summary) < md.index("## Arms and metrics")
    assert "- **dead**: not compared: 0 successful and 16 failed trial requests" in md
    assert "data:image/png;base64," in html
