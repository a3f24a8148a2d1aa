"""Signals that stop servelab: SIGTERM is handled exactly as Ctrl-C (SIGINT) is.

Owns the process's SIGTERM handler while a command runs. A run stopped by ``kill`` (a job
scheduler, a container stop, a CI timeout) keeps every row already written, is marked
``interrupted`` with the resume hint, and exits 130, like one stopped from the keyboard, instead
of dying at once with status ``failed``. The handler hands the signal to whatever handles
SIGINT at that moment: asyncio's handler while a run's event loop is up (it cancels the run,
whose readers are woken at once), Python's default (``KeyboardInterrupt``) otherwise.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType


def _as_interrupt(signum: int, frame: FrameType | None) -> None:
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)
        return
    raise KeyboardInterrupt  # SIGINT ignored or default (a background job): interrupt anyway


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While the block runs, SIGTERM acts as SIGINT; the previous handler comes back after."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers (a command run inside a test's thread)
        return
    previous = signal.signal(signal.SIGTERM, _as_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
