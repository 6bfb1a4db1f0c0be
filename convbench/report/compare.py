"""`convbench compare BASE NEW`: the cases of two runs of a suite matched up, each judged, and the verdict printed.

Convergence cases are matched by test name and scale; the seeds of a case (test names that differ only
in their ``seedN`` token) are judged together. Throughput cases are matched by test name. What makes a
case a regression is `convbench.report.regression` (quality: the headline metric, steps to target,
convergence) and `convbench.report.time_rule` (train times and throughput rounds). Two files with no
case in common are an error, not "no regressions": they are runs of different suites.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from convbench.errors import ReportInputError
from convbench.report import load as loader
from convbench.report import parallel
from convbench.report.formats import one_line, to_markdown
from convbench.report.identity import Headline, headline, seedless_test_name
from convbench.report.regression import (
    CaseChange,
    Rules,
    ThroughputChange,
    compare_case,
    compare_throughput,
    mean,
)
from convbench.report.time_rule import BUSY, TOO_FEW

Key = tuple[str, Any]  # (test name without the seed token, scale); a throughput case's scale is THROUGHPUT
THROUGHPUT = "throughput"


def cases_of(loaded: loader.LoadedFile, warnings: list[str] | None = None) -> dict[Key, list[dict[str, Any]]]:
    """The file's runs (the latest of each test and scale), per case: the seeds of a case together.

    A results file appended to from several machines or commits can hold one case's runs from each;
    they are not seeds of one measurement. A case keeps the runs of the machine and commit it was last
    run on, and a line in ``warnings`` says how many runs were set aside."""
    entries = sorted(loaded.records + loaded.failed, key=lambda r: r["position"])
    latest, _ = loader.latest_only(entries)
    cases: dict[Key, list[dict[str, Any]]] = {}
    for record in latest:
        cases.setdefault((seedless_test_name(record["test"]), record.get("scale")), []).append(record)
    set_aside = 0
    for key, runs in cases.items():
        origin = _origin(max(runs, key=lambda r: r["position"]))
        kept = [run for run in runs if _origin(run) == origin]
        set_aside += len(runs) - len(kept)
        cases[key] = kept
    if set_aside and warnings is not None:
        warnings.append(f"{loaded.path}: {set_aside} run(s) of cases also run on another machine or commit in "
                        f"the same file set aside; each case is compared on the machine and commit it last ran on")
    return cases


def _origin(record: dict[str, Any]) -> tuple[Any, Any]:
    return record.get("machine"), record.get("commit")


def throughput_of(loaded: loader.LoadedFile) -> dict[Key, dict[str, Any]]:
    """The file's throughput results by test name, the last reading of each."""
    return {(entry["test"], THROUGHPUT): entry for entry in loaded.throughput}


@dataclass
class Comparison:
    text: str = ""
    changes: list[CaseChange] = field(default_factory=list)
    throughput: list[ThroughputChange] = field(default_factory=list)
    only_base: list[Key] = field(default_factory=list)
    only_new: list[Key] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def compared(self) -> list[CaseChange | ThroughputChange]:
        return [*self.changes, *self.throughput]

    @property
    def regressions(self) -> list[CaseChange | ThroughputChange]:
        return [c for c in self.compared if c.regressed]


def compare_files(base: str | Path, new: str | Path, rules: Rules | None = None) -> Comparison:
    """Compare NEW with BASE case by case. An unreadable file is an error and nothing is compared; entries
    left out of a readable file are errors too (one line each), and the rest is still compared. Files with
    no case in common are an error."""
    rules = rules or Rules()
    comparison = Comparison()
    loaded = _load_both(comparison, base, new)
    if loaded is None:
        return comparison
    base_cases, new_cases = cases_of(loaded[0], comparison.warnings), cases_of(loaded[1], comparison.warnings)
    base_speed, new_speed = throughput_of(loaded[0]), throughput_of(loaded[1])
    metric = headline(loaded[0].records + loaded[1].records)
    comparison.changes = [compare_case(CaseChange(key[0], key[1], runs, new_cases[key], metric), rules)
                          for key, runs in base_cases.items() if key in new_cases]
    comparison.throughput = [compare_throughput(ThroughputChange(key[0], entry, new_speed[key]), rules.time)
                             for key, entry in base_speed.items() if key in new_speed]
    base_keys, new_keys = [*base_cases, *base_speed], [*new_cases, *new_speed]
    comparison.only_base = [key for key in base_keys if key not in new_keys]
    comparison.only_new = [key for key in new_keys if key not in base_keys]
    if not comparison.compared:
        comparison.errors.append(_nothing_matches(base, base_keys, new, new_keys))
        return comparison
    comparison.text = _text(comparison, base, new, metric, rules)
    return comparison


def _load_both(comparison: Comparison, base: str | Path,
               new: str | Path) -> tuple[loader.LoadedFile, loader.LoadedFile] | None:
    """Both files, their warnings and left-out entries noted in ``comparison``; None if either is unreadable."""
    loaded = []
    for path in (base, new):
        try:
            loaded.append(loader.load(path))
        except ReportInputError as exc:
            comparison.errors.append(str(exc))
    if len(loaded) < 2:
        return None
    for file in loaded:
        comparison.warnings += file.warnings
        comparison.errors += file.rejected
    return loaded[0], loaded[1]


