"""Does servelab slow down the engine it measures, and what does its client cost per token?

``perturb`` (the default): one llama-server; rounds alternate between drivers sending the same
request (same prompt, max_tokens, EOS ignored):
  A: a minimal single-request client (stdlib http.client, blocking reads, nothing else)
  B: servelab's client as the ``llamacpp`` kind drives it (fresh plain connections)
  K: servelab's client as the ``openai`` kind drives the same server (keep-alive)
  A2: the minimal client again, so A2 / A shows the noise floor of this machine.
The engine's own decode rate (timings.predicted_per_second, measured inside llama-server) is
compared, paired per round: target median(B or K) / mean(A, A2) >= 0.99.
Run: .venv/bin/python benchmarks/client_overhead.py [perturb] [--rounds 12] [--max-tokens 128]

``load``: S concurrent streams, N requests in all, closed loop, against ``--url`` (a running
llama-server or other OpenAI-compatible endpoint) or a built-in mock server in its own process
that emits ``--rate`` tokens/s per stream. Reports the client's CPU per token (getrusage of this
process), its decode rate over the engine's own per request (the engine's ``timings``; the mock
reports its own send times the same way) and the event loop's lag. ``--reader aiohttp`` drives
the same requests with a 30-line aiohttp client instead, for comparison.
Run: .venv/bin/python benchmarks/client_overhead.py load --streams 64 --requests 128

Unlike the other benchmarks this one reaches below the public API (``servelab.__all__``): it
times the client's own pieces (``stream_request`` in a ``StreamSession``), which no public entry
point exposes, so it imports them from their modules.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import multiprocessing
import resource
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
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
KINDS = {"llamacpp": False, "openai": True}  # kind -> keep-alive, as each engine class says


def minimal_client(url: str, body: dict[str, Any]) -> tuple[float, float]:
    """POST, read the stream line by line; return the server's decode rate and TTFT - prompt_ms."""
    host, port = url.removeprefix("http://").split("/")[0].split(":")
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection(host, int(port), timeout=300)
    conn.request("POST", "/v1/chat/completions", json.dumps(body),
                 {"Content-Type": "application/json"})  # fmt: skip
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
    client: StreamSession, url: str, body: dict[str, Any]
) -> tuple[float, float, float]:
    """One request through servelab's client, in a session kept open as `servelab bench` does."""
    cpu0 = time.process_time()
    obs = await stream_request(client, HttpRequest(url, body), MonotonicClock())
    cpu = time.process_time() - cpu0
    m = derive(obs)
    tps, ttft, prompt_s = m["server_decode_tps"], m["ttft_s"], m["server_prompt_s"]
    assert tps is not None and ttft is not None and prompt_s is not None, obs.error
    return tps, cpu, ttft - prompt_s


async def interleaved(
    url: str, kinds: list[str], rounds: int, minimal_body: dict[str, Any], body: dict[str, Any]
) -> dict[str, list[float]]:
    """Rounds of A, each kind, A2 (reversed every other round)."""
    res: dict[str, list[float]] = {k: [] for k in ("a", "a2", "gap_a", "cpu_a")}
    for kind in kinds:
        res.update({kind: [], f"gap_{kind}": [], f"cpu_{kind}": []})
    sessions = {kind: StreamSession(1, keepalive=KINDS[kind]) for kind in kinds}
    try:
        for i in range(rounds):
            order = ["A", *kinds, "A2"]
            for who in order if i % 2 == 0 else order[::-1]:
                if who in ("A", "A2"):  # blocking on purpose: the loop has nothing else to do
                    cpu0 = time.process_time()
                    tps, gap = minimal_client(url, minimal_body)
                    res[who.lower()].append(tps)
                    res["cpu_a"].append(time.process_time() - cpu0)
                    if who == "A":
                        res["gap_a"].append(gap)
                else:
                    tps, cpu, gap = await servelab_client(sessions[who], url, body)
                    res[who].append(tps)
                    res[f"cpu_{who}"].append(cpu)
                    res[f"gap_{who}"].append(gap)
    finally:
        for session in sessions.values():
            session.close()
    return res


