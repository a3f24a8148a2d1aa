"""servelab's KV prediction equals what llama-server itself reports at start-up.

For both embedded models (SmolLM2: dense GQA; Gemma 3 270M: sliding-window layers) at several
contexts, slot counts and K/V cache types, llama-server is started (one at a time, ``-lv 4``
so it prints its ``llama_kv_cache: size = ...`` lines), stopped, and every cache line is
compared with ``llama_kv_allocation``: cells, layers and MiB to the log's 0.01 precision.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from servelab.engines.registry import create_engine
from servelab.errors import ServelabError
from servelab.models.arch_files import load_architecture
from servelab.spec.engine import EngineConfig
from servelab.theory.kvcache import KvSettings, llama_kv_allocation
from servelab.theory.kvreport import measured_kv_from_log, report_matches
from servelab.theory.kvtypes import cache_type

from .conftest import listed_model

pytestmark = pytest.mark.engine

# (model, context per slot, slots, -ctk, -ctv)
CASES = [
    ("smollm2-135m-instruct", 4096, 1, "f16", "f16"),
    ("smollm2-135m-instruct", 1000, 3, "q8_0", "q8_0"),
    ("smollm2-135m-instruct", 2048, 2, "q4_0", "f16"),
    ("smollm2-135m-instruct", 512, 1, "f32", "q5_1"),
    ("gemma-3-270m", 4096, 1, "f16", "f16"),
    ("gemma-3-270m", 1500, 2, "q8_0", "q8_0"),
    ("gemma-3-270m", 8192, 1, "q4_0", "iq4_nl"),
    ("gemma-3-270m", 256, 1, "bf16", "q5_0"),
]


@pytest.fixture(scope="module")
def models_ready(engine_ready: None) -> None:
    from servelab.models import resolve_model

    for name in sorted({case[0] for case in CASES}):
        try:
            resolve_model(listed_model(name))
        except ServelabError as exc:
            pytest.fail(f"{exc}; run `make test`, which pulls tests/models.txt")


def _server_log(tmp_path: Path, model: str, ctx: int, slots: int, k: str, v: str) -> str:
    log = tmp_path / "engine.log"
    flags = ("-lv", "4", "-t", "2", "-ctk", k, "-ctv", v)
    config = EngineConfig(model=listed_model(model), parallel=slots, ctx_per_slot=ctx, flags=flags)
    engine = create_engine(config, log)
    engine.launch()
    try:
        engine.wait_healthy(60)
    finally:
        engine.stop()
    return log.read_text(encoding="utf-8", errors="replace")


@pytest.mark.parametrize(("model", "ctx", "slots", "k", "v"), CASES)
def test_predicted_kv_equals_llama_server_report(
    models_ready: None, tmp_path: Path, model: str, ctx: int, slots: int, k: str, v: str
) -> None:
    measured = measured_kv_from_log(_server_log(tmp_path, model, ctx, slots, k, v))
    assert measured is not None, "llama-server printed no llama_kv_cache line at -lv 4"
    settings = KvSettings(
        n_ctx=ctx * slots, n_seq=slots, type_k=cache_type(k), type_v=cache_type(v)
    )
    predicted = llama_kv_allocation(load_architecture(model), settings)
    groups = [g for g in predicted.groups if g.kind in ("full", "sliding")]
    assert len(groups) == len(measured.target)
    for group, line in zip(groups, measured.target, strict=True):
        assert (group.cells, len(group.layers), group.streams) == (
            line.cells, line.layers, line.streams,
        )  # fmt: skip
        assert report_matches(group.k_bytes, line.k_mib), (group, line)
        assert report_matches(group.v_bytes, line.v_mib), (group, line)
        assert report_matches(group.total_bytes, line.size_mib), (group, line)