def _nothing_matches(base: str | Path, base_keys: list[Key], new: str | Path, new_keys: list[Key]) -> str:
    """The one line for two files with no case in common, with a case of each to show why."""
    def first(keys: list[Key]) -> str:
        return f", e.g. {_key_name(keys[0])}" if keys else ""

    return one_line(f"no case of BASE ({base}: {len(base_keys)} cases{first(base_keys)}) matches one of NEW "
                    f"({new}: {len(new_keys)} cases{first(new_keys)}): compare runs of the same suite (cases "
                    "are matched by test name and scale)")


def _key_name(key: Key) -> str:
    name, scale = key
    return f"{name} [{scale}]"


def _mean(values: list[float]) -> str:
    return format(mean(values), ".4g") if values else "-"


def _converged(change: CaseChange) -> str:
    counts = [(change.converged_count(runs), len(runs)) for runs in (change.base, change.new)]
    if all(n == 1 for _, n in counts):
        return " -> ".join("yes" if k else "no" for k, _ in counts)
    return " -> ".join(f"{k}/{n}" for k, n in counts)


def _status(change: CaseChange | ThroughputChange) -> str:
    status = "REGRESSION: " + "; ".join(change.problems) if change.problems else "ok"
    return status + (" (" + "; ".join(change.notes) + ")" if change.notes else "")


def _percent(change: float | None) -> str:
    return "-" if change is None else f"{change:+.1%}"


def _steps(change: CaseChange) -> str:
    """Mean steps to target, ``BASE -> NEW``, where every run on both sides reached it."""
    sides = [change.steps_to_target(runs) for runs in (change.base, change.new)]
    return " -> ".join(_mean(s) for s in sides) if all(sides) else "-"


def _case_table(changes: list[CaseChange], metric: Headline) -> str:
    with_steps = any(c.steps_change is not None for c in changes)
    rows = []
    for c in changes:
        seeds = f"{len(c.base)}" if len(c.base) == len(c.new) else f"{len(c.base)} -> {len(c.new)}"
        rows.append({
            "case": c.name, "scale": c.scale, "seeds": seeds,
            "train_s base": _mean(c.times(c.base)), "train_s new": _mean(c.times(c.new)),
            "time": _percent(c.time_change),
            f"{metric.column} base": _mean(c.metrics(c.base)), f"{metric.column} new": _mean(c.metrics(c.new)),
            "change": "-" if c.metric_change is None else f"{c.metric_change:+.4g}",
            **({"steps_to_target": _steps(c)} if with_steps else {}),
            "converged": _converged(c), "status": _status(c),
        })
    return to_markdown(pd.DataFrame(rows), numbers=False)


def _throughput_table(changes: list[ThroughputChange]) -> str:
    rows = [{"case": c.name, "rounds": f"{c.base['rounds']}" if c.base["rounds"] == c.new["rounds"]
             else f"{c.base['rounds']} -> {c.new['rounds']}",
             "samples_per_s base": loader.whole(c.base["samples_per_s"]),
             "samples_per_s new": loader.whole(c.new["samples_per_s"]),
             "time": _percent(c.time_change), "status": _status(c)} for c in changes]
    return to_markdown(pd.DataFrame(rows), numbers=False)


def _rule_lines(metric: Headline, rules: Rules) -> list[str]:
    worse = "down" if metric.higher_is_better else "up"
    return [f"regressions: a case that stopped converging; {metric.column} {worse} by more than "
            f"{rules.metric_threshold:g} or steps to target up by more than {rules.steps_threshold * 100:.4g}% (with "
            "several seeds, also beyond 2 x the pooled standard error)",
            f"slowdowns: a train time (a throughput round) {rules.time.describe()}"]


def _unjudged_times(comparison: Comparison, rules: Rules) -> list[str]:
    """A line saying how many cases' times could not be judged, and why: times unjudged are times unchecked."""
    compared = comparison.compared
    few = sum(c.time_status == TOO_FEW for c in compared)
    busy = sum(c.time_status == BUSY for c in compared)
    shared = sum(c.time_status == parallel.NOT_COMPARABLE for c in compared)
    if not few and not busy and not shared:
        return []
    why = [f"{few} with too few runs or rounds a side (--min-time-samples)"] if few else []
    why += [f"{busy} measured on a busy machine (--judge-busy)"] if busy else []
    why += [f"{shared} measured beside other cases (pytest -n) on one side only"] if shared else []
    cases = f"{len(compared)} case{'s' * (len(compared) != 1)}"
    return [f"times not judged for {few + busy + shared} of {cases}: {'; '.join(why)}"]


def _text(comparison: Comparison, base: str | Path, new: str | Path, metric: Headline, rules: Rules) -> str:
    lines = [f"BASE {base}  ->  NEW {new}", *_rule_lines(metric, rules)]
    if comparison.changes:
        lines += ["", _case_table(comparison.changes, metric)]
    if comparison.throughput:
        lines += ["", "throughput cases (time: of a round, per sample):", "",
                  _throughput_table(comparison.throughput)]
    for side, keys in (("BASE", comparison.only_base), ("NEW", comparison.only_new)):
        if keys:
            lines += ["", f"only in {side} ({len(keys)}, not compared):"]
            lines += [one_line(f"  {_key_name(key)}") for key in keys]
    regressions, throughput = comparison.regressions, len(comparison.throughput)
    lines += ["", *_unjudged_times(comparison, rules),
              f"{len(comparison.compared)} case{'s' * (len(comparison.compared) != 1)} compared"
              + (f" ({throughput} throughput)" if throughput else "")
              + ": " + (f"{len(regressions)} regression(s)" if regressions else "no regressions")]
    return "\n".join(lines)
