"""Named presets for known per-request layouts, so nobody retypes a mapping.

Owns each preset's mapping, arm source, rows key, the companion file that names each
configuration's reference arm, and the quirks its authors documented (kept as notes so the
report warns). A preset is only data: the generic table importer applies it, ``--map`` entries
given beside it replace the preset's mapping of the same target, and ``--references`` replaces
its companion file.
"""

from __future__ import annotations

from dataclasses import dataclass

from servelab.errors import UsageError
from servelab.importers.common import FieldMap, note, parse_map


@dataclass(frozen=True, slots=True)
class Preset:
    name: str
    description: str
    maps: tuple[str, ...]
    arm_column: str | None = None
    rows_key: str | None = None
    notes: tuple[tuple[str, str], ...] = ()
    n_out_usage: bool = True  # the n_out column is the server's own count (usage / timings)
    # (file name, config column, reference column) of a CSV beside the source that names each
    # configuration's reference arm; used when present (``--references`` replaces it)
    references: tuple[str, str, str] | None = None
    # the workload whose tools replies are scored against (``--workload`` replaces it), and the
    # language the prompts ask for (``--lang`` replaces it)
    workload: str | None = None
    lang: str | None = None

    def field_maps(self) -> tuple[FieldMap, ...]:
        return tuple(parse_map(m) for m in self.maps)

    def note_dicts(self) -> list[dict[str, str]]:
        return [note(kind, detail) for kind, detail in self.notes]


QWEN36_LLAMACPP_SUMMARY = Preset(
    name="qwen36-llamacpp-summary",
    description=(
        "thc1006/qwen3.6-speculative-decoding-rtx3090 analysis/summary.csv: one row per "
        "llama-server request, the configuration in column `config`"
    ),
    maps=(
        "prompt=prompt_id",
        "tok_s=decode_tps",
        "wall_ms=e2e_s:ms",
        "predicted_n=n_out",
        "prompt_n=n_in",
        "draft_n=draft_n",
        "draft_acc=draft_accepted",
    ),
    arm_column="config",
    references=("summary_by_config.csv", "config", "reference"),
    notes=(
        (
            "decode_definition",
            "decode_tps is llama-server's predicted_n / predicted_ms (all n tokens over the "
            "decode time), not servelab's (n_out - 1) / (e2e_s - ttft_s); ttft_s is not recorded",
        ),
        (
            "source_summary",
            "each configuration is 10 prompts run once (no repetitions), one configuration "
            "after another: every row is block 0 (its prompt's first run), so each arm is one "
            "round whose rows pair with its reference's by prompt_id; the companion "
            "summary_by_config.csv names each configuration's reference (the 1000-token arms "
            "compare with baseline-1000tok, the others with baseline)",
        ),
    ),
)

QWEN36_VLLM_V5 = Preset(
    name="qwen36-vllm-v5",
    description=(
        "thc1006/qwen3.6-vllm-2x3090 v5_2026_05_17/data/results_*.json: streaming chat "
        "completions, rows under `rows`, one file per model (arm = file stem)"
    ),
    maps=(
        "pid=prompt_id",
        "trial=block",
        "ttft_ms=ttft_s:ms",
        "e2e_ms=e2e_s:ms",
        "prompt_tok=n_in",
        "out_tok=n_out",
        "toks_per_sec=e2e_tps",
        "text=text",
        "tool_calls=tool_calls",
        "prompt=prompt_text",
        "expected_tool=expected_tool",
        "error?=error",
    ),
    rows_key="rows",
    workload="voice-agent",
    lang="zh-TW",
    notes=(
        (
            "no_warmup",
            "the v5 harness sends no warm-up request: trial 1 of the first prompt of each model "
            "is a cold start (rerun the import with --warmup-first 1 to leave it out)",
        ),
        (
            "rate_includes_prefill",
            "the source's toks_per_sec is out_tok / e2e (prefill included): imported as e2e_tps; "
            "decode_tps is derived as (n_out - 1) / (e2e_s - ttft_s)",
        ),
        (
            "ttft_definition",
            "TTFT is to the first content token or the first tool-call name, whichever comes "
            "first: tool-call rows time the tool-call name (ttft_tool_s), text rows the first "
            "text token (ttft_content_s); compare them apart",
        ),
        (
            "source_summary",
            "prompts run in order, each prompt's 3 trials back to back, concurrency 1, "
            "temperature 0.2, max_tokens 200",
        ),
        (
            "expectations",
            "each row names its prompt's expected tool (null: small talk that must not call "
            "one) but no argument values: arguments are checked against the workload's tool "
            "schemas (voice-agent: reachy-mini-agent @ a909075, or --workload), and against "
            "argument expectations only where a workload prompt has the same id or text; the "
            "harness itself offered 4 of those tools, its move_head with an extra duration "
            "argument (bench/v5_voice_bench.py). tool_calls arguments are JSON text, as the "
            "stream sent them; the scorer parses them",
        ),
    ),
)

QWEN36_VLLM_V4 = Preset(
    name="qwen36-vllm-v4",
    description=(
        "thc1006/qwen3.6-vllm-2x3090 v4_2026_05_07/data/phase_*.json (bench_runner.py): "
        "rows under `measurements`, arm = file stem (or --arm-column config_id)"
    ),
    maps=(
        "prompt_id=prompt_id",
        "trial=block",
        "wall_ts=t_send_unix_s",
        "ct=n_out",
        "ttft_ms=ttft_s:ms",
        "tpot_ms=tpot_s:ms",
        "elapsed_s=e2e_s",
        "tok_s=e2e_tps",
        "spec.draft_tokens=draft_n",
        "spec.accepted=draft_accepted",
        "error?=error",
    ),
    rows_key="measurements",
    notes=(
        (
            "rate_includes_prefill",
            "the source's tok_s is ct / elapsed_s (prefill included): imported as e2e_tps; "
            "its tpot_ms is (elapsed - ttft) / (ct - 1), so decode_tps = 1 / tpot_s",
        ),
        (
            "ttft_definition",
            "ttft_ms is to the first content token only (tool-call deltas are not timed); "
            "a reply with no content records ttft = elapsed",
        ),
        (
            "reconstructed",
            "draft_n / draft_accepted are vLLM /metrics counter deltas taken around each "
            "request (requests ran one at a time), not per-request engine reports",
        ),
        (
            "source_summary",
            "one unmeasured warm-up ('Hi', 20 tokens) before the trials; 5 prompts x N trials, "
            "each trial runs all prompts in order; concurrency 1",
        ),
    ),
)

PRESETS = {p.name: p for p in (QWEN36_LLAMACPP_SUMMARY, QWEN36_VLLM_V5, QWEN36_VLLM_V4)}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise UsageError(f"--preset {name!r}: unknown; presets: {', '.join(PRESETS)}") from None


def merge_maps(base: tuple[FieldMap, ...], extra: tuple[FieldMap, ...]) -> tuple[FieldMap, ...]:
    """The preset's mapping with the user's entries replacing any of the same target."""
    targets = {fm.target for fm in extra}
    return tuple(fm for fm in base if fm.target not in targets) + extra
