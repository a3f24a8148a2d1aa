"""The voice-agent example end to end on the real llama-server with the real tool-calling model
(issue 16): both system-prompt arms report tool accuracy, false fires, argument validity and
script classes, each rate with its interval, and a real reply is scored a correct tool call.

The example sends all 30 prompts per arm (about nine minutes on two cores); this test runs a
trimmed copy of it, the first eight prompts per arm (two rounds of four), which hold small talk,
zh-TW commands and English commands (the workload interleaves them). The copy also lets
llama-server keep the system prompt and tools in its slot between requests (``prefix_cache``,
as a production voice agent would): each request otherwise prefills them afresh, 13 s on
average on two cores, which is most of the run's time and none of what this test reads.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from servelab.store.jsonl import read_jsonl
from tests.integration.conftest import run_cli
from tests.models import listed_model

pytestmark = pytest.mark.engine

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "voice-agent.yaml"
MODEL = "qwen2.5-coder-0.5b-instruct"
ARMS = ("system_prompt=stub", "system_prompt=full")
HEADLINE = ("tool_accuracy", "false_fire_rate", "args_valid_rate", "traditional_rate")


def trimmed_example(tmp_path: Path) -> Path:
    """The example as shipped, with fewer requests per block, the prompt cache on (and its chat
    template file named by its absolute path, since the copy lives elsewhere)."""
    spec = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    engine = spec["base"]["engine"]
    assert engine["model"] == listed_model(MODEL)
    flags = engine["flags"]
    assert "--jinja" in flags  # the chat template with tools
    template = flags.index("--chat-template-file") + 1
    flags[template] = str(REPO / flags[template])
    assert Path(flags[template]).is_file()
    assert spec["factors"] == {"system_prompt": ["stub", "full"]}
    spec["requests_per_block"] = 4
    engine["prefix_cache"] = True
    path = tmp_path / "voice-agent.yaml"
    path.write_text(yaml.safe_dump(spec, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("voice")
    out = tmp / "run"
    # --force: this checks what the replies score, not the machine; preflight has its own tests
    done = run_cli("run", str(trimmed_example(tmp)), "--out", str(out), "--quiet", "--force",
                   timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "report:" in done.stdout
    return out


def _summary(run: Path) -> dict[str, Any]:
    return dict(json.loads((run / "summary.json").read_text(encoding="utf-8")))


def test_both_arms_report_every_headline_rate_with_an_interval(run: Path) -> None:
    summary = _summary(run)
    quality = summary["quality"]
    assert tuple(quality["arms"]) == ARMS and quality["baseline"] == ARMS[0]
    for arm in ARMS:
        a, counts = quality["arms"][arm], summary["arms"][arm]
        # every successful reply is scored; a reply llama-server cannot parse fails (n_failed)
        assert a["n_rows"] == counts["n_ok"] == 8 - counts["n_failed"] >= 6
        for name in HEADLINE:
            rate = a["rates"][name]
            if name != "args_valid_rate" or rate["n"]:  # no well-formed call: no population
                assert rate["n"] > 0, (arm, name)
                assert 0.0 <= rate["ci_low"] <= rate["p"] <= rate["ci_high"] <= 1.0, (arm, name)
                assert rate["ci_high"] > rate["ci_low"], (arm, name)
        assert sum(a["script_classes"].values()) >= a["rates"]["traditional_rate"]["n"] > 0
        assert sum(a["tool_outcomes"].values()) == a["n_rows"]
    assert set(quality["comparisons"][ARMS[1]]) >= set(HEADLINE)


def test_the_arms_differ_only_in_the_declared_system_prompt(run: Path) -> None:
    manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    assert set(manifest["config_diff"]) == {"workload.system"}
    labels = {arm: manifest["arms"][arm]["effective"]["workload.system"] for arm in ARMS}
    assert labels[ARMS[0]].startswith("stub sha256:")
    assert labels[ARMS[1]].startswith("full sha256:")
    # the template served is the example's file, not the GGUF's own: its text is what is hashed
    template = REPO / "examples" / "templates" / "qwen2.5-coder-tools-json.jinja"
    digest = hashlib.sha256(template.read_bytes()).hexdigest()
    assert {manifest["arms"][a]["effective"]["model.chat_template_sha256"] for a in ARMS} == {
        digest
    }


def test_a_real_reply_is_scored_a_correct_tool_call(run: Path) -> None:
    rows = {r["request_id"]: r for r in read_jsonl(run / "requests.jsonl").rows}
    scores = read_jsonl(run / "quality" / "scores.jsonl").rows
    correct = [s for s in scores if s["tool"]["outcome"] == "correct"]
    assert correct, [(s["arm"], s["prompt_id"], s["tool"]["outcome"]) for s in scores]
    reply = rows[correct[0]["request_id"]]
    assert reply["phase"] == "trial" and reply["outcome"] == "ok"
    assert reply["tool_calls"] and reply["tool_calls"][0]["name"] == correct[0]["tool"]["expected"]
    report = (run / "report.md").read_text(encoding="utf-8")
    assert "tool_accuracy" in report and "script class" in report and "tool outcome" in report


def test_the_shipped_template_is_the_models_own_with_bare_json_calls() -> None:
    """Only how an assistant's call is rendered differs from the model's own template (and so
    what llama-server parses); what the model is shown is the stock template's."""
    from gguf import GGUFReader

    from servelab.models import resolve_model

    field = GGUFReader(resolve_model(listed_model(MODEL)).path).fields["tokenizer.chat_template"]
    stock = bytes(field.parts[field.data[0]]).decode("utf-8")
    shipped = (REPO / "examples" / "templates" / "qwen2.5-coder-tools-json.jinja").read_text(
        encoding="utf-8"
    )
    body = shipped[shipped.index("-#}\n") + 4 :]  # after the provenance comment
    tagged = '\'\\n<tool_call>\\n{"name": "\' }}'
    assert tagged in stock and "'}\\n</tool_call>' }}" in stock
    assert body == stock.replace(tagged, '\'\\n{"name": "\' }}').replace(
        "'}\\n</tool_call>' }}", "'}' }}"
    )
