"""What makes one case of NEW a regression against BASE: the rules `convbench compare` applies per case.

Quality and time are judged apart, because a loaded machine moves one and not the other:

* **Quality** (the headline metric, steps to target, whether the case converged) does not depend on
  the machine's load: on one platform (device type, torch version) the same code and seed give the
  same numbers, run after run. Identical code therefore never changes them, and the thresholds
  (``metric_threshold``, ``steps_threshold``) are allowances for what a code change may cost, not for
  noise; 0 fails any worsening. Where a case ran with several seeds, a change must also exceed twice
  the pooled standard error of the difference of the means, so that a change which merely reshuffles
  each seed's trajectory is not reported as a regression. A case that converged in BASE (every seed:
  not diverged, not stalled, target reached if it had one, test passed) and not in NEW is a regression, and so is a
  headline metric that BASE recorded and NEW did not (missing, NaN or infinite): a number NEW cannot
  be compared by is never a pass.
* **Time** (train time per seed, or a throughput case's rounds) is noisy on a shared machine and is
  judged by `convbench.report.time_rule`: enough samples, a test on their spread, a relative and an
  absolute threshold, and no busy machine on either side. Times measured beside other cases
  (``pytest -n N``) are compared only with times measured beside as many (`convbench.report.parallel`).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from convbench.report import parallel
from convbench.report.identity import Headline
from convbench.report.time_rule import TimeRule, TimeSamples, judge_time

Record = dict[str, Any]


@dataclass(frozen=True)
class Rules:
    """Every threshold of the comparison (the defaults are `convbench compare`'s)."""

    time: TimeRule = field(default_factory=TimeRule)
    metric_threshold: float = 0.01  # absolute worsening of the headline metric
    steps_threshold: float = 0.10  # relative growth of the steps to target


def converged(record: Record) -> tuple[bool, str | None]:
    """Whether a run converged, and if not, why."""
    if record.get("failed_before_training"):
        return False, "failed before training"
    if record["diverged"]:
        return False, "diverged"
    if record.get("stalled"):
        return False, "stalled"
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
    """A convergence case (its seeds together) in BASE and NEW, and what changed."""

    name: str
    scale: Any
    base: list[Record]
    new: list[Record]
    headline: Headline
    time_change: float | None = None  # relative
    time_status: str | None = None  # whether the times could be judged (`convbench.report.time_rule`)
    metric_change: float | None = None  # absolute, new - base
    steps_change: float | None = None  # relative growth of the mean steps to target
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @staticmethod
    def trained(runs: list[Record]) -> list[Record]:
        return [r for r in runs if not r.get("failed_before_training")]

    def times(self, runs: list[Record]) -> list[float]:
        return [r["timing"]["train_s"] for r in self.trained(runs) if r["timing"].get("train_s") is not None]

    @staticmethod
    def busy(runs: list[Record]) -> int:
        """How many of the runs were measured while other work kept the machine busy."""
        return sum((r.get("machine_load") or {}).get("busy") is True for r in runs)

    def headline_values(self, runs: list[Record]) -> list[float | None]:
        """The headline metric of each run that trained (None where it was not recorded)."""
        return [self.headline.value(r) for r in self.trained(runs)]

    def metrics(self, runs: list[Record]) -> list[float]:
        return [value for value in self.headline_values(runs) if value is not None]

    @staticmethod
    def steps_to_target(runs: list[Record]) -> list[float] | None:
        """Each run's step at its target, or None unless every run reached one."""
        steps = [(r.get("target") or {}).get("step") for r in runs]
        reached = all((r.get("target") or {}).get("reached") for r in runs)
        return [float(s) for s in steps] if runs and reached and None not in steps else None

    def converged_count(self, runs: list[Record]) -> int:
        return sum(converged(r)[0] for r in runs)

    @property
    def regressed(self) -> bool:
        return bool(self.problems)


def compare_case(change: CaseChange, rules: Rules) -> CaseChange:
    _compare_times(change, rules.time)
    _compare_metrics(change, rules.metric_threshold)
    _compare_steps(change, rules.steps_threshold)
    base_converged = change.converged_count(change.base) == len(change.base)
    if base_converged and change.converged_count(change.new) < len(change.new):
        reasons = dict.fromkeys(reason for ok, reason in map(converged, change.new) if not ok)
        change.problems.append(f"stopped converging ({', '.join(reasons)})")
    return change


def _compare_times(change: CaseChange, rule: TimeRule) -> None:
    base_t, new_all = _finite(change.times(change.base)), change.times(change.new)
    new_t = _finite(new_all)
    if base_t and (problem := _not_comparable("train time", new_all)):
        change.problems.append(problem)
    if base_t and new_t and (mismatch := parallel.time_mismatch(change.trained(change.base),
                                                                change.trained(change.new))):
        change.time_status = parallel.NOT_COMPARABLE  # quality is still judged: the devices were the runs' own
        change.notes.append(mismatch)
        return
    if base_t and new_t and statistics.fmean(base_t) > 0:
        verdict = judge_time(TimeSamples.of(base_t, busy=change.busy(change.trained(change.base))),
                             TimeSamples.of(new_t, busy=change.busy(change.trained(change.new))), rule)
        change.time_change, change.time_status = verdict.change, verdict.status
        change.problems += [verdict.problem] if verdict.problem else []
        change.notes += [verdict.note] if verdict.note else []


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


def _compare_steps(change: CaseChange, steps_threshold: float) -> None:
    """Slower convergence: more steps to the target (where every run on both sides reached it; a run
    that did not is the convergence rule's). With a target that stops training, the final metric is
    the target on both sides, and only this rule sees that NEW needed longer to get there."""
    base_s, new_s = change.steps_to_target(change.base), change.steps_to_target(change.new)
    if not base_s or not new_s or statistics.fmean(base_s) <= 0:
        return
    base_mean = statistics.fmean(base_s)
    change.steps_change = (statistics.fmean(new_s) - base_mean) / base_mean
    noise = 2 * pooled_standard_error(base_s, new_s) / base_mean
    if change.steps_change > max(steps_threshold, noise):
        limit = f"{max(steps_threshold, noise) * 100:.4g}%" + (" (2 SE)" if noise > steps_threshold else "")
        change.problems.append(f"steps to target {change.steps_change:+.1%} > {limit}")
    elif change.steps_change > steps_threshold:
        change.notes.append(f"steps to target {change.steps_change:+.1%} within noise (2 SE = {noise:.1%})")


@dataclass
class ThroughputChange:
    """A throughput case in BASE and NEW: samples/s over timed rounds, judged by its rounds' times."""

    name: str
    base: Record
    new: Record
    time_change: float | None = None  # relative, of the time per sample
    time_status: str | None = None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def regressed(self) -> bool:
        return bool(self.problems)


def round_samples(entry: Record) -> TimeSamples:
    """A throughput result's rounds (``std`` where the result kept it; older ones have mean, min, max)."""
    rounds = entry["round_s"]
    std = rounds.get("std") if entry["rounds"] > 1 else None
    # the rounds share one load reading: a busy machine makes every round a busy sample
    busy = entry["rounds"] if (entry.get("machine_load") or {}).get("busy") is True else 0
    return TimeSamples(rounds["mean"], entry["rounds"], std, rounds["min"], rounds["max"], busy=busy, unit="round")


def compare_throughput(change: ThroughputChange, rule: TimeRule) -> ThroughputChange:
    """Rounds of NEW against those of BASE, per sample where the two rounds hold different numbers of samples."""
    base, new = round_samples(change.base), round_samples(change.new)
    if not math.isfinite(new.mean) or new.mean <= 0:
        change.problems.append(f"round time {new.mean:.4g} in NEW")
        return change
    if not math.isfinite(base.mean) or base.mean <= 0:
        change.notes.append(f"round time in BASE is {base.mean:.4g}: not compared")
        return change
    per_base, per_new = change.base["samples_per_round"], change.new["samples_per_round"]
    if per_base != per_new:
        change.notes.append(f"{per_base} -> {per_new} samples per round: compared per sample")
        new = new.scaled(per_base / per_new)
    verdict = judge_time(base, new, rule)
    change.time_change, change.time_status = verdict.change, verdict.status
    change.problems += [verdict.problem] if verdict.problem else []
    change.notes += [verdict.note] if verdict.note else []
    return change
