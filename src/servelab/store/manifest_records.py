"""The small records a ``manifest.json`` is made of: host, preflight, engine starts, looks, ...

Owns the typed parts of the manifest (``servelab.store.manifest`` assembles them) and the one
serialisation rule they share: a record writes the fields it was given, or read with, and no
others (``Record.to_json``), so what is written reads back to the same bytes. Pure: no I/O.
Values that really are another program's JSON (an engine's ``describe()``, an importer's
foreign metadata) are ``JsonValue``; everything servelab itself decides is typed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, TypeAdapter

from servelab.theory.hardware import Hardware
from servelab.theory.kvreport import KvReportLine

Scalar = bool | int | float | str | None
# One flat configuration value (``ArmEntry.effective``, ``config_diff``). ``dict[str, str]``
# is an environment: compare manifests of release 0.1.0 flattened ``engine.env`` as a mapping.
EffectiveValue = bool | int | float | str | dict[str, str] | None
# One value of an engine configuration or an arm's overrides as the spec dumped them.
ConfigValue = bool | int | float | str | list[str] | dict[str, str] | None

RunKind = Literal["experiment", "bench", "compare", "import"]
RunStatus = Literal[
    "starting",
    "running",
    "importing",
    "complete",
    "stopped_early",
    "interrupted",
    "crashed",
    "engine_error",
    "failed",
]


_JSON_OBJECT: TypeAdapter[dict[str, JsonValue]] = TypeAdapter(dict[str, JsonValue])


def as_json_object(value: Mapping[str, object]) -> dict[str, JsonValue]:
    """Another program's JSON object (an engine's ``describe()``) checked to be JSON."""
    return _JSON_OBJECT.validate_python(dict(value))


class Record(BaseModel):
    """A frozen manifest record; unknown keys are refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def to_json(self) -> dict[str, JsonValue]:
        """The record as JSON: every field it was built or read with, and no default it was
        not given (so a reader's defaults never turn into written facts)."""
        data: dict[str, JsonValue] = self.model_dump(mode="json", by_alias=True, exclude_unset=True)
        return data


class Gpu(Record):
    name: str
    driver: str
    memory: str = ""


class ClientCeiling(Record):
    """The client's ceiling from the last ``servelab selftest`` on this machine, as the run
    found it at its start (docs/selftest.md): aggregate tokens/s at ``streams`` streams."""

    tokens_per_s: float
    streams: int
    measured_unix_s: float


class Host(Record):
    """The machine a run happened on (``runner.host.host_facts``)."""

    hostname: str
    os: str
    python: str
    machine: str
    cpu_model: str
    cpu_count_logical: int | None = None
    cpu_count_physical: int | None = None
    memory_total_bytes: int
    memory_available_bytes: int
    gpus: tuple[Gpu, ...] = ()
    loadavg: tuple[float, ...] = ()
    client_ceiling: ClientCeiling | None = None  # only when a selftest of this machine was saved


class PreflightFinding(Record):
    """One preflight finding; blocking ones refuse the run unless ``--force``."""

    kind: str
    detail: str
    advice: str
    blocking: bool = False


class WorkloadRef(Record):
    name: str
    version: str
    content_hash: str
    prompts: int


# One definition of each, in the pure core; pydantic validates and dumps the dataclasses.
KvLine = KvReportLine  # one KV (or recurrent state) line of llama-server's log


class KvReported(Record):
    """The KV cache size the engine reported at its probe start."""

    kv_mib: float
    recurrent_mib: float
    lines: tuple[KvLine, ...] = ()
    log: str


class EngineStart(Record):
    """One engine start: the block it served and what the engine said about itself."""

    block: int
    concurrency: int
    t_unix_s: float
    describe: dict[str, JsonValue]  # JSON boundary: the engine's own describe() payload


class PlannedBlock(Record):
    block: int
    arm: str
    concurrency: int  # open loop: the cap (0: none)
    rate_rps: float | None = None  # open loop: the block's rate (unset for a closed loop)


class Look(Record):
    """One sequential look after a round (``analysis.look``)."""

    after_block: int
    decided: bool
    reason: str
    stop: bool = False
    confidence_level: float | None = None


class Resume(Record):
    t_utc: str
    previous_status: RunStatus | None = None
    preflight: tuple[PreflightFinding, ...] = ()


class AllowedConfound(Record):
    """A difference between arms run anyway with ``--allow-confound``."""

    field: str
    values: dict[str, EffectiveValue]


HardwareRecord = Hardware  # the roofline hardware resolved at run start


class CompareSource(Record):
    """One side of ``servelab compare``."""

    run_dir: str
    run_id: str
    arm: str
    label: str


class StoredStop(Record):
    """The stopping rule as a run without a spec (compare, import) stores it."""

    max_blocks: int | None = None
    min_blocks: int | None = None
    target_ci_width: float | None = None
    min_effect: float | None = None


class ImportFile(Record):
    path: str
    sha256: str
    arm: str | None = None


class ReferencesFile(Record):
    """The file that named each configuration's reference arm (``--references``, or the
    preset's companion file found next to the source: ``found_by_preset``)."""

    path: str
    sha256: str
    config_column: str
    reference_column: str
    found_by_preset: bool = False


class FieldMapRecord(Record):
    """One ``--map SRC=TARGET[:UNIT]`` as an import used it."""

    source: str
    target: str
    unit: str | None = None
    optional: bool = False


class ImportMapping(Record):
    """How an importer turned the source into rows; each format fills its own fields."""

    # table
    maps: tuple[FieldMapRecord, ...] | None = None
    arm_column: str | None = None
    rows_key: str | None = None
    block_values: str | dict[str, int] | None = None
    # llama-bench
    tests: dict[str, str] | None = None
    block: str | None = None
    arm_fields: tuple[str, ...] | None = None
    # vllm bench serve
    arrays: dict[str, str] | None = None
    # llama-bench and vllm bench serve
    prompt_id: str | None = None
    # every format, once the rows are written
    derived: tuple[str, ...] | None = None
    warmup_first: int | None = None


class SkippedRows(Record):
    """Source rows not imported: counted by reason, with up to ten examples."""

    count: int = 0
    reasons: dict[str, int] = Field(default_factory=dict)
    examples: tuple[dict[str, JsonValue], ...] = ()  # JSON boundary: the foreign source rows


class ImportSource(Record):
    """Where an import's rows came from."""

    format: str
    preset: str | None = None
    files: tuple[ImportFile, ...] = ()
    mapping: ImportMapping = ImportMapping()
    skipped: SkippedRows = SkippedRows()
    references: ReferencesFile | None = None
    # source columns the user declared as differing between compared arms (``--declare``)
    declared: tuple[str, ...] = ()
    # the import's gates (``--gate`` rules, spec/gates.py) and the arms besides the baseline
    # that must pass them (``--require``); an experiment keeps its own in ``spec.gates``
    gates: tuple[str, ...] = ()
    gates_require: tuple[str, ...] = ()


class StopRule(Record):
    """The stopping rule the analysis works from, defaults filled in (not stored)."""

    max_blocks: int | None
    min_blocks: int
    target_ci_width: float | None
    min_effect: float
    spending: Literal["obrien_fleming", "pocock"] = "obrien_fleming"