def bootstrap_median_ci(x: np.ndarray, n: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """95 % percentile-bootstrap interval of the median over rounds (seeded)."""
    rng = np.random.default_rng(seed)
    medians = np.median(rng.choice(x, size=(n, x.size), replace=True), axis=1)
    low, high = np.percentile(medians, [2.5, 97.5])
    return float(low), float(high)


def perturb(args: argparse.Namespace) -> dict[str, Any]:
    sampling = Sampling(max_tokens=args.max_tokens, ignore_eos=True)
    kinds = args.kinds.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        engine: Engine = create_engine(
            EngineConfig(model=args.model, chunk_timings=args.chunk_timings),
            Path(tmp) / "engine.log",
        )
        engine.launch()
        try:
            engine.wait_healthy(120)
            minimal_body = build_payload(model="m", sampling=sampling, messages=MESSAGES,
                                         extras={"cache_prompt": False})[1]  # fmt: skip
            body = build_payload(model="m", sampling=sampling, messages=MESSAGES,
                                 extras=engine.request_extras())[1]  # fmt: skip
            for _ in range(2):  # warm-up, not measured
                minimal_client(engine.chat_url(), minimal_body)
            url = engine.chat_url()
            res = asyncio.run(interleaved(url, kinds, args.rounds, minimal_body, body))
        finally:
            engine.stop()
    return perturb_summary(res, kinds, args)


def perturb_summary(res: dict[str, list[float]], kinds: list[str], args: Any) -> dict[str, Any]:
    """Paired per round: each kind against the mean of the two minimal runs around it, so slow
    drift of a shared machine cancels; A2 / A is the same statistic for identical drivers."""
    a, a2 = res["a"], res["a2"]
    noise_rounds = np.array([y / x for x, y in zip(a, a2, strict=True)])
    out: dict[str, Any] = {
        "rounds": args.rounds,
        "max_tokens": args.max_tokens,
        "chunk_timings": args.chunk_timings,
        "engine_decode_tps_minimal_client_median": statistics.median(a),
        "noise_floor_minimal_over_minimal": float(np.median(noise_rounds)),
        "noise_floor_95ci_bootstrap": list(bootstrap_median_ci(noise_rounds)),
        "ttft_minus_prompt_ms_minimal_median": statistics.median(res["gap_a"]) * 1e3,
        "minimal_cpu_s_per_request_median": statistics.median(res["cpu_a"]),
    }
    for kind in kinds:
        b = res[kind]
        per_round = np.array([bi / ((x + y) / 2) for x, y, bi in zip(a, a2, b, strict=True)])
        out[kind] = {
            "keepalive": KINDS[kind],
            "engine_decode_tps_servelab_median": statistics.median(b),
            "ratio_servelab_over_minimal_paired_median": float(np.median(per_round)),
            "ratio_95ci_bootstrap": list(bootstrap_median_ci(per_round)),
            "ttft_minus_prompt_ms_servelab_median": statistics.median(res[f"gap_{kind}"]) * 1e3,
            "servelab_cpu_s_per_request_median": statistics.median(res[f"cpu_{kind}"]),
            "servelab_cpu_ms_per_output_token_median": statistics.median(res[f"cpu_{kind}"])
            / args.max_tokens
            * 1e3,
        }
    return out


# --- load: many streams ------------------------------------------------------------------


def _sse(obj: object) -> bytes:
    data = b"data: " + json.dumps(obj).encode() + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


async def _mock_stream(writer: asyncio.StreamWriter, n: int, rate: float) -> None:
    """``n`` tokens on an exact schedule, then llama.cpp-style timings of the actual sends."""
    loop = asyncio.get_running_loop()
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n")  # fmt: skip
    piece = _sse({"choices": [{"index": 0, "delta": {"content": " tok"}}]})
    start = loop.time()
    first = last = start
    for i in range(n):
        await asyncio.sleep(max(0.0, start + i / rate - loop.time()))
        writer.write(piece)
        last = loop.time()
        first = last if i == 0 else first
    tps = (n - 1) / (last - first) if n > 1 and last > first else 0.0
    end = {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}],
           "timings": {"predicted_n": n, "predicted_per_second": tps, "prompt_ms": 0.0},
           "usage": {"prompt_tokens": 5, "completion_tokens": n}}  # fmt: skip
    done = b"data: [DONE]\n\n"
    writer.write(_sse(end) + b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done))
    await writer.drain()


