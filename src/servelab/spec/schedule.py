"""The order in which blocks run: interleaved (A B, B A, ...) or randomised with the seed.

Owns the plan of an experiment: one block per arm and load level (a concurrency, or an
open-loop rate) in every round, so
blocks with the same index share the machine's drift, and the request ids inside each block.
Round *r*'s order depends only on the arms, *r* and the seed, so adding rounds (sequential
stopping, resume) never reorders rounds already run. Pure.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class BlockPlan:
    position: int  # index in execution order
    block: int  # the round
    arm: str
    concurrency: int  # closed loop: in flight; open loop: the cap (0: none)
    rate_rps: float | None = None  # open loop: requests per second

    @property
    def level_id(self) -> str:
        """The level in request ids: ``c4`` or ``r2``."""
        return f"c{self.concurrency}" if self.rate_rps is None else f"r{self.rate_rps:g}"


def round_order(arms: list[str], r: int, schedule: Literal["interleaved", "randomized"],
                seed: int) -> list[str]:  # fmt: skip
    if schedule == "randomized":
        order = list(arms)
        random.Random(f"{seed}:{r}").shuffle(order)
        return order
    return list(arms) if r % 2 == 0 else list(reversed(arms))


def plan_blocks(
    arms: list[str],
    rounds: int,
    levels: tuple[int, ...],
    schedule: Literal["interleaved", "randomized"] = "interleaved",
    seed: int = 0,
    rates: tuple[float, ...] = (),
) -> list[BlockPlan]:
    """Every round: each arm (in the round's order) at each level, levels reversed in odd
    rounds. With ``rates`` the levels are those rates, each capped at ``levels[0]`` in flight
    (0: no cap)."""
    steps: list[tuple[int, float | None]] = (
        [(levels[0] if levels else 0, r) for r in rates] if rates else [(c, None) for c in levels]
    )
    plan: list[BlockPlan] = []
    for r in range(rounds):
        lv = steps if r % 2 == 0 else list(reversed(steps))
        for arm in round_order(arms, r, schedule, seed):
            for c, rate in lv:
                plan.append(BlockPlan(len(plan), r, arm, c, rate))
    return plan


def request_id(
    block: int, arm: str, concurrency: int, i: int, rate_rps: float | None = None
) -> str:
    level = f"c{concurrency}" if rate_rps is None else f"r{rate_rps:g}"
    return f"b{block}/{arm}/{level}/{i}"


def prompt_index(block: int, i: int, per_block: int, n_prompts: int) -> int:
    """Every arm asks the same prompts in the same round (a paired design)."""
    return (block * per_block + i) % n_prompts
