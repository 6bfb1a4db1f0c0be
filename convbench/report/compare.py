"""`convbench compare BASE NEW`: per case, how train time and the final metric changed, and whether it regressed.

Cases are matched by test name and scale; the seeds of a case (test names that differ only in their
``seedN`` token) are compared as means. A case regresses when its train time grew by more than the
time threshold (relative), its final metric got worse by more than the metric threshold (absolute), or
it converged in BASE (every seed: not diverged, target reached if it had one, test passed) and not in
NEW. With several seeds a change must also exceed twice the pooled standard error of the difference of
the means, so that seed noise is not reported as a regression.

A number NEW cannot be compared by is never a pass: a headline metric that BASE recorded and NEW did not
(missing, NaN or infinite), or a train time that is not finite, is a regression that says so.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from convbench.errors import ReportInputError
from convbench.report import load as loader
from convbench.report.formats import one_line, to_markdown
from convbench.report.identity import Headline, headline, seedless_test_name

Key = tuple[str, Any]  # (test name without the seed token, scale)


def converged(record: dict[str, Any]) -> tuple[bool, str | None]:
    """Whether a run converged, and if not, why."""
    if record.get("failed_before_training"):
        return False, "failed before training"
    if record["diverged"]:
        return False, "diverged"
    target = record.get("target") or {}
    if target.get("value") is not None and not target.get("reached"):
        return False, "target not reached"
    if record.get("outcome") not in (None, "passed"):
        return False, f"test {record['outcome']}"
    return True, None


def mean(values: list[float]) -> float:
    """The mean, non-finite values included (NaN for infinities of both signs, where fmean would raise)."""
    if all(map(math.isfinite, values)):
        return statistics.fmean(values)
    return sum(values) / len(values)


def _finite(values: list[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)]


def _not_comparable(what: str, values: list[float | None]) -> str | None:
    """``final_test_accuracy missing in NEW (1 of 3 runs)``, or ``... nan in NEW``; None when all are finite."""
    bad = [v for v in values if v is None or not math.isfinite(v)]
    if not bad:
        return None
    shown = list(dict.fromkeys("missing" if v is None else format(v, ".4g") for v in bad))
    count = f" ({len(bad)} of {len(values)} runs)" if len(values) > 1 else ""
    return f"{what} {'/'.join(shown)} in NEW{count}"


def pooled_standard_error(a: list[float], b: list[float]) -> float:
    """Standard error of mean(b) - mean(a) from the pooled sample variance; 0 without any spread to pool."""
    if not a or not b or len(a) + len(b) <= 2:
        return 0.0
    squares = sum((x - statistics.fmean(a)) ** 2 for x in a) + sum((x - statistics.fmean(b)) ** 2 for x in b)
    variance = squares / (len(a) + len(b) - 2)
    return math.sqrt(variance * (1 / len(a) + 1 / len(b)))


@dataclass
class CaseChange:
    name: str
    scale: Any
    base: list[dict[str, Any]]
    new: list[dict[str, Any]]
    headline: Headline
    time_change: float | None = None  # relative
    metric_change: float | None = None  # absolute, new - base
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @staticmethod
    def times(runs: list[dict[str, Any]]) -> list[float]:
        return [r["timing"]["train_s"] for r in runs
                if not r.get("failed_before_training") and r["timing"].get("train_s") is not None]

    def headline_values(self, runs: list[dict[str, Any]]) -> list[float | None]:
        """The headline metric of each run that trained (None where it was not recorded)."""
        return [self.headline.value(r) for r in runs if not r.get("failed_before_training")]

    def metrics(self, runs: list[dict[str, Any]]) -> list[float]:
        return [value for value in self.headline_values(runs) if value is not None]

    def converged_count(self, runs: list[dict[str, Any]]) -> int:
        return sum(converged(r)[0] for r in runs)

    @property
    def regressed(self) -> bool:
        return bool(self.problems)


def compare_case(change: CaseChange, time_threshold: float, metric_threshold: float) -> CaseChange:
    _compare_times(change, time_threshold)
    _compare_metrics(change, metric_threshold)
    base_converged = change.converged_count(change.base) == len(change.base)
    if base_converged and change.converged_count(change.new) < len(change.new):
        reasons = dict.fromkeys(reason for ok, reason in map(converged, change.new) if not ok)
        change.problems.append(f"stopped converging ({', '.join(reasons)})")
    return change


def _compare_times(change: CaseChange, time_threshold: float) -> None:
    base_t, new_all = _finite(change.times(change.base)), change.times(change.new)
    new_t = _finite(new_all)
    if base_t and (problem := _not_comparable("train time", new_all)):
        change.problems.append(problem)
    if base_t and new_t and statistics.fmean(base_t) > 0:
        base_mean = statistics.fmean(base_t)
        change.time_change = (statistics.fmean(new_t) - base_mean) / base_mean
        noise = 2 * pooled_standard_error(base_t, new_t) / base_mean
        if change.time_change > max(time_threshold, noise):
            change.problems.append(f"slower: {change.time_change:+.1%} > {max(time_threshold, noise):.1%}"
                                   + (" (2 SE)" if noise > time_threshold else ""))
        elif change.time_change > time_threshold:
            change.notes.append(f"time {change.time_change:+.1%} within noise (2 SE = {noise:.1%})")


def _compare_metrics(change: CaseChange, metric_threshold: float) -> None:
    column = change.headline.column
    base_all, new_values = change.metrics(change.base), change.headline_values(change.new)
    base_m, new_m = _finite(base_all), _finite([v for v in new_values if v is not None])
    if base_m and (problem := _not_comparable(column, new_values)):
        change.problems.append(problem)
    elif not base_m and base_all and new_m:
        change.notes.append(f"{column} in BASE is {format(mean(base_all), '.4g')}: not compared")
    if base_m and new_m:
        change.metric_change = statistics.fmean(new_m) - statistics.fmean(base_m)
        worse = -change.metric_change if change.headline.higher_is_better else change.metric_change
        noise = 2 * pooled_standard_error(base_m, new_m)
        if worse > max(metric_threshold, noise):
            limit = f"{max(metric_threshold, noise):.4g}" + (" (2 SE)" if noise > metric_threshold else "")
            change.problems.append(f"{column} {change.metric_change:+.4g}, worse by more than {limit}")
        elif worse > metric_threshold:
            change.notes.append(f"{column} {change.metric_change:+.4g} within noise (2 SE = {noise:.4g})")


def cases_of(loaded: loader.LoadedFile) -> dict[Key, list[dict[str, Any]]]:
    """The file's runs (the latest of each test and scale), per case: the seeds of a case together."""
    entries = sorted(loaded.records + loaded.failed, key=lambda r: r["position"])
    latest, _ = loader.latest_only(entries)
    cases: dict[Key, list[dict[str, Any]]] = {}
    for record in latest:
        cases.setdefault((seedless_test_name(record["test"]), record.get("scale")), []).append(record)
    return cases


