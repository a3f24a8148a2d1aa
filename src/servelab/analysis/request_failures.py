"""Whether a run's failed requests leave its figures unusable: the rule behind exit code 8.

Owns the check ``servelab run``, ``resume`` and ``bench`` make once the report is written (so
nothing is lost): an arm with no successful trial request, or an arm whose share of failed trial
requests is above the run's ``max_failure_rate``, raises ``RequestsFailed`` with one line naming
the worst arm, its counts and outcomes, and where the errors are. Pure: ``ArmSummary`` records in.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from servelab.errors import RequestsFailed
from servelab.store.summary import ArmSummary

ArmCounts = ArmSummary


def _counts(arm: ArmSummary) -> tuple[int, int, Mapping[str, int]]:
    return arm.n_ok, arm.n_failed, arm.failures


def _failure_rate(arm: ArmCounts) -> float:
    n_ok, n_failed, _ = _counts(arm)
    return 1.0 if n_ok == 0 else n_failed / (n_ok + n_failed)


def failing_arms(arms: Mapping[str, ArmCounts], max_failure_rate: float) -> list[str]:
    """The arms with no successful trial request or too many failed, worst first."""
    bad = [a for a, s in arms.items() if _counts(s)[0] == 0
           or _failure_rate(s) > max_failure_rate]  # fmt: skip
    return sorted(bad, key=lambda a: -_failure_rate(arms[a]))


def check_request_failures(
    arms: Mapping[str, ArmCounts],
    max_failure_rate: float,
    run_root: Path,
    label: str = "arm {!r}",
) -> None:
    """Raise ``RequestsFailed`` if any arm failed too often; ``label`` formats an arm's name."""
    bad = failing_arms(arms, max_failure_rate)
    if not bad:
        return
    n_ok, n_failed, failures = _counts(arms[bad[0]])
    how = (
        "no trial request succeeded"
        if n_ok == 0
        else f"{_failure_rate(arms[bad[0]]):.1%} is above max_failure_rate {max_failure_rate:.1%}"
    )
    listed = ", ".join(f"{k}: {v}" for k, v in sorted(failures.items(), key=lambda kv: -kv[1]))
    outcomes = f"; {listed}" if failures else ""
    more = f" (and {len(bad) - 1} more arm(s))" if len(bad) > 1 else ""
    raise RequestsFailed(
        f"{label.format(bad[0])}: {n_failed} of {n_ok + n_failed} trial requests failed "
        f"({how}{outcomes}){more}; read `error` in {run_root / 'requests.jsonl'} and the engine "
        f"log; the report is in {run_root}"
    )
