"""The live progress line: in place on a terminal, throttled plain lines in a log, always fitting the width."""

from __future__ import annotations

from typing import Any

import pytest

from convbench.engine import Progress
from convbench.progress_line import LOG_INTERVAL_S, ProgressLine


class FakeReporter:
    """Records what pytest's TerminalReporter would have been asked to write."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def ensure_newline(self) -> None:
        self.calls.append(("newline", ""))

    def write(self, content: str, **markup: Any) -> None:
        self.calls.append(("write", content))

    def write_line(self, line: str, **markup: Any) -> None:
        self.calls.append(("line", line))

    def rewrite(self, line: str, **markup: Any) -> None:
        assert markup.get("erase") is True  # a shorter line must not leave the longer one's tail
        self.calls.append(("rewrite", line))

    def shown(self, kind: str) -> list[str]:
        return [text for what, text in self.calls if what == kind]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def progress(step: int, total: int = 100, **metrics: float) -> Progress:
    return Progress("case", step, total, step / 10, 0.0, metrics)


def line_for(interactive: bool, width: int = 120, cases: int = 3) -> tuple[ProgressLine, FakeReporter, Clock]:
    reporter, clock = FakeReporter(), Clock()
    return ProgressLine(lambda: reporter, cases, interactive=interactive, width=width, clock=clock), reporter, clock


def test_a_terminal_gets_one_line_per_case_rewritten_in_place() -> None:
    line, reporter, clock = line_for(interactive=True)
    line.start_case("softmax-sgd-lr0.5-bs100")
    line(progress(0, train_loss=2.3, val_accuracy=0.1))
    clock.now += 30
    line(progress(25, train_loss=0.9, val_accuracy=0.7))
    assert reporter.calls[0] == ("newline", "")
    assert reporter.shown("write") == ["[1/3] softmax-sgd-lr0.5-bs100  step 0/100  loss 2.3  acc 0.100  0s"]
    # 25% done in 30 s: 90 s to go
    assert reporter.shown("rewrite") == [
        "[1/3] softmax-sgd-lr0.5-bs100  step 25/100  loss 0.9  acc 0.700  30s  ETA 1m30s"]
    assert reporter.shown("line") == []


def test_the_eta_leaves_out_the_setup_before_the_first_report() -> None:
    line, reporter, clock = line_for(interactive=True)
    line.start_case("c")
    clock.now += 50  # loading data, building the model, starting workers
    line(progress(0, train_loss=2.3))
    clock.now += 10
    line(progress(50, train_loss=1.0))
    assert reporter.shown("rewrite")[-1].endswith("1m00s  ETA 10s")  # 60 s since the start, 10 s to go


def test_a_log_gets_the_first_the_last_and_one_line_per_interval() -> None:
    line, reporter, clock = line_for(interactive=False)
    line.start_case("c")
    for step in range(0, 101, 10):
        line(progress(step, train_loss=1.0))
        clock.now += LOG_INTERVAL_S / 4
    steps = [int(text.split("step ")[1].split("/")[0]) for text in reporter.shown("line")]
    assert steps == [0, 40, 80, 100]  # every 4th evaluation is LOG_INTERVAL_S later, and the last
    assert reporter.shown("rewrite") == [] and reporter.shown("write") == []


def test_a_case_that_ends_early_shows_its_last_state_in_a_log() -> None:
    line, reporter, clock = line_for(interactive=False)
    line.start_case("diverges")
    line(progress(0, train_loss=2.3))
    clock.now += 1
    line(progress(10, train_loss=float("inf")))  # diverged: no further evaluation comes
    assert len(reporter.shown("line")) == 1
    line.finish_case()
    assert reporter.shown("line")[-1].startswith("[1/3] diverges  step 10/100  loss inf")
    line.finish_case()  # nothing new to show
    assert len(reporter.shown("line")) == 2


def test_cases_are_counted_and_throughput_rounds_shown() -> None:
    line, reporter, _ = line_for(interactive=False)
    line.start_case("first")
    line.start_case("second")
    line.round(1, 5)
    line.round(2, 5)
    line.round(5, 5)
    assert reporter.shown("line") == ["[2/3] second  throughput round 1/5  0s",
                                      "[2/3] second  throughput round 5/5  0s"]


@pytest.mark.parametrize("width", [60, 80])
def test_a_long_case_id_gives_way_to_fit_the_terminal(width: int) -> None:
    line, reporter, _ = line_for(interactive=True, width=width)
    case_id = "tf_cnn-adam-lr1e-4-bs50-filters32,64-dropout0.5-rotation+flip-seed3"
    line.start_case(case_id)
    line(progress(5, train_loss=0.5, test_accuracy=0.9))
    (shown,) = reporter.shown("write")
    assert len(shown) < width
    assert shown.startswith("[1/3] tf_") and "~" in shown
    assert shown.endswith("step 5/100  loss 0.5  acc 0.900  0s  ETA 0s")


def test_no_reporter_means_no_output() -> None:
    line = ProgressLine(lambda: None, 1, interactive=True)
    line.start_case("c")
    line(progress(1))
    line.finish_case()  # nothing to write to, nothing raised
