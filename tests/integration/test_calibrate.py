"""``servelab calibrate`` against the real llama-bench: a tiny calibration of SmolLM2 on this
CPU writes a plausible profile that ``predict --profile auto`` then uses; a tiny synthetic
target and draft sharing a vocabulary get the real llama-server pair timing.

The cache root is a temporary folder whose ``models`` and ``engines`` point at the real ones,
so the profile lands in the test's folder. Each llama-bench run holds the engine lock shared
with the other engine tests (the pair test holds it itself around llama-server), so run this
module without an outer ``flock``.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from servelab.engines.installed import find_vocab
from servelab.models.synth import synthesize
from servelab.paths import cache_dir
from servelab.runner.calibrate import HOST_CPU, calibrate, load_profile, run_llama_bench
from servelab.theory.calibration import HardwareProfile, pair_key
from tests.integration.conftest import run_cli
from tests.models import listed_model

MODEL = listed_model("smollm2-135m-instruct")
DRAFT = listed_model("gemma-3-270m")
# the lock every engine-running process on a shared test machine takes (flock(1) creates it)
LOCK = str(Path(tempfile.gettempdir()) / "servelab-engine.lock")


@pytest.fixture
def cache(engine_ready: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    real = cache_dir()
    root = tmp_path / "cache"
    root.mkdir()
    for name in ("models", "engines", "sha256-cache.json"):
        if (real / name).exists():
            os.symlink(real / name, root / name)
    monkeypatch.setenv("SERVELAB_CACHE_DIR", str(root))
    return root


def test_calibrate_writes_a_plausible_profile_that_predict_uses(cache: Path) -> None:
    bench = functools.partial(run_llama_bench, prefix=("flock", LOCK))
    # different vocabularies: llama-server cannot pair them, so no server timing here
    done = calibrate(MODEL, drafts=(DRAFT,), variants=("F16",), k_max=4, reps=3, tokens=16,
                     bench=bench, progress=False, server=False)  # fmt: skip
    p = done.profile
    assert done.path.parent == cache / "profiles" and done.path.is_file()
    assert p.hardware == HOST_CPU and p.engine.startswith("0c1e57098-cpu-")
    assert p.step.bandwidth_bytes_s > 0 and p.step.fixed_s >= 0
    assert p.step.n_points == 2 and 0 <= p.step.rms_rel_residual < 10
    target = next(m for m in p.models.values() if m.name == MODEL)
    assert len(target.verify_s) == 4 and all(t > 0 for t in target.verify_s)
    assert target.verify_fit is not None and target.verify_fit.kind == "linear"
    draft = next(m for m in p.models.values() if m.name == DRAFT)
    assert p.draft_cost(draft.sha256, target.sha256) == pytest.approx(draft.step_s / target.step_s)
    assert load_profile("host-cpu (measured)") == p  # what a CPU run resolves to

    from servelab.prediction import predict

    used = predict(MODEL, profile="auto")  # no GPU here: the host-cpu profile
    assert used.profile == p
    assert used.decode_ceiling_tps == pytest.approx(
        p.ceiling_tps(used.single.total_bytes, target.sha256)  # the model's own fixed cost
    )
    shown = run_cli("predict", MODEL, "--profile", "auto")
    assert shown.returncode == 0, shown.stderr
    assert f"profile: {p.name}" in shown.stdout
    stored = json.loads(done.path.read_text(encoding="utf-8"))
    assert stored["schema_version"] == 1 and stored["hardware"] == HOST_CPU

    # a second model without variants: the machine's bandwidth, its own fixed cost and table
    again = calibrate(DRAFT, variants=(), k_max=2, reps=2, tokens=8, bench=bench, progress=False)
    q = again.profile
    assert again.path == done.path and q.step.bandwidth_bytes_s == p.step.bandwidth_bytes_s
    gemma = q.models[draft.sha256]
    assert gemma.verify_fit is not None and len(gemma.verify_s) == 2
    assert q.fixed_seconds(gemma.sha256) == pytest.approx(
        max(0.0, gemma.step_s - gemma.bytes_per_step / q.step.bandwidth_bytes_s)
    )
    assert target.sha256 in q.models  # merged, not replaced

    # the target itself again without variants (as at a workload's lengths on a GPU): its own
    # step and table are new, the bandwidth and its variant point stay (they were once
    # dropped with the target's group, which left nothing to fit a bandwidth to)
    third = calibrate(MODEL, variants=(), k_max=2, reps=2, tokens=8, bench=bench,
                      progress=False).profile  # fmt: skip
    assert third.step == q.step and third.points == q.points
    assert len(third.models[target.sha256].verify_s) == 2  # re-measured at k_max 2
    assert third.models[draft.sha256] == gemma


def test_calibrate_command_prints_the_profile_as_json(cache: Path) -> None:
    argv = [sys.executable, "-m", "servelab", "calibrate", MODEL, "--variants", "F16",
            "--k-max", "4", "--reps", "2", "--tokens", "8", "--json"]  # fmt: skip
    done = subprocess.run(["flock", LOCK, *argv], capture_output=True, text=True, timeout=300,
                          check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["hardware"] == HOST_CPU and shown["step"]["bandwidth_bytes_s"] > 0
    assert (cache / "profiles").is_dir() and load_profile(HOST_CPU) is not None
    refused = run_cli("calibrate", MODEL, "--variants", "none", "--hw", "rtx-3090")
    assert refused.returncode != 0
    assert "calibrate a model with --variants Q8_0,F16 first" in refused.stderr


def test_calibrate_times_a_llama_server_pair_sharing_a_vocabulary(
    cache: Path, tmp_path: Path
) -> None:
    """Tiny synthetic llama3 target and draft (one vocabulary): the real llama-server's
    speculative cycle at K = 2, 4, 8, timed at a workload's lengths (300 tokens in, 48 out),
    is stored as a pair the profile then uses."""
    from servelab.models.pull import sha256_file
    from servelab.runner.calibrate_server import SERVER_KS

    target = synthesize("llama3-draft", tmp_path / "target.gguf", quant="Q4_0", progress=False,
                        find_vocab=find_vocab)  # fmt: skip
    draft = synthesize("llama3-draft", tmp_path / "draft.gguf", quant="Q8_0", layers=1, seed=1,
                       progress=False, find_vocab=find_vocab)  # fmt: skip
    # llama-server starts inside calibrate, outside flock(1): this process holds the lock for
    # the whole run (so llama-bench takes no flock prefix here: it would wait on us)
    lock = os.open(LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = calibrate(str(target), drafts=[str(draft)], variants=("Q8_0",), k_max=4,
                         reps=2, tokens=16, hardware="test-server-pair", progress=False,
                         server_tokens=48, prompt_tokens=300)  # fmt: skip
    finally:
        os.close(lock)
    p = done.profile
    t_sha, d_sha = sha256_file(target), sha256_file(draft)
    pair = p.pairs[pair_key(t_sha, d_sha)]
    assert set(pair.cycle_s) == set(SERVER_KS) == {2, 4, 8}
    c = [pair.cycle_s[k] for k in SERVER_KS]
    assert all(x > 0 for x in c) and c[0] < c[1] < c[2]
    assert pair.step_s > 0 and pair.overhead_s >= 0 and pair.draft_token_s > 0
    assert 0 <= pair.rms_rel_residual < 10
    # timed at the lengths asked for, as llama-server itself counted them
    assert (pair.prompt_tokens, pair.gen_tokens) == (300, 48)
    fit = p.models[t_sha].verify_fit
    assert fit is not None
    assert p.verify_cost(t_sha, 3, d_sha) == pytest.approx(
        (fit.seconds(4) + pair.overhead_s) / pair.step_s
    )
    assert p.draft_cost(d_sha, t_sha) == pytest.approx(pair.draft_token_s / pair.step_s)
    stored = json.loads(done.path.read_text(encoding="utf-8"))
    assert set(stored["pairs"]) == {pair.key}
    assert HardwareProfile.from_json(stored) == p == load_profile("test-server-pair")
