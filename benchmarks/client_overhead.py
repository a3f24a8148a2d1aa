"""Does servelab slow down the engine it measures?

One llama-server; rounds alternate (A B B A ...) between two drivers sending the same request
(same prompt, max_tokens, EOS ignored):
  A: a minimal single-request client (stdlib http.client, blocking reads, nothing else)
  B: servelab's own streaming client (asyncio scheduling, httpx reader thread, SSE parser,
     assembler, metrics)
The engine's own decode rate (timings.predicted_per_second, measured inside llama-server) is
compared: target median(B) / median(A) >= 0.99. Also reported: servelab's CPU seconds per
request (process CPU time of this Python process while B runs).
Run: .venv/bin/python benchmarks/client_overhead.py [--rounds 12] [--max-tokens 128]

Unlike the other benchmarks this one reaches below the public API (``servelab.__all__``): it
times the client's own pieces (``stream_request`` in a ``StreamSession``) one request at a
time, which no public entry point exposes, so it imports them from their modules.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from servelab import EngineConfig
from servelab.client.clock import MonotonicClock
from servelab.client.payload import Sampling, build_payload
from servelab.client.session import StreamSession
from servelab.client.stream import HttpRequest, stream_request
from servelab.engines.base import Engine
from servelab.engines.registry import create_engine
from servelab.metrics import derive

MESSAGES = [{"role": "user", "content": "Tell me a long story about a lighthouse keeper."}]


def minimal_client(engine: Engine, body: dict[str, Any]) -> tuple[float, float]:
    """POST, read the stream line by line; return the server's decode rate and TTFT - prompt_ms."""
    host, port = engine.base_url.removeprefix("http://").split(":")
    payload = json.dumps(body)
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection(host, int(port), timeout=300)
    conn.request("POST", "/v1/chat/completions", payload, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    last_timings: dict[str, Any] = {}
    ttft: float | None = None
    for line in resp:
        if ttft is None and b'"content":"' in line:
            ttft = time.perf_counter() - t0
        if line.startswith(b"data: {") and b'"timings"' in line:
            last_timings = json.loads(line[6:])["timings"]
    conn.close()
    assert ttft is not None
    return float(last_timings["predicted_per_second"]), ttft - last_timings["prompt_ms"] / 1e3


async def servelab_client(
    client: StreamSession, engine: Engine, body: dict[str, Any]
) -> tuple[float, float, float]:
    """One request through servelab's client, in a session kept open as `servelab bench` does."""
    cpu0 = time.process_time()
    obs = await stream_request(client, HttpRequest(engine.chat_url(), body), MonotonicClock())
    cpu = time.process_time() - cpu0
    m = derive(obs)
    tps, ttft, prompt_s = m["server_decode_tps"], m["ttft_s"], m["server_prompt_s"]
    assert tps is not None and ttft is not None and prompt_s is not None, "no timings in reply"
    return tps, cpu, ttft - prompt_s


async def interleaved(
    engine: Engine, rounds: int, minimal_body: dict[str, Any], servelab_body: dict[str, Any]
) -> dict[str, list[float]]:
    """Rounds of A B A2 (reversed every other round); A2 is the minimal client again, so
    A2 / A shows the noise floor of this machine beside the figure that matters."""
    keys = ("a", "a2", "b", "gap_a", "gap_b", "cpu")
    res: dict[str, list[float]] = {k: [] for k in keys}
    with StreamSession(1, keepalive=False) as client:
        for i in range(rounds):
            order = ("A", "B", "A2") if i % 2 == 0 else ("A2", "B", "A")
            for who in order:
                if who in ("A", "A2"):  # blocking on purpose: the loop has nothing else to do
                    tps, gap = minimal_client(engine, minimal_body)
                    res[who.lower()].append(tps)
                    if who == "A":
                        res["gap_a"].append(gap)
                else:
                    tps, cpu, gap = await servelab_client(client, engine, servelab_body)
                    res["b"].append(tps)
                    res["cpu"].append(cpu)
                    res["gap_b"].append(gap)
    return res


def bootstrap_median_ci(x: np.ndarray, n: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of the median over rounds (seeded)."""
    rng = np.random.default_rng(seed)
    medians = np.median(rng.choice(x, size=(n, x.size), replace=True), axis=1)
    low, high = np.percentile(medians, [2.5, 97.5])
    return float(low), float(high)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--chunk-timings", action="store_true", help="servelab's exact-ITL mode")
    args = ap.parse_args()
    sampling = Sampling(max_tokens=args.max_tokens, ignore_eos=True)
    with tempfile.TemporaryDirectory() as tmp:
        engine = create_engine(
            EngineConfig(model=args.model, chunk_timings=args.chunk_timings),
            Path(tmp) / "engine.log",
        )
        engine.launch()
        try:
            engine.wait_healthy(120)
            minimal_body = build_payload(model="m", sampling=sampling, messages=MESSAGES,
                                         extras={"cache_prompt": False})[1]  # fmt: skip
            servelab_body = build_payload(model="m", sampling=sampling, messages=MESSAGES,
                                          extras=engine.request_extras())[1]  # fmt: skip
            for _ in range(2):  # warm-up, not measured
                minimal_client(engine, minimal_body)
            res = asyncio.run(interleaved(engine, args.rounds, minimal_body, servelab_body))
            a, a2, b, gap_a, gap_b, cpu = (
                res[k] for k in ("a", "a2", "b", "gap_a", "gap_b", "cpu")
            )
        finally:
            engine.stop()
    # Paired per round: B against the mean of the two minimal runs around it, so slow drift of
    # a shared machine cancels; A2 / A is the same statistic for two identical drivers.
    per_round = np.array([bi / ((ai + a2i) / 2) for ai, a2i, bi in zip(a, a2, b, strict=True)])
    noise_rounds = np.array([a2i / ai for ai, a2i in zip(a, a2, strict=True)])
    ratio, noise = float(np.median(per_round)), float(np.median(noise_rounds))
    ci_low, ci_high = bootstrap_median_ci(per_round)
    out = {
        "rounds": args.rounds,
        "max_tokens": args.max_tokens,
        "engine_decode_tps_minimal_client_median": statistics.median(a),
        "engine_decode_tps_servelab_median": statistics.median(b),
        "ratio_servelab_over_minimal_paired_median": ratio,
        "ratio_95ci_bootstrap": [ci_low, ci_high],
        "noise_floor_minimal_over_minimal": noise,
        "noise_floor_95ci_bootstrap": list(bootstrap_median_ci(noise_rounds)),
        "chunk_timings": engine.config.chunk_timings,
        "ttft_minus_prompt_ms_minimal_median": statistics.median(gap_a) * 1e3,
        "ttft_minus_prompt_ms_servelab_median": statistics.median(gap_b) * 1e3,
        "servelab_cpu_s_per_request_median": statistics.median(cpu),
        "servelab_cpu_s_per_output_token_median": statistics.median(cpu) / args.max_tokens,
    }
    print(json.dumps(out, indent=2))
    print(f"ratio {ratio:.4f}: {'PASS' if ratio >= 0.99 else 'FAIL'} (>= 0.99)")


if __name__ == "__main__":
    main()
