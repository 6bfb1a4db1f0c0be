"""``--convbench-resume``: a sweep that was interrupted (Ctrl-C, a killed job, a lost node) goes on where it
stopped instead of training its finished cases again.

A convergence case is not trained when the results file already holds its result for the same case
definition (every field of the case at the session's scale), the same scale, the same convbench version and
the same machine (host name): the stored result is reported instead, to the test's assertions, the session's
summary and ``--benchmark-json`` (its ``extra_info["convbench"]["resumed"]`` says from which session, and
pytest-benchmark's time for it is the stored run's training and evaluation time). Anything else trains: a
changed case, another version, another machine, a line written before lines recorded convbench's version,
a case that failed before it measured anything. Throughput cases are always measured again: a time is only
comparable with times taken in the same session.

Under torchrun every case trains (ranks on other hosts could not decide alike). Only the results file is
read (the default ``.convbench/results.jsonl``, or ``--convbench-results``); the resumed cases are not
written to it again.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from convbench import __version__
from convbench.result import RECORD_SCHEMA

if TYPE_CHECKING:
    from convbench.case import Case
    from convbench.result import RunResult

#: Key of the results-file line that says which convbench wrote it (lines before it never resume).
VERSION_KEY = "convbench_version"
_INDEX = pytest.StashKey["dict[str, dict[str, Any]]"]()
_RESUMED = pytest.StashKey[list]()


def add_option(group: Any) -> None:
    group.addoption("--convbench-resume", action="store_true", default=False,
                    help="do not train convergence cases whose result the results file already holds for the same "
                         "case, scale, convbench version and machine: report the stored result (marked resumed in "
                         "--benchmark-json) and train only the rest")


def case_key(case: dict[str, Any], scale: str | None, version: str, machine: str | None) -> str:
    """What must be equal for a stored result to stand for a case: its definition, scale, version and host."""
    return json.dumps([case, scale, version, machine], sort_keys=True, allow_nan=False, default=str)


def index(path: Path) -> dict[str, dict[str, Any]]:
    """The results file's convergence results by `case_key`, the last line of each key kept; lines that
    cannot be read are skipped (the report says which and why)."""
    found: dict[str, dict[str, Any]] = {}
    try:
        data = path.read_bytes()
    except OSError:
        return found
    for raw in data.split(b"\n"):
        try:
            line = json.loads(raw)
            result = line["extra_info"]["convbench"]
            usable = (line.get("schema") == RECORD_SCHEMA and isinstance(result, dict) and "schema" in result
                      and isinstance(result.get("case"), dict))
        except (ValueError, KeyError, TypeError):
            continue
        if usable:
            machine = (line.get("machine") or {}).get("node") if isinstance(line.get("machine"), dict) else None
            key = case_key(result["case"], result.get("scale"), line.get(VERSION_KEY), machine)
            found[key] = line
    return found


def stored(config: pytest.Config, case: Case, scale: str, results: Path | None) -> dict[str, Any] | None:
    """The results-file line whose result stands for ``case`` (at ``scale``) in this session, or None (train it)."""
    if results is None or not config.getoption("convbench_resume", False):
        return None
    from convbench.distributed import launched_by_torchrun

    if launched_by_torchrun():  # every rank must decide alike, and ranks on other hosts would not: all train
        return None
    if _INDEX not in config.stash:
        config.stash[_INDEX] = index(results)
        config.pluginmanager.register(_Summary(config, results), "convbench-resume-summary")
    return config.stash[_INDEX].get(case_key(case.to_dict(), scale, __version__, platform.node()))


def replay(config: pytest.Config, benchmark: Any, record: dict[str, Any], line: dict[str, Any]) -> RunResult:
    """Report the stored result as this test's: into ``record`` (the benchmark's ``extra_info``), and to
    pytest-benchmark as one round lasting as long as the stored run trained and evaluated."""
    from convbench.result import RunResult

    result = RunResult.from_dict(line["extra_info"]["convbench"])
    record.update(result.to_dict())
    record["resumed"] = {"session": line.get("session"), "time": line.get("time"), "test": line.get("fullname")}
    benchmark.extra_info["convbench"] = record
    timing = result.timing
    duration = (timing.train_s or 0.0) + (timing.eval_s or 0.0)
    timer, benchmark._timer = benchmark._timer, _StoredDuration(duration)
    try:
        benchmark.pedantic(lambda: result, rounds=1, iterations=1)
    finally:
        benchmark._timer = timer
    config.stash.setdefault(_RESUMED, []).append(record.get("case_id"))
    return result


def is_resumed(record: dict[str, Any]) -> bool:
    """Whether a test's record is a stored result reported again (the results file has it already)."""
    return bool(record.get("resumed"))


class _StoredDuration:
    """A clock for pytest-benchmark that reads 0, then the stored run's duration: the round it times is the
    stored run, not the microseconds taken to hand its result back."""

    __name__ = "convbench-resume-stored-duration"

    def __init__(self, duration: float) -> None:
        self._readings = iter((0.0, duration))

    def __call__(self) -> float:
        return next(self._readings, 0.0)


class _Summary:
    """One line at the end of the session: how many cases were resumed, from which file."""

    def __init__(self, config: pytest.Config, results: Path) -> None:
        self._config, self._results = config, results

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        resumed = self._config.stash.get(_RESUMED, [])
        terminalreporter.write_line(f"convbench resume: {len(resumed)} case{'s' * (len(resumed) != 1)} reported from "
                                    f"{self._results} without training; the others trained")
