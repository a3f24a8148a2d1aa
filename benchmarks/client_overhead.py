"""Does servelab slow down the engine it measures?

One llama-server; rounds alternate (A B B A ...) between two drivers sending the same request
(same prompt, max_tokens, EOS ignored):
  A: a minimal single-request client (stdlib http.client, blocking reads, nothing else)
  B: servelab's own streaming client (asyncio + httpx + SSE parser + assembler + metrics)
The engine's own decode rate (timings.predicted_per_second, measured inside llama-server) is
compared: target median(B) / median(A) >= 0.99. Also reported: servelab's CPU seconds per
request (process CPU time of this Python process while B runs).
Run: .venv/bin/python benchmarks/client_overhead.py [--rounds 12] [--max-tokens 128]
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

import httpx

from servelab.client.clock import MonotonicClock
from servelab.client.payload import Sampling, build_payload
from servelab.client.stream import HttpRequest, stream_request
from servelab.engines.base import Engine, create_engine
from servelab.metrics import derive
from servelab.spec.engine import EngineConfig

MESSAGES = [{"role": "user", "content": "Tell me a long story about a lighthouse keeper."}]


def minimal_client(engine: Engine, body: dict[str, Any]) -> float:
    """POST, read the stream line by line, return the server's decode rate."""
    host, port = engine.base_url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=300)
    conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    last_timings: dict[str, Any] = {}
    for line in resp:
        if line.startswith(b"data: {") and b'"timings"' in line:
            last_timings = json.loads(line[6:])["timings"]
    conn.close()
    return float(last_timings["predicted_per_second"])


async def servelab_client(engine: Engine, body: dict[str, Any]) -> tuple[float, float]:
    async with httpx.AsyncClient(limits=httpx.Limits(max_keepalive_connections=0)) as client:
        cpu0 = time.process_time()
        obs = await stream_request(client, HttpRequest(engine.chat_url(), body), MonotonicClock())
        cpu = time.process_time() - cpu0
    m = derive(obs)
    return float(m["server_decode_tps"]), cpu


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    args = ap.parse_args()
    sampling = Sampling(max_tokens=args.max_tokens, ignore_eos=True)
    with tempfile.TemporaryDirectory() as tmp:
        engine = create_engine(EngineConfig(model=args.model), Path(tmp) / "engine.log")
        engine.launch()
        try:
            engine.wait_healthy(120)
            minimal_body = build_payload(model="m", sampling=sampling, messages=MESSAGES,
                                         extras={"cache_prompt": False})[1]  # fmt: skip
            servelab_body = build_payload(model="m", sampling=sampling, messages=MESSAGES,
                                          extras=engine.request_extras())[1]  # fmt: skip
            for _ in range(2):  # warm-up, not measured
                minimal_client(engine, minimal_body)
            a: list[float] = []
            b: list[float] = []
            cpu: list[float] = []
            for i in range(args.rounds):
                order = "AB" if i % 2 == 0 else "BA"
                for who in order:
                    if who == "A":
                        a.append(minimal_client(engine, minimal_body))
                    else:
                        tps, c = asyncio.run(servelab_client(engine, servelab_body))
                        b.append(tps)
                        cpu.append(c)
        finally:
            engine.stop()
    ratio = statistics.median(b) / statistics.median(a)
    out = {
        "rounds": args.rounds,
        "max_tokens": args.max_tokens,
        "engine_decode_tps_minimal_client_median": statistics.median(a),
        "engine_decode_tps_servelab_median": statistics.median(b),
        "ratio_servelab_over_minimal": ratio,
        "servelab_cpu_s_per_request_median": statistics.median(cpu),
        "servelab_cpu_s_per_output_token_median": statistics.median(cpu) / args.max_tokens,
    }
    print(json.dumps(out, indent=2))
    print(f"ratio {ratio:.4f}: {'PASS' if ratio >= 0.99 else 'FAIL'} (>= 0.99)")


if __name__ == "__main__":
    main()
