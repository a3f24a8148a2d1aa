"""Timing llama-server's own decode loop, for the speculative-decoding part of a profile.

llama-bench times bare decode calls; llama-server's speculative loop pays more per cycle:
sampling each verified position on the host, drafting K tokens one decode (and one sampling)
at a time, re-evaluating the accepted tokens in the draft context. Measured on an H200, those
costs were as large as the verify batch itself (docs/gpu.md), so a prediction built from
llama-bench alone over-estimated draft-model speedups by 1.5-2x.

Owns ``time_server_pair``: start the installed llama-server (argument list, 127.0.0.1, a free
port) on the target alone, then with the draft at K in ``SERVER_KS`` and synthetic acceptance
1.0 (``--spec-synth-rates 1,...,1``: every cycle drafts K and verifies K + 1 tokens), send
the same greedy, EOS-ignoring request to each, and read the engine's own timings
(``predicted_ms``, ``predicted_n``, ``draft_n``). The request is a 40-token prompt with 128
tokens out unless the caller gives the workload's own lengths (``prompt_tokens``: the
prompt's tokens, repeated to that many token ids through the server's ``/tokenize``;
``tokens`` out): attention over a longer context and per-request costs spread over more
cycles move both the step and the cycle (docs/gpu.md). The cycle time at each K is then fitted as
verify(K + 1) + overhead + K x draft_token (``theory.calibration.fit_server_pair``), with
verify(K + 1) from the llama-bench batch-cost fit, so the MoE expert union stays in the
verify term. Acceptance below 1 only changes tokens per cycle, which the predictor takes from
the measured run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from servelab.errors import EngineError
from servelab.theory.calibration import ServerPair, VerifyFit, fit_server_pair

SERVER_KS = (2, 4, 8)
_PROMPT = (
    "Write a detailed, step by step account of how a city water system treats river water "
    "before it reaches a kitchen tap, from the intake screens through coagulation, "
    "sedimentation, filtration and disinfection, and say what each stage removes."
)
_START_TIMEOUT_S = 300.0
_REQUEST_TIMEOUT_S = 600.0
_MIN_CTX = 4096


def _prompt_ids(base: str, n: int, log_path: Path) -> list[int]:
    """``n`` token ids: the prompt text's own tokens (the server's tokenizer), repeated."""
    from servelab.client import admin

    try:
        reply = admin.post_json(f"{base}/tokenize", {"content": _PROMPT}, timeout_s=60.0)
    except admin.AdminHttpError as exc:
        raise EngineError(f"llama-server could not tokenize ({exc}); log: {log_path}") from exc
    ids = reply.get("tokens") if isinstance(reply, dict) else None
    if not isinstance(ids, list) or not ids or not all(isinstance(t, int) for t in ids):
        raise EngineError(f"llama-server's /tokenize returned no token ids; log: {log_path}")
    return (ids * (n // len(ids) + 1))[:n]


def _serve_once(
    binary: Path, argv_tail: Sequence[str], log_path: Path, tokens: int, reps: int,
    prompt_tokens: int | None = None,
) -> list[dict[str, float]]:  # fmt: skip
    """Start llama-server with ``argv_tail``, send ``reps`` identical requests, stop it; each
    reply's ``timings``. ``prompt_tokens``: a prompt of exactly that many tokens."""
    from servelab.client import admin
    from servelab.engines.process import ManagedProcess, free_port, wait_process_healthy

    port = free_port()
    argv = [str(binary), "--host", "127.0.0.1", "--port", str(port), *argv_tail]
    proc = ManagedProcess(argv, log_path)
    proc.start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_process_healthy(
            proc, f"{base}/health", _START_TIMEOUT_S, who="llama-server (calibration)",
            exit_message=lambda code, when: f"llama-server exited with {code} {when}; log: "
            f"{log_path}",
            advice="check the model files and the log",
        )  # fmt: skip
        prompt = _prompt_ids(base, prompt_tokens, log_path) if prompt_tokens else _PROMPT
        body = {
            "prompt": prompt, "n_predict": tokens, "temperature": 0.0, "ignore_eos": True,
            "cache_prompt": False, "seed": 0,
        }  # fmt: skip
        out = []
        for _ in range(reps):
            try:
                reply = admin.post_json(f"{base}/completion", body, timeout_s=_REQUEST_TIMEOUT_S)
            except admin.AdminHttpError as exc:
                raise EngineError(
                    f"llama-server failed a calibration request ({exc}); log: {log_path}"
                ) from exc
            timings = (reply.get("timings") if isinstance(reply, dict) else None) or {}
            out.append({k: float(v) for k, v in timings.items() if isinstance(v, int | float)})
        return out
    finally:
        proc.stop()


