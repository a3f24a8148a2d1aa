"""How much time and memory do `servelab import` and `servelab report` take on a large import?

Writes a CSV of about a million request rows (about 50 MB: two arms, 100 prompts, 5 trials,
ttft/e2e in ms, token counts) into a temporary directory, then runs `servelab import` and
`servelab report` on it, each as a child process, and prints each one's wall time and peak
resident memory (from the child's own rusage, ``os.wait4``). Target: both under 1 GB.

Run: .venv/bin/python benchmarks/large_import.py [--rows 1090000] [--keep DIR]
(``--pythonpath DIR`` runs another copy of servelab's source, e.g. to measure a baseline.)
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MAPS = (
    "prompt=prompt_id",
    "trial=block",
    "ttft_ms=ttft_s",
    "e2e_ms=e2e_s",
    "out_tok=n_out",
    "prompt_tok=n_in",
)


def write_csv(path: Path, n_rows: int, seed: int = 0) -> None:
    """Two arms (the candidate about 10 % faster), 100 prompts, lognormal latencies."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.write("config,prompt,trial,ttft_ms,e2e_ms,out_tok,prompt_tok\n")
        for i in range(n_rows):
            arm = "baseline" if i % 2 == 0 else "candidate"
            speed = 1.0 if arm == "baseline" else 0.9
            ttft = rng.lognormvariate(4.5, 0.3) * speed
            n_out = rng.randint(50, 400)
            e2e = ttft + n_out * rng.lognormvariate(2.0, 0.1) * speed
            fh.write(
                f"{arm},p{(i // 2) % 100},{i // 200 % 5},{ttft:.3f},{e2e:.3f},{n_out},"
                f"{rng.randint(20, 400)}\n"
            )


def run_child(args: list[str], env: dict[str, str]) -> tuple[float, float, int, str]:
    """Wall seconds, peak RSS in MiB, exit status and the tail of stderr of one child."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        tail = err.read().decode(errors="replace")[-400:]
    return wall, usage.ru_maxrss / 1024, proc.returncode, tail  # ru_maxrss is KiB on Linux


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_090_000)
    parser.add_argument("--keep", type=Path, help="work in this directory and keep it")
    parser.add_argument("--pythonpath", help="put this directory first on PYTHONPATH")
    opts = parser.parse_args()
    env = dict(os.environ)
    if opts.pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [opts.pythonpath, env.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory() as tmp:
        work = opts.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        csv_path, run = work / "large.csv", work / "run"
        start = time.perf_counter()
        write_csv(csv_path, opts.rows)
        size_mb = csv_path.stat().st_size / 1e6
        print(f"wrote {opts.rows} rows, {size_mb:.1f} MB in {time.perf_counter() - start:.1f} s")
        cli = [sys.executable, "-m", "servelab"]
        maps = [arg for m in MAPS for arg in ("--map", m)]
        steps = {
            "import": [*cli, "import", str(csv_path), "--arm-column", "config", *maps,
                       "--out", str(run)],
            "report": [*cli, "report", str(run)],
        }  # fmt: skip
        failed = 0
        for name, args in steps.items():
            wall, rss_mib, code, tail = run_child(args, env)
            print(f"{name:7s} wall {wall:7.1f} s   peak RSS {rss_mib:7.0f} MiB   exit {code}")
            if code:
                print(tail, file=sys.stderr)
                failed += 1
                break
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
