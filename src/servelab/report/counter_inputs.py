"""Reading what the spec-decode and prefix-cache records need from a run directory.

Owns the file reads behind ``analysis.spec_decode`` for ``servelab report``: per arm, its
engine's counter names (``analysis.engine_facts.counter_names`` of the recorded kind, or of
the engine an ``openai`` endpoint was identified as), the
counter deltas of each of its blocks (``metrics/<arm>-b<block>-c<level>.json``, a bench's
``metrics/<arm>-deltas.json``), how each block's prefix cache was emptied
(``metrics/cache/``), and whether its effective configuration caches prompts. A file that
cannot be read is left out (``store.metrics_files``), never an error.
"""

from __future__ import annotations

from collections.abc import Iterable

from servelab.analysis.engine_facts import counter_names
from servelab.analysis.settings import ArmFacts, RunFacts
from servelab.analysis.spec_decode import CounterInputs, caching_of
from servelab.store.metrics_files import BlockCache, read_block_caches, read_block_deltas
from servelab.store.rundir import RunDir


def counter_inputs(
    run: RunDir, arm: str, info: ArmFacts, caches: Iterable[BlockCache] | None = None
) -> CounterInputs:
    """One arm's counter names, block deltas, block cache records and caching flag;
    ``caches``: every block's cache record when the caller read them already."""
    every = read_block_caches(run) if caches is None else caches
    return CounterInputs(
        names=counter_names(info.effective.get("engine.kind"), info.identity_engine),
        blocks=tuple(read_block_deltas(run, arm)),
        caches=tuple(c for c in every if c.arm == arm),
        caching=caching_of(info.effective),
    )


def read_counter_inputs(
    run: RunDir, facts: RunFacts, arms: Iterable[str]
) -> dict[str, CounterInputs]:
    """``counter_inputs`` of each of ``arms`` (an arm the manifest does not describe is read
    as the default engine's, with no effective configuration)."""
    caches = read_block_caches(run)
    return {arm: counter_inputs(run, arm, facts.arm(arm), caches) for arm in arms}
