"""What a block sends: its planned trial jobs and the source that turns them into requests.

Owns the choice between the three kinds of work (docs/experiments.md "Load"): a workload's
single-turn prompts (``PromptSource``, the default), its multi-turn sessions
(``ConversationSource``: one planned job per conversation, later turns follow their replies)
and a trace (``TraceSource``: one job per line, sent at the trace's own scaled offsets). Shared
by ``bench`` and experiments; the sources themselves live in ``runner.request_source``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from servelab.engines.base import Engine
from servelab.records import Phase
from servelab.runner.drive import Job, RequestParams, RequestSource, SourceFactory
from servelab.runner.request_source import (
    ConversationSource,
    TraceSource,
    conversation_jobs,
    trace_jobs,
)
from servelab.spec.schedule import prompt_index
from servelab.workloads import Workload
from servelab.workloads.trace import Trace


@dataclass(frozen=True, slots=True)
class BlockWork:
    """A block's trial jobs, its source (None: the workload's prompts) and, for a trace, its
    send times."""

    trials: tuple[Job, ...]
    source: SourceFactory | None = None
    offsets_s: tuple[float, ...] | None = None


def workload_work(
    workload: Workload, ids: Sequence[str], block: int, params: RequestParams, seed: int
) -> BlockWork:
    """``len(ids)`` trials of a workload: prompts (every arm the same ones in a round) or
    conversations (numbered from ``block * len(ids)``, rotating through the sessions)."""
    n = len(ids)
    if workload.sessions:
        jobs = conversation_jobs(workload, n, Phase.TRIAL, ids, first=block * n)

        def conversations(engine: Engine) -> RequestSource:
            return ConversationSource(workload, engine, params, seed)

        return BlockWork(tuple(jobs), conversations)
    n_prompts = len(workload.prompts)
    return BlockWork(tuple(
        Job(rid, prompt_index(block, i, n, n_prompts), Phase.TRIAL) for i, rid in enumerate(ids)
    ))  # fmt: skip


def trace_work(
    trace: Trace, ids: Sequence[str], params: RequestParams, *, seed: int, time_scale: float,
    texts: dict[tuple[str, int], str],
) -> BlockWork:  # fmt: skip
    """One trial per trace line, at the trace's offsets divided by ``time_scale``; prompts
    given as token counts are synthesised once the engine is up (and kept in ``texts``)."""

    def replay(engine: Engine) -> RequestSource:
        source = TraceSource(trace, engine, params, seed=seed, texts=texts)
        source.prepare()
        return source

    offsets = tuple(trace.offsets_s(time_scale))
    return BlockWork(tuple(trace_jobs(trace, Phase.TRIAL, ids)), replay, offsets)