async def _mock_conn(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rate: float
) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            body = json.loads(await reader.readexactly(length))
            await _mock_stream(writer, int(body.get("max_tokens") or 16), rate)
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


def _mock_server(rate: float, port_out: Any) -> None:
    async def main() -> None:
        server = await asyncio.start_server(
            lambda r, w: _mock_conn(r, w, rate), "127.0.0.1", 0, backlog=2048
        )
        port_out.put(server.sockets[0].getsockname()[1])
        await server.serve_forever()

    asyncio.run(main())


def _cpu() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


async def _closed_loop(streams: int, requests: int, one: Callable[[], Awaitable[Any]]) -> list[Any]:
    todo = iter(range(requests))
    results: list[Any] = []

    async def worker() -> None:
        for _ in todo:
            results.append(await one())

    await asyncio.gather(*(worker() for _ in range(streams)))
    return results


async def _servelab_load(
    args: argparse.Namespace, url: str, body: dict[str, Any]
) -> dict[str, Any]:
    meter_cls: Any = None
    try:
        from servelab.client.meter import ClientMeter

        meter_cls = ClientMeter
    except ImportError:  # the previous reader, for comparison: no meter
        pass
    with StreamSession(args.streams, args.keepalive) as session:
        one = lambda: stream_request(session, HttpRequest(url, body), MonotonicClock())  # noqa: E731
        meter = meter_cls(MonotonicClock()) if meter_cls else None
        cpu0, t0 = _cpu(), time.perf_counter()
        if meter:
            meter.__enter__()
        observations = await _closed_loop(args.streams, args.requests, one)
        wall, cpu1 = time.perf_counter() - t0, _cpu()
        load = meter.result(getattr(session, "streams_max", args.streams)) if meter else None
    rows = [derive(o) for o in observations]
    bad = [o.error for o in observations if o.outcome.value != "ok"]
    tokens = sum(len(o.chunk_t_s) for o in observations)
    ratios = [r["decode_tps"] / r["server_decode_tps"] for r in rows
              if r["decode_tps"] and r["server_decode_tps"]]  # fmt: skip
    out = _load_figures(cpu0, cpu1, wall, tokens, ratios, [r["decode_tps"] for r in rows])
    out["failed"] = bad[:5]
    out["retries"] = sum(int(o.extra.get("retries") or 0) for o in observations)
    if load is not None:
        out["loop_lag_p99_ms"] = (load.loop_lag_p99_s or 0) * 1e3
        out["loop_lag_max_ms"] = (load.loop_lag_max_s or 0) * 1e3
        out["streams_max"] = load.streams_max
    return out