@dataclass
class Comparison:
    text: str = ""
    changes: list[CaseChange] = field(default_factory=list)
    only_base: list[Key] = field(default_factory=list)
    only_new: list[Key] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[CaseChange]:
        return [c for c in self.changes if c.regressed]


def compare_files(base: str | Path, new: str | Path, *, time_threshold: float = 0.10,
                  metric_threshold: float = 0.01) -> Comparison:
    """Compare NEW with BASE case by case. An unreadable file is an error and nothing is compared; entries
    left out of a readable file are errors too (one line each), and the rest is still compared."""
    comparison = Comparison()
    loaded = []
    for path in (base, new):
        try:
            loaded.append(loader.load(path))
        except ReportInputError as exc:
            comparison.errors.append(str(exc))
    if len(loaded) < 2:
        return comparison
    for file in loaded:
        comparison.warnings += file.warnings
        comparison.errors += file.rejected
    base_cases, new_cases = cases_of(loaded[0]), cases_of(loaded[1])
    metric = headline(loaded[0].records + loaded[1].records)
    for key, base_runs in base_cases.items():
        if key in new_cases:
            change = CaseChange(key[0], key[1], base_runs, new_cases[key], metric)
            comparison.changes.append(compare_case(change, time_threshold, metric_threshold))
        else:
            comparison.only_base.append(key)
    comparison.only_new = [key for key in new_cases if key not in base_cases]
    comparison.text = _text(comparison, base, new, metric, time_threshold, metric_threshold)
    return comparison


def _mean(values: list[float]) -> str:
    return format(mean(values), ".4g") if values else "-"


def _converged(change: CaseChange) -> str:
    counts = [(change.converged_count(runs), len(runs)) for runs in (change.base, change.new)]
    if all(n == 1 for _, n in counts):
        return " -> ".join("yes" if k else "no" for k, _ in counts)
    return " -> ".join(f"{k}/{n}" for k, n in counts)


def _text(comparison: Comparison, base: str | Path, new: str | Path, metric: Headline, time_threshold: float,
          metric_threshold: float) -> str:
    worse = "down" if metric.higher_is_better else "up"
    lines = [f"BASE {base}  ->  NEW {new}",
             f"a regression: train time up by more than {time_threshold:.1%}, {metric.column} {worse} by more than "
             f"{metric_threshold:g}, or a case that stopped converging; with several seeds a change must also "
             "exceed 2 x the pooled standard error"]
    if comparison.changes:
        rows = []
        for c in comparison.changes:
            seeds = f"{len(c.base)}" if len(c.base) == len(c.new) else f"{len(c.base)} -> {len(c.new)}"
            status = "REGRESSION: " + "; ".join(c.problems) if c.problems else "ok"
            if c.notes:
                status += " (" + "; ".join(c.notes) + ")"
            rows.append({
                "case": c.name, "scale": c.scale, "seeds": seeds,
                "train_s base": _mean(c.times(c.base)), "train_s new": _mean(c.times(c.new)),
                "time": "-" if c.time_change is None else f"{c.time_change:+.1%}",
                f"{metric.column} base": _mean(c.metrics(c.base)), f"{metric.column} new": _mean(c.metrics(c.new)),
                "change": "-" if c.metric_change is None else f"{c.metric_change:+.4g}",
                "converged": _converged(c), "status": status,
            })
        lines += ["", to_markdown(pd.DataFrame(rows), numbers=False)]
    for side, keys in (("BASE", comparison.only_base), ("NEW", comparison.only_new)):
        if keys:
            lines += ["", f"only in {side} ({len(keys)}, not compared):"]
            lines += [one_line(f"  {name} [{scale}]") for name, scale in keys]
    regressions = comparison.regressions
    lines += ["", f"{len(comparison.changes)} cases compared: "
              + (f"{len(regressions)} regression(s)" if regressions else "no regressions")]
    return "\n".join(lines)
