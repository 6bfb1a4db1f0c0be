"""When a change in time is a regression: `convbench compare`'s rule for train times and throughput rounds.

A time measured on a shared machine moves for two reasons the code has no part in. Within one session,
each seed (or throughput round) takes a little more or less than the next: the scheduler, caches,
other processes coming and going. The spread of the samples measures this, and a test on the samples
can tell a real shift from it. Between two sessions the load on the machine can change as a whole and
move every sample of NEW together: no test on the samples can see that, which is why the machine-load
reading (`convbench.machine_load`) and a relative threshold are part of the rule too.

A slowdown is a regression only when all of these hold:

1. NEW's mean is slower than BASE's by more than ``threshold`` (relative) and by more than
   ``min_diff_s`` seconds (a 0.07 s run that takes 8 ms longer met one scheduler time slice, not a
   slower code path);
2. neither side was measured on a busy machine (``judge_busy`` judges them anyway);
3. each side has at least ``min_samples`` samples (seeds of a case, or rounds of a throughput case):
   one sample carries no spread, so it cannot tell a slowdown from a noisy moment;
4. Welch's t-test (unequal variances), one-sided, says NEW is slower with p <= ``alpha``. Welch rather
   than Student because a loaded machine spreads one side's samples more than the other's; a t-test
   rather than a rank test because with 3 samples a side the smallest p a rank test can reach is 0.05,
   so it could not be held to a strict alpha. A load spike in one sample widens that side's spread and
   so makes the test more cautious, never less. Throughput results written before rounds kept their
   standard deviation have only their mean, min and max: for them the test is whether every NEW round
   was slower than every BASE round, the extreme of the Mann-Whitney test, whose exact p is
   1 / C(n + m, n) (0.004 for 5 rounds a side); it is used only where that p can reach ``alpha``.

Anything short of that is a note beside the case, never a failure.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

#: How `TimeVerdict.status` reads when the samples could be judged.
JUDGED = "judged"
TOO_FEW = "not enough data"
BUSY = "busy machine"


@dataclass(frozen=True)
class TimeRule:
    """The thresholds of the rule above; the defaults are `convbench compare`'s."""

    threshold: float = 0.10
    min_diff_s: float = 0.05
    alpha: float = 0.01
    min_samples: int = 3
    judge_busy: bool = False

    def describe(self, unit: str = "run") -> str:
        """The rule in one line, for the top of the comparison."""
        busy = "" if self.judge_busy else ", none measured on a busy machine"
        if self.min_samples <= 1:
            return (f"up by more than {self.threshold * 100:.4g}% and {self.min_diff_s:g} s (Welch's t-test p <= "
                    f"{self.alpha:g} where both sides have 2 or more {unit}s){busy}")
        return (f"up by more than {self.threshold * 100:.4g}% and {self.min_diff_s:g} s, with Welch's t-test p <= "
                f"{self.alpha:g} on >= {self.min_samples} {unit}s a side{busy}")


@dataclass(frozen=True)
class TimeSamples:
    """One side's times: each run's seconds, or a throughput result's summary of its rounds."""

    mean: float
    n: int
    std: float | None  # the sample standard deviation (ddof 1); None for one sample, or where unknown
    low: float
    high: float
    busy: int = 0  # how many samples were measured while the machine was busy
    unit: str = "run"  # what a sample is, for the notes: "run" or "round"

    @classmethod
    def of(cls, seconds: Sequence[float], busy: int = 0, unit: str = "run") -> TimeSamples:
        """The summary of finite samples (at least one)."""
        std = statistics.stdev(seconds) if len(seconds) > 1 else None
        return cls(statistics.fmean(seconds), len(seconds), std, min(seconds), max(seconds), busy, unit)

    def scaled(self, factor: float) -> TimeSamples:
        """The same samples in another unit (seconds per sample of another round size)."""
        std = None if self.std is None else self.std * factor
        return TimeSamples(self.mean * factor, self.n, std, self.low * factor, self.high * factor, self.busy,
                           self.unit)


@dataclass(frozen=True)
class TimeVerdict:
    """What the rule made of a change: ``problem`` when it is a regression, else perhaps a ``note``."""

    change: float  # relative: (new - base) / base
    status: str  # JUDGED, TOO_FEW or BUSY: whether the samples could be judged at all, whatever the change
    problem: str | None = None
    note: str | None = None


