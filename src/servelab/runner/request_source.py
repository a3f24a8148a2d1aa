"""Request sources for conversations and traces: the runner's ``RequestSource`` seam, filled in.

Owns two sources the block executor can send from instead of the single-turn prompts:

- ``ConversationSource``: a workload's multi-turn sessions. A session's first turn is a job
  from ``conversation_jobs`` (or ``start_jobs``); after each reply ``follow`` feeds it back
  (``workloads.conversation``) and returns the next turn's job with its think time, until the
  session ends. Each job's ``prompt_index`` is the session's index in ``workload.sessions``;
  its ``session`` numbers the conversation (one session of the workload may run many times, at
  once); its ``turn`` counts from 0; later turns' request ids are ``<planned id>#t<turn>``.
  A failed turn ends its conversation: later turns have no reply to follow. Warm-up
  conversations send their first turn only.
- ``TraceSource``: one request per line of a trace, at the trace's (scaled) arrival offsets,
  with ``max_tokens`` = the line's output length and ``ignore_eos``; prompts given as token
  counts are synthesised through the engine's tokenizer (``prepare``, before the block, so
  no tokenizer call runs inside the send loop). ``trace_jobs`` plans its jobs.

``conversation_source`` and ``trace_source`` make the ``Block.source`` factories; the generic
``request_from`` builds a request from messages or a prompt as ``drive.build_request`` does.

It holds the replies of the conversations in flight (the only state), and must not decide the
load (open or closed loop, concurrency, schedule) or write rows.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence

from servelab.client.stream import HttpRequest
from servelab.engines.base import Engine
from servelab.records import Observation, Outcome, Phase
from servelab.runner.drive import Job, RequestParams, RequestSource, SourceFactory, request_from
from servelab.workloads import Workload, turn_id
from servelab.workloads.conversation import Reply, TurnPlan, plan_turn
from servelab.workloads.trace import Trace, synthesize_prompt


def reply_of(obs: Observation) -> Reply:
    """What the model answered, as the conversation feeds it back."""
    return Reply(text=obs.text, tool_calls=obs.tool_calls)


def conversation_jobs(
    workload: Workload, count: int, phase: Phase, request_ids: Sequence[str] = (), first: int = 0
) -> list[Job]:
    """First turns of ``count`` conversations numbered ``first``, ``first + 1``, ..., cycling
    through the workload's sessions from the ``first``-th; ``request_ids`` (the plan's, for
    resume) name them, and their later turns ``<id>#t<turn>``."""
    n = len(workload.sessions)
    ids = [*request_ids, *[""] * (count - len(request_ids))]
    return (
        [Job(ids[k], (first + k) % n, phase, session=first + k) for k in range(count)] if n else []
    )


class ConversationSource:
    """Sends a workload's sessions turn by turn (see the module docstring).

    A conversation is keyed by its job's phase and ``session`` number. A first turn planned
    without a number gets one when it is sent (the loop hands the same job object to
    ``request_for``, the row and ``follow``); number all of a block's jobs or none.
    """

    def __init__(
        self, workload: Workload, engine: Engine, params: RequestParams, seed: int
    ) -> None:
        if not workload.sessions:
            raise ValueError(f"workload {workload.name} has no sessions")
        self.workload = workload.with_system(params.system)  # the arm's system prompt
        self.engine = engine
        self.params = params
        self.seed = seed
        self._replies: dict[tuple[Phase, int], list[Reply]] = {}  # the replies so far
        self._prefix: dict[tuple[Phase, int], str | None] = {}  # its unique prefix
        self._numbers: dict[int, int] = {}  # id(job) -> the number given to an unnumbered job
        self._started = 0

    def start_jobs(self, count: int, phase: Phase, request_ids: Sequence[str] = ()) -> list[Job]:
        """First turns of ``count`` more conversations (``conversation_jobs``)."""
        jobs = conversation_jobs(self.workload, count, phase, request_ids, self._started)
        self._started += count
        return jobs

    def plan(self, job: Job) -> TurnPlan:
        """The turn ``job`` sends (its messages hold the replies so far)."""
        key = self._key(job)
        replies = self._replies.get(key, [])
        if len(replies) != job.turn:
            raise ValueError(f"conversation {key} has {len(replies)} replies, not {job.turn}")
        plan = plan_turn(self.workload, self.workload.sessions[job.prompt_index], replies,
                         self.seed)  # fmt: skip
        if plan is None:
            raise ValueError(f"conversation {key} has no turn {job.turn}")
        return plan

    def request_for(self, job: Job) -> HttpRequest:
        plan = self.plan(job)
        key = self._key(job)
        if key not in self._prefix:
            unique = self.engine.config.unique_prefix
            self._prefix[key] = f"[{uuid.uuid4().hex[:12]}] " if unique else None
        return request_from(
            self.engine, self.params, messages=plan.messages, tools=plan.tools,
            max_tokens=plan.max_tokens, unique_prefix=self._prefix[key],
        )  # fmt: skip

    def follow(self, job: Job, obs: Observation) -> tuple[Job, float] | None:
        """The conversation's next turn and the pause before it; None when it has ended (its
        last turn, a failed turn, or a warm-up conversation after its first turn)."""
        key = self._key(job)
        self._numbers.pop(id(job), None)
        replies = self._replies.setdefault(key, [])
        replies.append(reply_of(obs))
        next_plan = None
        if obs.outcome is Outcome.OK and job.phase is Phase.TRIAL:
            session = self.workload.sessions[job.prompt_index]
            next_plan = plan_turn(self.workload, session, replies, self.seed)
        if next_plan is None:
            self._replies.pop(key, None)
            self._prefix.pop(key, None)
            return None
        base = job.request_id.partition("#t")[0]
        rid = f"{base}#t{next_plan.turn}" if base else ""
        nxt = dataclasses.replace(job, request_id=rid, session=key[1], turn=next_plan.turn)
        return nxt, next_plan.think_s

    def prompt_id(self, job: Job) -> str:
        return turn_id(self.workload.sessions[job.prompt_index].id, job.turn)

    def session(self, job: Job) -> tuple[str | None, int | None]:
        """(``<session id>#<conversation>``, turn): a row's conversation, told apart from
        other runs of the same session in the block."""
        return f"{self.workload.sessions[job.prompt_index].id}#{self._key(job)[1]}", job.turn

    def _key(self, job: Job) -> tuple[Phase, int]:
        if job.session is not None:
            return job.phase, job.session
        if id(job) not in self._numbers:
            self._numbers[id(job)] = self._started
            self._started += 1
        return job.phase, self._numbers[id(job)]


