"""The run model: typed, versioned records of a run directory, and the files that hold them.

``read_run(dir)`` gives a ``Run``: its ``Manifest`` (upgraded from older formats in memory) and
its request rows; ``write_manifest`` writes a manifest atomically; ``RequestRow``/``build_row``
are one ``requests.jsonl`` line. Append-only JSONL and atomic JSON writers live in
``store.jsonl``, the directory layout in ``store.rundir``.

Format changes (readers accept every older version):

- 2026-11-22, manifest 1, rows 1: first format. ``manifest.json``, ``requests.jsonl`` (one row
  per request, see docs/run-directory.md), ``metrics/*.json``, ``engine-<arm>.log``.
- 2026-11-30, rows 1 (additive): rows gain ``text_chars`` and ``text_truncated``; ``text``,
  ``reasoning`` and tool-call ``arguments`` are stored up to 262,144 characters each. Older rows
  lack both fields: read ``text_truncated`` as false.
- 2026-11-30, manifest 1 (changed meaning): an import's ``manifest.source.skipped.reasons`` is
  keyed by a fixed set of reasons (``not_a_number``, ``not_finite``, ``negative``, ``empty``,
  ``short_row``, ``long_row``, ``no_arm``, ``bad_value``) instead of ``"column X"``; older
  manifests keep their keys, which readers show as they are.
- 2026-11-30, manifest 2: each fact stored once. An experiment's ``baseline``, ``interleaved``,
  ``schedule``, ``seed``, ``decision_metrics``, ``confidence``, ``stop``, ``name`` and
  ``declared`` are no longer copied to the top level: they are read from ``spec``. Runs without
  a spec (bench, compare, import) keep theirs at the top level. A field that has no value for a
  run's kind is left out instead of written as null. ``read_manifest`` upgrades version 1.
- 2026-11-30, manifest 2 (additive): an import may hold ``references`` ({candidate: reference
  arm}, both arms; from the source), ``source.references`` ({path, sha256, config_column,
  reference_column, found_by_preset}) and ``source.declared`` (columns given with
  ``--declare``). An experiment's ``spec.metrics`` may be a mapping {metric: statistic or
  [statistics]} and ``spec.prompts`` ``fixed`` or ``sampled``. Written only when they have a
  value, so older readers still read runs without them.
- 2026-11-30, summary 1 (additive, changed default): a comparison per (candidate, level,
  metric, statistic); ``statistic`` is ``pooled``, ``mean``, ``median``, ``p90`` or ``p99``
  (rates default to ``pooled``, latencies to ``mean`` and ``p90``; 0.1 decided on ``median``).
  Comparisons gain ``ratio_median``, ``method``, ``n_pairs``, ``prompts`` and
  ``heterogeneity``; the summary ``references`` and ``prompts``. Older summaries read as they
  are (the new keys are absent).
- 2026-11-30, rows 2 (additive): after ``request_id`` rows hold ``rate_rps``, ``t_sched_unix_s``,
  ``lag_s`` (open loop), ``session_id``, ``turn`` (conversations) and ``slo_met`` (per-request
  SLOs), each null where it does not apply. Rows of format 1 lack them; readers use ``row.get``
  and read them as null (``columns.read_row_table`` keeps a missing key missing). Every block
  (bench included) may have ``metrics/client/<arm>-b<block>-<level>.json``
  (``store.metrics_files``): what driving it cost the client (CPU, event-loop lag). A bench
  ``summary.json`` of an open loop has ``open_loop`` (rates and lag).
- 2026-11-30, summary 1 (additive): ``summary.json`` (experiment and bench) may hold
  ``spec_decode`` (per arm that drafted tokens: ``store.engine_records.SpecDecodeRecord``) and
  ``prefix_cache`` (per arm that caches prompts or shows hits: ``PrefixCacheRecord``), each
  left out when empty. Every block may have ``metrics/cache/<arm>-b<block>-<level>.json``
  (``arm``, ``block``, ``level``, ``restarted``, ``emptied``: how its prefix cache was emptied);
  runs without it read as not recorded. Effective configurations gain ``model.format``,
  ``model.weights``, ``model.chat_template_sha256`` and ``sampling.engine_defaults`` (llama.cpp
  and vLLM), and ``vllm.*`` for vLLM arms; resume ignores keys the run did not record.
- 2026-12-01, manifest 2 (additive): an import whose rows name what each prompt expected
  records ``workload`` ({name, version, content_hash, prompts}, as experiments and benches do)
  and stores the workload it derived as ``inputs/workload.json`` (``RunDir.workload``);
  ``servelab report`` scores against a run's stored workload (when its hash is the recorded
  one) before loading one by name. An import's ``source`` may hold ``gates`` (rules, as an
  experiment's ``spec.gates.rules``) and ``gates_require`` (arms besides the baseline that must
  pass them), given with ``servelab import --gate/--require``. Each is written only when it has
  a value: runs without them read, and report, as before.
"""

from servelab.store.manifest import (
    DEFAULT_CONFIDENCE,
    DEFAULT_DECISION_METRICS,
    DEFAULT_MIN_EFFECT,
    MANIFEST_SCHEMA_VERSION,
    ArmEntry,
    LoadWorkerRecord,
    Manifest,
    RayNodeRecord,
    RayRecord,
    utc_now,
)
from servelab.store.manifest_records import (
    AllowedConfound,
    ClientCeiling,
    CompareSource,
    EffectiveValue,
    EngineStart,
    FieldMapRecord,
    Gpu,
    HardwareRecord,
    Host,
    ImportFile,
    ImportMapping,
    ImportSource,
    KvLine,
    KvReported,
    Look,
    PlannedBlock,
    PreflightFinding,
    Resume,
    RunKind,
    RunStatus,
    SkippedRows,
    StopRule,
    StoredStop,
    WorkloadRef,
    as_json_object,
)
from servelab.store.request_row import ROW_SCHEMA_VERSION, RequestRow, RowContext, build_row
from servelab.store.run import Run, read_manifest, read_run, write_manifest

SCHEMA_VERSION = 1
"""The format of the other JSON files of a run directory (``metrics/*.json``, ``summary.json``);
``manifest.json`` has ``MANIFEST_SCHEMA_VERSION`` and request rows ``ROW_SCHEMA_VERSION``."""

__all__ = [
    "DEFAULT_CONFIDENCE",
    "DEFAULT_DECISION_METRICS",
    "DEFAULT_MIN_EFFECT",
    "MANIFEST_SCHEMA_VERSION",
    "ROW_SCHEMA_VERSION",
    "SCHEMA_VERSION",
    "AllowedConfound",
    "ArmEntry",
    "ClientCeiling",
    "CompareSource",
    "EffectiveValue",
    "EngineStart",
    "FieldMapRecord",
    "Gpu",
    "HardwareRecord",
    "Host",
    "ImportFile",
    "ImportMapping",
    "ImportSource",
    "KvLine",
    "KvReported",
    "LoadWorkerRecord",
    "Look",
    "Manifest",
    "PlannedBlock",
    "PreflightFinding",
    "RayNodeRecord",
    "RayRecord",
    "RequestRow",
    "Resume",
    "RowContext",
    "Run",
    "RunKind",
    "RunStatus",
    "SkippedRows",
    "StopRule",
    "StoredStop",
    "WorkloadRef",
    "as_json_object",
    "build_row",
    "read_manifest",
    "read_run",
    "utc_now",
    "write_manifest",
]
