"""How many requests per arm does it take to decide a true 10 % effect at 95 %?

Issue 12, item 4 (docs/statistics.md, "Time to verdict"). Two parts:

``sim``: the machine model of tests/unit/test_paired_simulation.py (imported from there, so the
numbers describe the same model whose false-verdict shares the test asserts), a candidate 10 %
faster on every prompt, sequential stopping as the runner does it (a look after every round from
``--min-rounds`` to ``--max-rounds``, O'Brien-Fleming spending, stop at the first decided look).
Workload shapes as servelab runs them: a workload of W prompts, ``requests_per_block`` (rpb)
requests per block, request i of round b asks prompt (b * rpb + i) mod W
(servelab.spec.schedule.prompt_index); the candidate's block asks the same prompts. Paired:
``compare_pairs`` over (round, prompt) pairs (pooled decode rate, prompts fixed); unpaired:
``compare_unpaired`` on the same requests, one Cell per block. Requests per arm at the verdict
= rounds at the stop x rpb. A run that ends undecided has not reached a verdict: the median
(p90) is printed as "> max" when more than half (a tenth) of the runs ended undecided.

``engine``: a real ``servelab run`` on the embedded llama.cpp engine of two arms whose decode
rates differ by about 10 % on this CPU (``--arms``), with sequential stopping; prints the
requests per arm at the verdict from the run's summary.json. Runs under
``flock /tmp/servelab-engine.lock`` (one engine at a time on a shared machine).

Run:
  .venv/bin/python benchmarks/time_to_verdict.py sim [--seeds 300]
  .venv/bin/python benchmarks/time_to_verdict.py engine [--out DIR] [--max-rounds 10]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "unit"))

import test_paired_simulation as sim  # noqa: E402  (the test's machine model)

from servelab import (  # noqa: E402
    Cell,
    Pair,
    compare_pairs,
    compare_unpaired,
    decide_paired,
    plan_looks,
)

EFFECT = 1.10
RESAMPLES = 400
SPENDINGS = ("obrien_fleming", "pocock")  # servelab.stats.sequential


@dataclass(frozen=True, slots=True)
class Shape:
    """A workload of ``prompts`` prompts, ``per_block`` requests per block."""

    prompts: int
    per_block: int

    @property
    def label(self) -> str:
        return f"W={self.prompts}, rpb={self.per_block}"


SHAPES = (Shape(5, 5), Shape(8, 8), Shape(10, 10), Shape(10, 5), Shape(10, 3), Shape(10, 2))


def parse_shapes(text: str) -> tuple[Shape, ...]:
    """ "10x5,5x5": W x rpb."""
    return tuple(Shape(*map(int, part.split("x"))) for part in text.split(","))


@dataclass(frozen=True, slots=True)
class Draw:
    """One experiment's requests: rates (rounds, rpb, arm) and the prompt of each slot."""

    rates: NDArray[np.float64]
    prompt: NDArray[np.intp]  # (rounds, rpb)
    tokens: NDArray[np.float64]  # per prompt


def draw(
    rng: np.random.Generator,
    shape: Shape,
    machine: sim.Machine,
    n_rounds: int,
    effect: float | NDArray[np.float64] = EFFECT,
    workload_seed: int = 12,
) -> Draw:
    """The test's model with servelab's prompt schedule (module docstring)."""
    work = sim.Workload.make(shape.prompts, workload_seed)
    prompt = (np.arange(n_rounds)[:, None] * shape.per_block + np.arange(shape.per_block)) % (
        shape.prompts
    )
    drift = rng.normal(0.0, machine.drift_sd, (n_rounds, 1, 1))
    start = rng.normal(0.0, machine.start_sd, (n_rounds, 1, 2))
    slow = np.log(2) * (rng.random((n_rounds, 1, 2)) < machine.slow_p)
    noise = rng.normal(0.0, machine.noise_sd, (n_rounds, shape.per_block, 2))
    level = np.stack([work.speed, work.speed * effect], axis=-1)[prompt]
    return Draw(level * np.exp(drift + start - slow + noise), prompt, work.tokens)


def pairs(d: Draw, n: int) -> list[Pair]:
    """(round, prompt) pairs of the first n rounds; a prompt asked twice in a block: 2 values."""
    out = []
    for r in range(n):
        for p in dict.fromkeys(d.prompt[r].tolist()):
            slots = np.flatnonzero(d.prompt[r] == p)
            w = (float(d.tokens[p]),) * slots.size
            out.append(
                Pair(
                    r,
                    f"p{p}",
                    Cell(tuple(d.rates[r, slots, 0].tolist()), w),
                    Cell(tuple(d.rates[r, slots, 1].tolist()), w),
                )
            )
    return out


