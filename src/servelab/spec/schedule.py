"""The order in which blocks run: interleaved (A B, B A, ...) or randomised with the seed.

Owns the plan of an experiment: one block per arm and concurrency level in every round, so
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
    concurrency: int


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
) -> list[BlockPlan]:
    plan: list[BlockPlan] = []
    for r in range(rounds):
        lv = list(levels) if r % 2 == 0 else list(reversed(levels))
        for arm in round_order(arms, r, schedule, seed):
            for c in lv:
                plan.append(BlockPlan(len(plan), r, arm, c))
    return plan


def request_id(block: int, arm: str, concurrency: int, i: int) -> str:
    return f"b{block}/{arm}/c{concurrency}/{i}"


def prompt_index(block: int, i: int, per_block: int, n_prompts: int) -> int:
    """Every arm asks the same prompts in the same round (a paired design)."""
    return (block * per_block + i) % n_prompts
