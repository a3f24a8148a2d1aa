"""servelab: an A/B lab for LLM serving configurations.

Owns the public library API (README "Library use", docs/library.md): the documented entry points
and the few records they take and return, each named once here and imported lazily on first
use (module ``__getattr__``), so ``import servelab`` stays cheap and no module inside servelab
can start an import cycle through this file. Modules inside the package import from their real
homes, never from here (tests/unit/test_layers.py checks it), except ``__version__``.

- ``run_experiment(spec_path, out=None, ...)``: run an experiment YAML, write its run directory;
  ``resume_experiment(run_root)`` continues an interrupted one.
- ``run_bench(config, out=None)``: one configuration, one workload (a one-arm experiment).
- ``read_run(root)``: a run directory as typed records (manifest, rows), any schema version.
- ``build_report(root)``: analyse a run directory and write summary.json, report.md/.html.
- ``import_results(files, options=None, ...)``: other tools' results as a run directory.
- ``predict(model, inputs=None, hardware="auto")``: what theory expects, before measuring.
- ``analyze(manifest, rows, decision=None)``: a run's summary (verdicts on chosen statistics),
  without writing anything; ``pairs_of(baseline_rows, candidate_rows, metric)`` its pairs.
- ``compare_pairs(pairs, statistic, rng=...)``, ``compare_unpaired``, ``decide_paired``,
  ``plan_looks``: the statistics themselves, for (round, prompt) pairs of ``Cell`` values
  measured anywhere (docs/statistics.md).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# name -> the module that owns it (imported on first access)
_EXPORTS: dict[str, str] = {
    "run_experiment": "servelab.runner.experiment",
    "resume_experiment": "servelab.runner.experiment",
    "run_bench": "servelab.runner.bench",
    "read_run": "servelab.store.run",
    "build_report": "servelab.report.build",
    "import_results": "servelab.importers",
    "ImportOptions": "servelab.importers",
    "predict": "servelab.prediction",
    "PredictInput": "servelab.theory.predict",
    "Prediction": "servelab.theory.predict",
    "prediction_to_json": "servelab.theory.predict",
    "BenchConfig": "servelab.spec.bench",
    "EngineConfig": "servelab.spec.engine",
    "ExperimentSpec": "servelab.spec.experiment",
    "ServelabError": "servelab.errors",
    "analyze": "servelab.analysis.analyze",
    "pairs_of": "servelab.analysis.comparisons",
    "Cell": "servelab.stats.paired",
    "Pair": "servelab.stats.paired",
    "compare_pairs": "servelab.stats.paired",
    "compare_unpaired": "servelab.stats.paired",
    "decide_paired": "servelab.stats.paired",
    "plan_looks": "servelab.stats.sequential",
}

__all__ = [
    "BenchConfig",
    "Cell",
    "EngineConfig",
    "ExperimentSpec",
    "ImportOptions",
    "Pair",
    "PredictInput",
    "Prediction",
    "ServelabError",
    "__version__",
    "analyze",
    "build_report",
    "compare_pairs",
    "compare_unpaired",
    "decide_paired",
    "import_results",
    "pairs_of",
    "plan_looks",
    "predict",
    "prediction_to_json",
    "read_run",
    "resume_experiment",
    "run_bench",
    "run_experiment",
]

if TYPE_CHECKING:  # the real objects, for type checkers and editors
    from servelab.analysis.analyze import analyze
    from servelab.analysis.comparisons import pairs_of
    from servelab.errors import ServelabError
    from servelab.importers import ImportOptions, import_results
    from servelab.prediction import predict
    from servelab.report.build import build_report
    from servelab.runner.bench import run_bench
    from servelab.runner.experiment import resume_experiment, run_experiment
    from servelab.spec.bench import BenchConfig
    from servelab.spec.engine import EngineConfig
    from servelab.spec.experiment import ExperimentSpec
    from servelab.stats.paired import Cell, Pair, compare_pairs, compare_unpaired, decide_paired
    from servelab.stats.sequential import plan_looks
    from servelab.store.run import read_run
    from servelab.theory.predict import PredictInput, Prediction, prediction_to_json


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'servelab' has no attribute {name!r}")
    value: object = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
