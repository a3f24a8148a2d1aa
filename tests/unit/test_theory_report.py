"""Parsing llama-server's KV report lines, and the hardware catalog."""

from __future__ import annotations

import pytest

from servelab.errors import UsageError
from servelab.theory.hardware import (
    CATALOG,
    find_hardware,
    hardware_from_user_dict,
    match_gpu,
    parse_memory_mib,
)
from servelab.theory.kvreport import MIB, measured_kv_from_log, report_matches

# Lines as llama-server (0c1e57098, -lv 4) printed them for Gemma 3 270M at -c 3000 -np 2,
# plus a fit-probe line at DEBUG level and a draft context.
LOG = """\
0.01.159.137 I llama_context: constructing llama_context
0.01.159.281 I llama_kv_cache_iswa: creating non-SWA KV cache, size = 1536 cells
0.01.159.351 I llama_kv_cache:        CPU KV buffer size =     9.00 MiB
0.01.164.240 I llama_kv_cache: size =    9.00 MiB (  1536 cells,   3 layers,  2/2 seqs), \
K (f16):    4.50 MiB, V (f16):    4.50 MiB
0.01.164.276 I llama_kv_cache_iswa: creating     SWA KV cache, size = 1024 cells
0.01.183.330 I llama_kv_cache: size =   30.00 MiB (  1024 cells,  15 layers,  2/2 seqs), \
K (f16):   15.00 MiB, V (f16):   15.00 MiB
0.00.900.000 D llama_kv_cache: size = 999.00 MiB (  9999 cells,  15 layers,  2/2 seqs), \
K (f16):   1.00 MiB, V (f16):   1.00 MiB
0.02.000.000 I llama_context: constructing llama_context
0.02.000.100 I llama_kv_cache: size =    2.25 MiB (  1536 cells,  30 layers,  1/1 seqs), \
K (q8_0):    1.13 MiB, V (q8_0):    1.13 MiB
llama_memory_recurrent: size =   75.38 MiB (     1 cells,  48 layers,  1 seqs  0 rs_seq), \
R (f32):    3.38 MiB, S (f32):   72.00 MiB, P (f32):    0.00 MiB
"""


def test_measured_kv_groups_contexts_and_skips_debug_lines() -> None:
    measured = measured_kv_from_log(LOG)
    assert measured is not None and len(measured.contexts) == 2
    target = measured.target
    assert [x.size_mib for x in target] == [9.0, 30.0]
    assert (target[0].cells, target[0].layers, target[0].seqs, target[0].streams) == (
        1536, 3, 2, 2,
    )  # fmt: skip
    assert measured.kv_mib == 39.0 and measured.kv_bytes == 39 * MIB
    draft = measured.contexts[1]
    assert draft[0].type_k == "q8_0" and draft[1].kind == "recurrent"
    assert draft[1].v_mib == 72.0


def test_no_report_in_a_quiet_log() -> None:
    assert measured_kv_from_log("srv  llama_server: listening on http://127.0.0.1:8080\n") is None


def test_report_matches_to_print_precision() -> None:
    assert report_matches(9 * MIB, 9.00)
    assert report_matches(round(2.254 * MIB), 2.25)
    assert not report_matches(9 * MIB + 20_000, 9.00)


def test_catalog_has_the_required_devices() -> None:
    names = {h.name for h in CATALOG}
    assert names >= {
        "rtx-3060-12gb", "rtx-3090", "rtx-4090", "a100-40gb", "a100-80gb", "h100-sxm",
        "h100-pcie", "h200", "dgx-spark-gb10", "apple-m4-max", "apple-m5-max",
    }  # fmt: skip
    assert all(h.bandwidth_gbs > 0 and h.memory_bytes > 0 and h.fp16_tflops > 0 for h in CATALOG)


@pytest.mark.parametrize(
    ("gpu", "memory", "expected"),
    [
        ("NVIDIA GeForce RTX 3090", "24576 MiB", "rtx-3090"),
        ("NVIDIA A100-SXM4-80GB", "81920 MiB", "a100-80gb"),
        ("NVIDIA A100-PCIE-40GB", "40960 MiB", "a100-40gb"),
        ("NVIDIA H100 80GB HBM3", "81559 MiB", "h100-sxm"),
        ("NVIDIA H100 PCIe", "81559 MiB", "h100-pcie"),
        ("NVIDIA GB10", "", "dgx-spark-gb10"),
    ],
)
def test_match_gpu(gpu: str, memory: str, expected: str) -> None:
    found = match_gpu(gpu, parse_memory_mib(memory))
    assert found is not None and found.name == expected


def test_unknown_gpu_matches_nothing() -> None:
    assert match_gpu("Tesla T4", 15360) is None


def test_user_entries_win_and_bad_ones_name_the_field() -> None:
    user = hardware_from_user_dict(
        {"hardware": [{"name": "rtx-3090", "bandwidth_gbs": 800, "memory_gb": 24,
                       "fp16_tflops": 35}]},
        where="hw.yaml",
    )  # fmt: skip
    assert find_hardware("rtx-3090", user).bandwidth_gbs == 800
    with pytest.raises(UsageError, match=r"hw\.yaml: hardware\.0\.bandwidth_gbs"):
        hardware_from_user_dict({"hardware": [{"name": "x", "bandwidth_gbs": -1,
                                               "memory_gb": 1, "fp16_tflops": 1}]},
                                where="hw.yaml")  # fmt: skip


def test_unknown_hardware_lists_known_names() -> None:
    with pytest.raises(UsageError, match="rtx-3090"):
        find_hardware("tpu-v9")