def _step_s(timings: Sequence[dict[str, float]]) -> float:
    """Seconds per generated token, the fastest reply (fixed work: slower ones saw noise)."""
    return min(t["predicted_ms"] / 1000.0 / max(t["predicted_n"], 1.0) for t in timings)


def _cycle_s(timings: Sequence[dict[str, float]], k: int) -> float:
    """Seconds per speculative cycle (K drafted, K + 1 verified), the fastest reply."""
    cycles = []
    for t in timings:
        drafted = t.get("draft_n", 0.0)
        if drafted < k:
            raise EngineError(
                f"llama-server drafted {drafted:g} tokens at K={k}: the draft model did not "
                "run (check --spec-type draft-simple support in this build)"
            )
        cycles.append(t["predicted_ms"] / 1000.0 / (drafted / k))
    return min(cycles)


def _lengths(timings: Sequence[dict[str, float]]) -> tuple[int | None, int | None]:
    """The timed request's prompt and generated tokens, as the engine counted them."""
    first = timings[0] if timings else {}
    prompt, out = first.get("prompt_n"), first.get("predicted_n")
    return (int(prompt) if prompt else None, int(out) if out else None)


def time_server_pair(
    target: Path, target_sha256: str, draft: Path, draft_sha256: str, verify: VerifyFit,
    *, log_dir: Path, tokens: int = 128, reps: int = 2, ks: Sequence[int] = SERVER_KS,
    prompt_tokens: int | None = None, on_step: Callable[[str], None] = lambda _what: None,
) -> ServerPair:  # fmt: skip
    """Time llama-server on ``target`` alone and with ``draft`` at each K (see the module
    docstring) and fit the per-cycle overhead and the per-draft-token cost. ``tokens`` out
    and ``prompt_tokens`` in (None: the 40-token text) per timed request."""
    from servelab.engines.installed import find_llama_binary

    binary = find_llama_binary("llama-server")
    ctx = max(_MIN_CTX, (prompt_tokens or 0) + tokens + 64)
    common = ["-m", str(target), "-c", str(ctx), "-np", "1", "--cache-ram", "0", "-ngl", "999"]
    on_step("llama-server decode step: target alone")
    alone = _serve_once(binary, common, log_dir / "server-target.log", tokens, reps,
                        prompt_tokens)  # fmt: skip
    step = _step_s(alone)
    cycles = {}
    for k in ks:
        on_step(f"llama-server speculative cycle: K={k}, acceptance 1.0")
        spec = [
            "--spec-type", "draft-simple", "--spec-draft-model", str(draft),
            "--spec-draft-n-max", str(k), "--spec-draft-n-min", str(k),
            "--spec-draft-p-min", "0", "--spec-synth-rates", ",".join(["1"] * k),
            "--spec-draft-ngl", "999",
        ]  # fmt: skip
        timings = _serve_once(binary, [*common, *spec], log_dir / f"server-k{k}.log", tokens,
                              reps, prompt_tokens)  # fmt: skip
        cycles[k] = _cycle_s(timings, k)
    prompt_n, gen_n = _lengths(alone)
    return fit_server_pair(target_sha256, draft_sha256, step, cycles, verify,
                           prompt_tokens=prompt_n, gen_tokens=gen_n)  # fmt: skip