def blocks(d: Draw, n: int, arm: int) -> list[Cell]:
    """One Cell per block of one arm (the unpaired analysis)."""
    return [
        Cell(tuple(d.rates[r, :, arm].tolist()), tuple(d.tokens[d.prompt[r]].tolist()))
        for r in range(n)
    ]


def compare(
    d: Draw,
    n: int,
    paired: bool,
    rng: np.random.Generator,
    confidence: float,
    prompts: Literal["fixed", "sampled"] = "fixed",
) -> Any:  # a servelab.stats.paired.PairedComparison
    if paired:
        return compare_pairs(
            pairs(d, n),
            "pooled",
            rng=rng,
            confidence=confidence,
            n_resamples=RESAMPLES,
            prompts=prompts,
        )
    return compare_unpaired(
        blocks(d, n, 0),
        blocks(d, n, 1),
        "pooled",
        rng=rng,
        confidence=confidence,
        n_resamples=RESAMPLES,
    )


def rounds_to_verdict(
    seed: int,
    shape: Shape,
    machine: sim.Machine,
    paired: bool,
    min_rounds: int,
    max_rounds: int,
    spending: str = "obrien_fleming",
) -> tuple[str, int]:
    """The verdict and the rounds done when a sequential run stopped."""
    rng = np.random.default_rng(seed)
    d = draw(rng, shape, machine, max_rounds)
    plan = plan_looks(min_rounds, max_rounds, spending=spending)  # type: ignore[arg-type]
    verdict = "inconclusive"
    for n in plan.looks:
        c = compare(d, n, paired, rng, plan.confidence_at(n))
        verdict = decide_paired(c, lower_is_better=False, min_effect=sim.MIN_EFFECT).verdict
        if verdict != "inconclusive":
            return verdict, n
    return verdict, max_rounds


def quantile_or_more(requests: Sequence[float], q: float, cap: int) -> str:
    """The q-quantile of requests to a right verdict (undecided runs = never), or "> cap"."""
    ranked = sorted(requests)
    value = ranked[max(math.ceil(q * len(ranked)) - 1, 0)]  # nearest rank
    return f"> {cap}" if not math.isfinite(value) else f"{value:.0f}"


