"""The live line a pytest session shows while cases train: which case of how many, where it is, and
how long it has to go.

On a terminal it is one line per case, rewritten in place after every evaluation (pytest's own
`TerminalReporter.rewrite`, which its "collecting ..." line uses), so a suite's output stays one line
per case; the last state stays on screen when the case ends. In a log (CI, a pipe) rewriting would
pile up carriage returns, so it prints plain lines instead, at most one every `LOG_INTERVAL_S`
seconds per case plus the first and the last. Throughput cases show the round they are in.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

#: Seconds between two plain progress lines of one case where the output is not a terminal.
LOG_INTERVAL_S = 30.0


class Reporter(Protocol):
    """What is used of pytest's `TerminalReporter`."""

    def ensure_newline(self) -> None: ...

    def write(self, content: str, **markup: bool) -> None: ...

    def write_line(self, line: str, **markup: bool) -> None: ...

    def rewrite(self, line: str, **markup: bool) -> None: ...


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _headline(metrics: dict[str, float | None]) -> str:
    """Train loss and the held-out accuracy the target would use (val, else test), where evaluated."""
    parts = []
    loss = metrics.get("train_loss")
    if loss is None:
        loss = next((metrics[k] for k in ("val_loss", "test_loss") if metrics.get(k) is not None), None)
    if loss is not None:
        parts.append(f"loss {loss:.4g}")
    accuracy = next((metrics[k] for k in ("val_accuracy", "test_accuracy") if metrics.get(k) is not None), None)
    if accuracy is not None:
        parts.append(f"acc {accuracy:.3f}")
    return "  ".join(parts)


class ProgressLine:
    """``start_case`` when a case begins, then call it with each `convbench.engine.Progress`; ``round``
    before each throughput round."""

    def __init__(self, reporter: Callable[[], Reporter | None], total_cases: int, *, interactive: bool,
                 width: int = 80, clock: Callable[[], float] = time.monotonic) -> None:
        self._reporter = reporter
        self.total_cases = total_cases
        self.interactive = interactive
        self.width = width
        self._clock = clock
        self.index = 0
        self._case_id = ""
        self._started = 0.0
        self._last_print: float | None = None
        self._unshown: str | None = None  # the latest line a log has not shown yet
        self._training_since: float | None = None

    def start_case(self, case_id: str) -> None:
        self.index += 1
        self._case_id = case_id
        self._started = self._clock()
        self._training_since: float | None = None
        self._last_print = None
        self._unshown = None

    def finish_case(self) -> None:
        """The case ended (trained, diverged, failed): a log shows its latest state if it has not yet."""
        reporter = self._reporter()
        if self._unshown is not None and reporter is not None:
            reporter.ensure_newline()
            reporter.write_line(self._unshown)
        self._unshown = None

    def __call__(self, progress: Any) -> None:
        now = self._clock()
        elapsed = now - self._started
        if self._training_since is None:  # the first report: what came before it was setup, not steps
            self._training_since = now
        done = progress.step / progress.total_steps if progress.total_steps else 1.0
        training = now - self._training_since
        eta = f"  ETA {_duration(training * (1 - done) / done)}" if 0 < done < 1 else ""
        metrics = _headline(progress.metrics)
        detail = f"step {progress.step}/{progress.total_steps}  {metrics}  {_duration(elapsed)}{eta}"
        self._show(detail, last=progress.step >= progress.total_steps)

    def round(self, index: int, rounds: int) -> None:
        """Before throughput round ``index`` (from 1) of ``rounds``."""
        self._show(f"throughput round {index}/{rounds}  {_duration(self._clock() - self._started)}",
                   last=index == rounds)

    def _show(self, detail: str, *, last: bool) -> None:
        reporter = self._reporter()
        if reporter is None:
            return
        prefix = f"[{self.index}/{self.total_cases}] " if self.total_cases else ""
        line = self._fit(prefix, detail)
        now = self._clock()
        first = self._last_print is None
        if self.interactive:
            if first:
                reporter.ensure_newline()
                reporter.write(line)
            else:
                reporter.rewrite(line, erase=True)
        elif first or last or now - self._last_print >= LOG_INTERVAL_S:
            reporter.ensure_newline()
            reporter.write_line(line)
        else:
            self._unshown = line
            return
        self._unshown = None
        self._last_print = now

    def _fit(self, prefix: str, detail: str) -> str:
        """``prefix case_id  detail`` in ``width`` columns: the case id gives way first, from its middle."""
        room = self.width - 1 - len(prefix) - len(detail) - 2
        case_id = self._case_id
        if len(case_id) > room:
            keep = max(room - 1, 4)
            case_id = case_id[:keep // 2] + "~" + case_id[len(case_id) - (keep - keep // 2):]
        return f"{prefix}{case_id}  {detail}"
