"""Preflight's open-files check, and SIGTERM handled as Ctrl-C."""

from __future__ import annotations

import os
import resource
import signal
from collections.abc import Iterator

import pytest

from servelab.cli.signals import sigterm_as_interrupt
from servelab.errors import EnvironmentProblem
from servelab.runner.preflight import FD_HEADROOM, ensure_fd_limit


@pytest.fixture
def restore_nofile() -> Iterator[tuple[int, int]]:
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        yield before
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, before)


def test_a_low_soft_limit_is_raised_to_what_the_concurrency_needs(
    restore_nofile: tuple[int, int],
) -> None:
    _, hard = restore_nofile
    need = 300 + FD_HEADROOM
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.fail(f"needs a hard open-files limit of {need} or more, not {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (100, hard))
    assert ensure_fd_limit(300) == need
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (need, hard)
    assert ensure_fd_limit(10) == need  # enough already: left alone


def test_a_hard_limit_too_low_is_refused_with_the_number_needed(
    restore_nofile: tuple[int, int],
) -> None:
    _, hard = restore_nofile
    need = 10**6 + FD_HEADROOM
    if hard == resource.RLIM_INFINITY or hard >= need:
        pytest.skip("the hard limit here covers any concurrency")
    with pytest.raises(EnvironmentProblem, match=rf"`ulimit -n {need}`"):
        ensure_fd_limit(10**6)


def test_sigterm_acts_as_ctrl_c_only_while_a_command_runs() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), sigterm_as_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is before