def sim_table(
    seeds: int, shapes: Sequence[Shape], min_rounds: int, budget: int, spending: str
) -> str:
    machines = {
        "test model": sim.Machine(),
        "quiet (no slow blocks, start sd 0.02)": replace(sim.Machine(), slow_p=0.0, start_sd=0.02),
    }
    lines = [
        "| machine | shape | rounds | analysis | better | median req/arm | p90 req/arm | wrong |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mname, machine in machines.items():
        for shape in shapes:
            max_rounds = max(budget // shape.per_block, min_rounds + 1)
            for paired in (True, False):
                res = [
                    rounds_to_verdict(
                        50_000 + s, shape, machine, paired, min_rounds, max_rounds, spending
                    )
                    for s in range(seeds)
                ]
                req = [n * shape.per_block if v == "better" else np.inf for v, n in res]
                cap = max_rounds * shape.per_block
                better = sum(v == "better" for v, _ in res) / seeds
                wrong = sum(v in ("worse", "no_difference") for v, _ in res) / seeds
                lines.append(
                    f"| {mname} | {shape.label} | {min_rounds}..{max_rounds} | "
                    f"{'paired' if paired else 'unpaired'} | "
                    f"{100 * better:.0f} % | {quantile_or_more(req, 0.5, cap)} | "
                    f"{quantile_or_more(req, 0.9, cap)} | {100 * wrong:.1f} % |"
                )
                print(lines[-1], flush=True)
    return "\n".join(lines)


# ------------------------------------------------------------------------------ engine

ENGINE_SPEC = """\
name: time-to-verdict
description: two arms about 10 % apart in decode rate; requests per arm to a verdict
base:
  engine:
    model: {model}
    flags: {flags}
  workload: {workload}
  max_tokens: {max_tokens}
  length_matched: true
arms:
{arms}
baseline: {baseline}
blocks: {min_rounds}
requests_per_block: {per_block}
warmup: 1
stop:
  max_blocks: {max_rounds}
  min_effect: 0.03
metrics: {{decode_tps: pooled}}
kv_probe: false
"""


def engine_spec(args: argparse.Namespace) -> str:
    arms = json.loads(args.arms)
    lines = "\n".join(f"  {name}: {json.dumps(over)}" for name, over in arms.items())
    return ENGINE_SPEC.format(
        model=args.model,
        flags=json.dumps(args.flags.split()),
        workload=args.workload,
        max_tokens=args.max_tokens,
        arms=lines,
        baseline=next(iter(arms)),
        min_rounds=args.min_rounds,
        per_block=args.per_block,
        max_rounds=args.max_rounds,
    )


def engine_report(out: Path) -> dict[str, Any]:
    """Requests per arm, rounds, the verdict and the ratio from a finished run directory."""
    summary = json.loads((out / "summary.json").read_text())
    rows = [json.loads(x) for x in (out / "requests.jsonl").read_text().splitlines() if x]
    trials: dict[str, int] = {}
    for r in rows:
        if r.get("phase") == "trial":
            trials[r["arm"]] = trials.get(r["arm"], 0) + 1
    comps = [c for c in summary["comparisons"] if c["metric"] == "decode_tps"]
    return {
        "requests_per_arm": trials,
        "stopping": summary.get("stopping"),
        "comparisons": [
            {
                k: c.get(k)
                for k in (
                    "candidate",
                    "statistic",
                    "verdict",
                    "ratio",
                    "ci_low",
                    "ci_high",
                    "ratio_median",
                    "method",
                    "n_pairs",
                    "heterogeneity",
                    "summary",
                )
            }
            for c in comps
        ],
    }


def run_engine(args: argparse.Namespace) -> None:
    out = Path(args.out or tempfile.mkdtemp(prefix="ttv-")) / "run"
    spec = out.parent / "spec.yaml"
    spec.parent.mkdir(parents=True, exist_ok=True)
    spec.write_text(engine_spec(args))
    print(spec.read_text())
    cmd = [
        "flock",
        "/tmp/servelab-engine.lock",
        str(ROOT / ".venv/bin/servelab"),
        "run",
        str(spec),
        "--out",
        str(out),
        *(["--force"] if args.force else []),
    ]
    print("$", " ".join(cmd), flush=True)
    t0 = time.monotonic()
    rc = subprocess.run(cmd, check=False).returncode
    print(f"exit {rc} after {time.monotonic() - t0:.0f} s")
    print(json.dumps(engine_report(out), indent=2))


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="part", required=True)
    s = sub.add_parser("sim")
    s.add_argument("--seeds", type=int, default=300)
    s.add_argument("--min-rounds", type=int, default=3)
    s.add_argument(
        "--budget", type=int, default=60, help="max requests per arm: max rounds = budget // rpb"
    )
    s.add_argument(
        "--shapes",
        default=",".join(f"{x.prompts}x{x.per_block}" for x in SHAPES),
        help="W x rpb, comma-separated",
    )
    s.add_argument("--spending", default="obrien_fleming", choices=SPENDINGS)
    e = sub.add_parser("engine")
    e.add_argument("--out", help="directory for spec.yaml and the run directory")
    # KV cache q4_0 decodes ~8 % slower than f16 on this CPU (llama-bench tg64 at depth 200,
    # 4 interleaved rounds: 91.5 vs 99 tok/s); quantised V caches need flash attention.
    e.add_argument(
        "--arms",
        default='{"f16": {"kv": "f16"}, "q4_0": {"kv": "q4_0"}}',
        help="JSON: arm -> overrides; the first is the baseline",
    )
    e.add_argument("--flags", default="--cache-ram 0 --flash-attn on", help="base flags")
    e.add_argument("--model", default="smollm2-135m-instruct")
    e.add_argument("--workload", default="chat-tools")
    e.add_argument("--max-tokens", type=int, default=64)
    e.add_argument("--per-block", type=int, default=5)
    e.add_argument("--min-rounds", type=int, default=3)
    e.add_argument("--max-rounds", type=int, default=10)
    e.add_argument("--force", action="store_true", help="pass --force (busy shared machine)")
    args = ap.parse_args(argv)
    if args.part == "sim":
        t0 = time.perf_counter()
        print(
            f"true effect {EFFECT:.2f}x on every prompt, {args.seeds} seeds, looks from "
            f"{args.min_rounds} rounds to {args.budget} requests per arm, {args.spending} "
            f"spending, {RESAMPLES} resamples"
        )
        sim_table(
            args.seeds, parse_shapes(args.shapes), args.min_rounds, args.budget, args.spending
        )
        print(f"{time.perf_counter() - t0:.0f} s")
    else:
        run_engine(args)


if __name__ == "__main__":
    main()
