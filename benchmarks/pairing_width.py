"""What pairing by (round, prompt) buys: the width of the decode interval, paired or not.

Issue 12, item 2 (docs/statistics.md, "What pairing buys"). The same requests analysed three
ways, at a single look at 95 %, on the pooled decode rate (Σ tokens / Σ time):

- ``fixed``: ``compare_pairs(..., prompts="fixed")``, rounds resampled, the prompts as written;
- ``sampled``: ``compare_pairs(..., prompts="sampled")``, rounds then pairs within each round
  (the prompts stand for a larger traffic, so the spread of the effect across prompts counts);
- ``unpaired``: ``compare_unpaired`` on one Cell per block, each arm's blocks resampled on their
  own, as two separate runs are compared.

The width is ``ci_high / ci_low`` written as a percentage (``100 (hi / lo - 1)``): 10 % means
the interval spans a tenth of the ratio, whatever the ratio is.

``sim``: the machine model of tests/unit/test_paired_simulation.py with the prompt schedule of
benchmarks/time_to_verdict.py; medians over seeds for a few shapes and round counts.
``runs``: run directories (``servelab.store.read_run``), every candidate against its reference
arm on ``decode_tps`` at every concurrency level, pairs from
``servelab.analysis.comparisons.pairs_of``; without arguments, interleaved runs found under
/tmp and the repository's release fixtures.

Run:
  .venv/bin/python benchmarks/pairing_width.py sim [--seeds 300]
  .venv/bin/python benchmarks/pairing_width.py runs [RUN_DIR ...]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

import time_to_verdict as ttv  # noqa: E402  (the model and its prompt schedule)

from servelab import (  # noqa: E402
    Cell,
    Pair,
    ServelabError,
    analyze,
    compare_pairs,
    compare_unpaired,
    pairs_of,
    read_run,
)

MODES = ("fixed", "sampled", "unpaired")
RESAMPLES = 2000
METRIC = "decode_tps"
Row = Mapping[str, Any]


def width_pct(c: Any) -> float:
    """Interval width of a servelab.stats.paired.PairedComparison, in % of its low end."""
    if c.ci_low is None or c.ci_high is None:
        return float("nan")
    return float(100 * (c.ci_high / c.ci_low - 1))


def sim_widths(
    seed: int,
    shape: ttv.Shape,
    machine: ttv.sim.Machine,
    n_rounds: int,
    effect: NDArray[np.float64],
) -> list[float]:
    rng = np.random.default_rng(seed)
    d = ttv.draw(rng, shape, machine, n_rounds, effect=effect)
    return [
        width_pct(ttv.compare(d, n_rounds, True, rng, 0.95, prompts="fixed")),
        width_pct(ttv.compare(d, n_rounds, True, rng, 0.95, prompts="sampled")),
        width_pct(ttv.compare(d, n_rounds, False, rng, 0.95)),
    ]


def sim_table(seeds: int) -> None:
    machines = {
        "test model": ttv.sim.Machine(),
        "quiet": replace(ttv.sim.Machine(), slow_p=0.0, start_sd=0.02),
    }
    print("| machine | shape | rounds | effect | fixed | sampled | unpaired | unpaired / fixed |")
    print("|---|---|---|---|---|---|---|---|")
    for mname, machine in machines.items():
        for shape in (ttv.Shape(10, 10), ttv.Shape(5, 5)):
            for n_rounds in (4, 8):
                for label, eff in (
                    ("none", np.ones(shape.prompts)),
                    ("2 of W at 0.45x", _two_slow(shape.prompts)),
                ):
                    w = np.array(
                        [
                            sim_widths(70_000 + s, shape, machine, n_rounds, eff)
                            for s in range(seeds)
                        ]
                    )
                    med = np.nanmedian(w, axis=0)
                    print(
                        f"| {mname} | {shape.label} | {n_rounds} | {label} | "
                        + " | ".join(f"{m:.1f} %" for m in med)
                        + f" | {med[2] / med[0]:.1f}x |",
                        flush=True,
                    )


def _two_slow(n_prompts: int) -> NDArray[np.float64]:
    eff = np.ones(n_prompts)
    eff[:2] = 0.45
    return eff


# ------------------------------------------------------------------------------ real runs


def found_runs() -> list[Path]:
    """Interleaved experiment run directories under /tmp and the release fixtures."""
    roots = [Path("/tmp"), ROOT.parent / "tests" / "fixtures" / "runs"]
    seen: list[Path] = []
    for root in roots:
        for m in sorted(root.glob("**/manifest.json")):
            if m.parent.joinpath("requests.jsonl").exists() and "site-packages" not in str(m):
                seen.append(m.parent)
    return seen


def ok_trials(rows: Sequence[Row], arm: str, level: int) -> list[Row]:
    """The rows the statistics take: successful trial requests of one arm and level."""
    return [
        r
        for r in rows
        if r.get("phase") == "trial"
        and r.get("outcome") == "ok"
        and r.get("arm") == arm
        and int(r.get("concurrency") or 1) == level
    ]


def blocks(pairs: Sequence[Pair], arm: str) -> list[Cell]:
    """One Cell per round of one arm from its paired requests (the unpaired analysis)."""
    out: dict[int, tuple[list[float], list[float]]] = {}
    for p in pairs:
        cell = p.baseline if arm == "baseline" else p.candidate
        values, weights = out.setdefault(p.round, ([], []))
        values.extend(cell.values)
        weights.extend(cell.weights)
    return [Cell(tuple(v), tuple(w)) for v, w in out.values()]


def run_rows(run_dir: Path) -> Iterable[tuple[str, list[float]]]:
    """(label, widths of fixed / sampled / unpaired) per comparison of an interleaved run."""
    try:
        run = read_run(run_dir)
    except (ServelabError, OSError, ValueError):
        return
    if not run.rows or getattr(run.manifest, "kind", "") != "experiment":
        return
    summary = analyze(run.manifest, run.rows, n_resamples=200, decision=[(METRIC, "pooled")])
    if not summary.interleaved:
        return
    rng = np.random.default_rng(0)
    for comp in summary.comparisons:
        level = comp.concurrency
        pairs = pairs_of(
            ok_trials(run.rows, comp.baseline, level),
            ok_trials(run.rows, comp.candidate, level),
            METRIC,
        )
        n_rounds = len({p.round for p in pairs})
        if n_rounds < 2:
            continue
        modes: tuple[Literal["fixed", "sampled"], ...] = ("fixed", "sampled")
        widths = [
            width_pct(compare_pairs(pairs, "pooled", rng=rng, n_resamples=RESAMPLES, prompts=mode))
            for mode in modes
        ]
        widths.append(
            width_pct(
                compare_unpaired(
                    blocks(pairs, "baseline"),
                    blocks(pairs, "candidate"),
                    "pooled",
                    rng=rng,
                    n_resamples=RESAMPLES,
                )
            )
        )
        label = f"{comp.candidate} vs {comp.baseline}" + (f" c={level}" if level != 1 else "")
        yield (f"{label} ({n_rounds} rounds, {len(pairs)} pairs, pooled {comp.ratio:.3f})", widths)


def runs_table(dirs: Sequence[Path]) -> None:
    print("| run | comparison | fixed | sampled | unpaired | unpaired / fixed |")
    print("|---|---|---|---|---|---|")
    for d in dirs:
        for label, w in run_rows(d):
            print(
                f"| {d} | {label} | "
                + " | ".join(f"{x:.1f} %" for x in w)
                + f" | {w[2] / w[0]:.1f}x |",
                flush=True,
            )


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="part", required=True)
    s = sub.add_parser("sim")
    s.add_argument("--seeds", type=int, default=300)
    r = sub.add_parser("runs")
    r.add_argument("dirs", nargs="*", type=Path)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    if args.part == "sim":
        print(f"median 95 % interval width of the pooled decode ratio, {args.seeds} seeds")
        sim_table(args.seeds)
    else:
        runs_table(args.dirs or found_runs())
    print(f"{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
