"""Does servelab's client measure what the engine itself measures?

For N requests at concurrency 1 on the default model (max_tokens fixed, EOS ignored so every
request decodes the same length), compare per request:
  - client decode_tps / server timings.predicted_per_second (both count n-1 tokens over the
    first-token -> last-token interval; target: median within 1 % of 1)
  - client ttft_s - server prompt_ms (transport + request parsing + templating; target: a few ms)
Run: .venv/bin/python benchmarks/client_accuracy.py [-n 20] [--max-tokens 128]
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import tempfile
from pathlib import Path

from servelab import BenchConfig, EngineConfig, read_run, run_bench


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=20)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--workload", default="chat-tools")
    ap.add_argument("--flags", default="", help='extra llama-server flags, e.g. "--cache-ram 0"')
    args = ap.parse_args()
    cfg = BenchConfig(
        engine=EngineConfig(model=args.model, flags=tuple(shlex.split(args.flags))),
        workload=args.workload, requests=args.n, warmup=2, max_tokens=args.max_tokens,
        ignore_eos=True, name="client-accuracy",
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        result = run_bench(cfg, out=Path(tmp) / "run")
        run = read_run(result.run_dir)
        rows = [r for r in run.rows if r["phase"] == "trial" and r["outcome"] == "ok"]
        failed = [(r["outcome"], r["error"]) for r in run.rows if r["outcome"] != "ok"]
    ratios = [r["decode_tps"] / r["server_decode_tps"] for r in rows]
    gaps_ms = [(r["ttft_s"] - r["server_prompt_s"]) * 1e3 for r in rows]
    wait_us = [r["wait_s"] * 1e6 for r in rows]
    out = {
        "workload": args.workload,
        "flags": args.flags,
        "requests_ok": len(rows),
        "requests_failed": failed,
        "max_tokens": args.max_tokens,
        "decode_ratio_median": statistics.median(ratios),
        "decode_ratio_min": min(ratios),
        "decode_ratio_max": max(ratios),
        "ttft_minus_prompt_ms_median": statistics.median(gaps_ms),
        "ttft_minus_prompt_ms_max": max(gaps_ms),
        "wait_us_median": statistics.median(wait_us),
        "client_decode_tps_median": statistics.median(r["decode_tps"] for r in rows),
        "server_decode_tps_median": statistics.median(r["server_decode_tps"] for r in rows),
    }
    print(json.dumps(out, indent=2))
    ok = abs(out["decode_ratio_median"] - 1) <= 0.01
    verdict = "PASS" if ok else "FAIL"
    print(f"decode ratio median {out['decode_ratio_median']:.4f}: {verdict} (|x-1| <= 1 %)")
    print(f"ttft - prompt_ms median {out['ttft_minus_prompt_ms_median']:.2f} ms")


if __name__ == "__main__":
    main()