async def _aiohttp_load(args: argparse.Namespace, url: str, body: dict[str, Any]) -> dict[str, Any]:
    import aiohttp

    # Fresh connections: aiohttp does not resend a POST whose kept-alive connection the server
    # closed (llama-server closes idle ones after 5 s), servelab's client does.
    connector = aiohttp.TCPConnector(limit=args.streams, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def one() -> tuple[float | None, float | None, int]:
            times, timings = [], {}
            async with http.post(url, json=body) as resp:
                async for line in resp.content:
                    if line.startswith(b"data: {"):
                        times.append(time.perf_counter())
                        if b'"timings"' in line:
                            timings = json.loads(line[6:])["timings"]
            times = times[:-1] if timings else times  # the last event carries no token
            tps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 2 else None
            return tps, timings.get("predicted_per_second"), len(times)

        cpu0, t0 = _cpu(), time.perf_counter()
        results = await _closed_loop(args.streams, args.requests, one)
        wall, cpu1 = time.perf_counter() - t0, _cpu()
    ratios = [c / s for c, s, _ in results if c and s]
    return _load_figures(cpu0, cpu1, wall, sum(n for *_, n in results), ratios,
                         [c for c, *_ in results])  # fmt: skip


def _load_figures(
    cpu0: tuple[float, float], cpu1: tuple[float, float], wall: float, tokens: int,
    ratios: list[float], client_tps: list[float | None],
) -> dict[str, Any]:  # fmt: skip
    user, sys = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
    tps = [t for t in client_tps if t]
    return {
        "wall_s": wall,
        "tokens": tokens,
        "cpu_user_s": user,
        "cpu_sys_s": sys,
        "cpu_ms_per_token": (user + sys) / max(tokens, 1) * 1e3,
        "client_over_engine_decode_median": statistics.median(ratios) if ratios else None,
        "client_over_engine_decode_min": min(ratios) if ratios else None,
        "client_over_engine_decode_max": max(ratios) if ratios else None,
        "client_decode_tps_median": statistics.median(tps) if tps else None,
    }


def load(args: argparse.Namespace) -> dict[str, Any]:
    sampling = Sampling(max_tokens=args.max_tokens, ignore_eos=True)
    body = build_payload(model="m", sampling=sampling, messages=MESSAGES,
                         extras={"cache_prompt": False})[1]  # fmt: skip
    proc = None
    url = args.url
    if url is None:
        ports: Any = multiprocessing.get_context("spawn").Queue()
        proc = multiprocessing.get_context("spawn").Process(
            target=_mock_server, args=(args.rate, ports), daemon=True
        )
        proc.start()
        url = f"http://127.0.0.1:{ports.get(timeout=30)}/v1/chat/completions"
    try:
        run = _aiohttp_load if args.reader == "aiohttp" else _servelab_load
        out = asyncio.run(run(args, url, body))
    finally:
        if proc is not None:
            proc.kill()
    return {"reader": args.reader, "streams": args.streams, "requests": args.requests,
            "max_tokens": args.max_tokens, "keepalive": args.keepalive,
            "server": "mock" if args.url is None else args.url,
            "mock_rate_tps": args.rate if args.url is None else None, **out}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="command")
    p = sub.add_parser("perturb")
    for parser in (ap, p):
        parser.add_argument("--rounds", type=int, default=12)
        parser.add_argument("--max-tokens", type=int, default=128)
        parser.add_argument("--model", default="smollm2-135m-instruct")
        parser.add_argument("--kinds", default="llamacpp,openai")
        parser.add_argument("--chunk-timings", action="store_true", help="exact-ITL mode")
    q = sub.add_parser("load")
    q.add_argument("--url", help="a running server's chat URL (default: the built-in mock)")
    q.add_argument("--streams", type=int, default=64)
    q.add_argument("--requests", type=int, default=128)
    q.add_argument("--max-tokens", type=int, default=256)
    q.add_argument("--rate", type=float, default=100.0, help="mock tokens/s per stream")
    q.add_argument("--keepalive", action="store_true")
    q.add_argument("--reader", choices=["servelab", "aiohttp"], default="servelab")
    args = ap.parse_args()
    out = load(args) if args.command == "load" else perturb(args)
    print(json.dumps(out, indent=2))
    for kind in KINDS:
        if kind in out:
            ratio = out[kind]["ratio_servelab_over_minimal_paired_median"]
            print(f"{kind}: ratio {ratio:.4f}: {'PASS' if ratio >= 0.99 else 'FAIL'} (>= 0.99)")


if __name__ == "__main__":
    main()