def trace_jobs(
    trace: Trace, phase: Phase = Phase.TRIAL, request_ids: Sequence[str] = ()
) -> list[Job]:
    """One job per line of ``trace``, in arrival order (send them at ``trace.offsets_s``)."""
    ids = [*request_ids, *[""] * (len(trace.requests) - len(request_ids))]
    return [Job(ids[i], i, phase) for i in range(len(trace.requests))]


class TraceSource:
    """Replays a trace, one request per line (see the module docstring).

    ``chat`` sends each prompt as one user message (the chat template then adds tokens that a
    token count does not include); the default sends it as a raw completion prompt, whose
    token count is exact. ``texts`` caches synthesised prompts by (model, line), so blocks that
    restart the engine do not synthesise them again.
    """

    def __init__(
        self,
        trace: Trace,
        engine: Engine,
        params: RequestParams,
        *,
        seed: int = 0,
        chat: bool = False,
        texts: dict[tuple[str, int], str] | None = None,
    ) -> None:
        self.trace = trace
        self.engine = engine
        self.params = params
        self.seed = seed
        self.chat = chat
        self._texts = texts if texts is not None else {}
        self._turns = _session_turns(trace)
        self._special: int | None = None

    def start_jobs(self, count: int, phase: Phase, request_ids: Sequence[str] = ()) -> list[Job]:
        """Warm-up: the trace's first ``count`` lines (cycling), sent closed-loop."""
        ids = [*request_ids, *[""] * (count - len(request_ids))]
        n = len(self.trace.requests)
        return [Job(ids[k], k % n, phase) for k in range(count)]

    def prepare(self) -> None:
        """Synthesise every prompt given as a token count (tokenizer calls: before the block)."""
        for index in range(len(self.trace.requests)):
            self.text(index)

    def text(self, index: int) -> str:
        """The prompt text of line ``index``: as written, or synthesised to its token count."""
        request = self.trace.requests[index]
        if request.prompt is not None:
            return request.prompt
        key = (self.engine.config.model, request.line)
        if key not in self._texts:
            count = request.prompt_tokens or 1
            self._texts[key] = self._synthesize(count, self.seed + request.line)
        return self._texts[key]

    def _synthesize(self, n_tokens: int, seed: int) -> str:
        if self._special is None:
            # A raw prompt counts the special tokens the engine adds (BOS on many models); the
            # content of a chat message does not (its template's tokens are not ours to count).
            with_special = len(self.engine.tokenize("a", add_special=True))
            self._special = 0 if self.chat else with_special - len(self.engine.tokenize("a"))
        target = max(1, n_tokens - self._special)
        return synthesize_prompt(target, self.engine.tokenize, self.engine.detokenize, seed)

    def request_for(self, job: Job) -> HttpRequest:
        text = self.text(job.prompt_index)
        limit = self.trace.requests[job.prompt_index].output_tokens
        params = dataclasses.replace(self.params, max_tokens=limit)
        if self.chat:
            messages = [{"role": "user", "content": text}]
            return request_from(self.engine, params, messages=messages, ignore_eos=True)
        return request_from(self.engine, params, prompt=text, ignore_eos=True)

    def follow(self, job: Job, obs: Observation) -> tuple[Job, float] | None:
        return None  # every line has its own arrival time

    def prompt_id(self, job: Job) -> str:
        return f"line-{self.trace.requests[job.prompt_index].line}"

    def session(self, job: Job) -> tuple[str | None, int | None]:
        sid = self.trace.requests[job.prompt_index].session_id
        return (sid, self._turns[job.prompt_index]) if sid is not None else (None, None)


def conversation_source(workload: Workload, params: RequestParams, seed: int) -> SourceFactory:
    """``Block.source`` for a workload with sessions."""
    return lambda engine: ConversationSource(workload, engine, params, seed)


def trace_source(
    trace: Trace,
    params: RequestParams,
    *,
    seed: int = 0,
    chat: bool = False,
    texts: dict[tuple[str, int], str] | None = None,
) -> SourceFactory:
    """``Block.source`` for a trace: made once the engine is healthy, with every token-count
    prompt synthesised then (``prepare``), before the first request. Pass one ``texts`` dict
    to every block of a run to synthesise each prompt once per model."""
    cache = texts if texts is not None else {}

    def make(engine: Engine) -> RequestSource:
        source = TraceSource(trace, engine, params, seed=seed, chat=chat, texts=cache)
        source.prepare()
        return source

    return make


def _session_turns(trace: Trace) -> list[int]:
    """Each line's place among the earlier lines of its session (0 without a session)."""
    seen: dict[str, int] = {}
    turns = []
    for request in trace.requests:
        sid = request.session_id
        turns.append(seen.get(sid, 0) if sid is not None else 0)
        if sid is not None:
            seen[sid] = seen.get(sid, 0) + 1
    return turns
