"""Orchestration: the lifecycle of a run, from preflight to stop.

Entry points: ``runner.experiment`` (``run_experiment``, ``resume_experiment``) and
``runner.bench`` (``run_bench``), both through the one lifecycle and executor seam of
``runner.lifecycle``; ``runner.compare``, ``runner.promote``, ``runner.quality`` for the other
commands. Submodules are imported on use, so ``import servelab.runner`` stays cheap.
"""

__all__ = [
    "bench",
    "compare",
    "experiment",
    "lifecycle",
    "promote",
    "quality",
]
