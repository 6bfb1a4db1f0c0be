"""A time limit for a case that trains in this process (world size 1, or a throughput round).

Multi-process cases are ended by killing their workers (`convbench.pool`). A case that trains in
the session's own process cannot be killed without killing the session and every result still to
come, so it is interrupted instead: ``SIGALRM`` raises `CaseTimeoutError` in the main thread at the
next Python bytecode, and the run unwinds like any failed run (its sampler stops, the test fails with
one line, the session goes on with the next case). Training returns to Python between every torch
operation, so this ends infinite loops, stuck data pipelines and waits on locks or events.

It cannot interrupt a single C call that never returns (a deadlocked kernel, a blocking read in an
extension that ignores signals), and it needs POSIX signals on the main thread. Where those are not
available the limit is not enforced, and `time_limit` says so in a warning instead of pretending.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
import warnings
from collections.abc import Iterator
from types import FrameType

from convbench.errors import CaseTimeoutError, ConvbenchError


class TimeLimitWarning(UserWarning):
    """A time limit was asked for where it cannot be enforced (no SIGALRM, or not the main thread)."""


def can_interrupt() -> bool:
    """Whether `time_limit` can interrupt code running on this thread."""
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


#: How long an alarm that went off during an import waits before trying again.
_IMPORT_GRACE_S = 0.05


def _importing(frame: FrameType | None) -> bool:
    """Whether ``frame`` or a caller is executing an import (importlib's bootstrap is on the stack)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


@contextlib.contextmanager
def time_limit(seconds: float | None, what: str) -> Iterator[None]:
    """Raise `CaseTimeoutError` ("{what} did not finish within {seconds} s ...") if the block runs longer.

    ``None`` means no limit. An outer alarm that is due sooner (pytest-timeout's, say) is left in
    charge; an outer alarm due later is put back, less the time spent here, when the block ends.
    """
    if seconds is None:
        yield
        return
    if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds > 0):
        raise ConvbenchError(f"invalid time limit {seconds!r} for {what}: a positive, finite number of seconds")
    if not can_interrupt():
        warnings.warn(f"the {seconds:g} s time limit of {what} is not enforced here: it needs SIGALRM on the "
                      "main thread", TimeLimitWarning, stacklevel=3)
        yield
        return

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        if _importing(frame):  # a module half imported would stay broken for every later case
            signal.setitimer(signal.ITIMER_REAL, _IMPORT_GRACE_S)
            return
        raise CaseTimeoutError(f"{what} did not finish within {seconds:g} s in this process; it was interrupted")

    outer_delay, outer_interval = signal.setitimer(signal.ITIMER_REAL, 0)  # disarmed before our handler goes in
    if outer_delay and outer_delay <= seconds:  # the outer deadline comes first: it governs
        signal.setitimer(signal.ITIMER_REAL, outer_delay, outer_interval)
        yield
        return
    outer_handler = signal.signal(signal.SIGALRM, on_alarm)
    started = time.monotonic()
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 1e-6))
    try:
        yield
    finally:
        try:
            signal.setitimer(signal.ITIMER_REAL, 0)
        finally:  # even if the alarm went off on the way out, the outer handler and alarm come back
            signal.signal(signal.SIGALRM, outer_handler)
            if outer_delay:
                remaining = outer_delay - (time.monotonic() - started)
                signal.setitimer(signal.ITIMER_REAL, max(remaining, 1e-6), outer_interval)