def judge_time(base: TimeSamples, new: TimeSamples, rule: TimeRule) -> TimeVerdict:
    """Apply the rule (module docstring) to a change from ``base`` to ``new`` (both with a positive mean)."""
    change, diff = (new.mean - base.mean) / base.mean, new.mean - base.mean
    status, why_not = _judgeable(base, new, rule)
    shown = f"{change:+.1%}"
    if change <= rule.threshold:
        return TimeVerdict(change, status)
    if diff <= rule.min_diff_s:
        return TimeVerdict(change, status, note=f"time {shown} but {diff:+.3g} s (<= {rule.min_diff_s:g} s)")
    if why_not is not None:
        return TimeVerdict(change, status, note=f"time {shown} not judged: {why_not}")
    slower = f"slower: {shown} ({diff:+.3g} s)"
    if not _testable(base, new, rule.alpha):  # only where the user asked for single samples to be judged
        return TimeVerdict(change, status, problem=f"{slower}, {_counts(base, new)}: no noise test")
    if base.std is None or new.std is None:
        if new.low > base.high:
            return TimeVerdict(change, status, problem=f"{slower}, every NEW {new.unit} slower than every BASE "
                                                       f"{base.unit} (p = {_separation_p(base, new):.2g})")
        return TimeVerdict(change, status, note=f"time {shown} within noise ({new.unit}s overlap)")
    p = welch_p_slower(base, new)
    if p > rule.alpha:
        return TimeVerdict(change, status, note=f"time {shown} within noise (Welch p = {p:.2g} > {rule.alpha:g})")
    return TimeVerdict(change, status, problem=f"{slower}, Welch p = {p:.2g}")


def _separation_p(base: TimeSamples, new: TimeSamples) -> float:
    """The exact one-sided p of every NEW sample exceeding every BASE sample by chance (Mann-Whitney U = 0)."""
    return 1 / math.comb(base.n + new.n, base.n)


def _testable(base: TimeSamples, new: TimeSamples, alpha: float) -> bool:
    """Whether the samples can tell a slowdown from noise at ``alpha``: two or more a side, and where their
    spread is unknown, enough of them for the separation test to reach ``alpha``."""
    if min(base.n, new.n) < 2:
        return False
    return (base.std is not None and new.std is not None) or _separation_p(base, new) <= alpha


def _judgeable(base: TimeSamples, new: TimeSamples, rule: TimeRule) -> tuple[str, str | None]:
    """Whether the samples can be judged at all, whatever the change: (status, why not)."""
    if not rule.judge_busy and (base.busy or new.busy):
        sides = [f"{name} ({s.busy} of {s.n} {s.unit}s)" for name, s in (("BASE", base), ("NEW", new)) if s.busy]
        return BUSY, f"busy machine in {' and '.join(sides)}"
    if min(base.n, new.n) < rule.min_samples:
        return TOO_FEW, f"not enough data ({_counts(base, new)}; need {rule.min_samples})"
    if rule.min_samples > 1 and not _testable(base, new, rule.alpha):
        return TOO_FEW, (f"not enough data ({_counts(base, new)} without their spread: even every NEW "
                         f"{new.unit} slower would give p = {_separation_p(base, new):.2g} > {rule.alpha:g})")
    return JUDGED, None


def _counts(base: TimeSamples, new: TimeSamples) -> str:
    """``1 run each`` or ``3 runs in BASE, 1 in NEW``."""
    def plural(n: int) -> str:
        return f"{n} {base.unit}{'s' if n != 1 else ''}"

    if base.n == new.n:
        return f"{plural(base.n)} each"
    return f"{plural(base.n)} in BASE, {new.n} in NEW"


def welch_p_slower(base: TimeSamples, new: TimeSamples) -> float:
    """One-sided p of Welch's t-test that NEW's mean is greater than BASE's (scipy's, from the summaries).

    Two sides without any spread are exactly what they are: p is 0 for a slower NEW, 1 otherwise.
    """
    from scipy.stats import ttest_ind_from_stats  # here: the command line starts without scipy

    assert base.std is not None and new.std is not None
    if base.std == 0 and new.std == 0:
        return 0.0 if new.mean > base.mean else 1.0
    result = ttest_ind_from_stats(new.mean, new.std, new.n, base.mean, base.std, base.n, equal_var=False,
                                  alternative="greater")
    return float(result.pvalue)
