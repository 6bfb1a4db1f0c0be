"""The few lines a pytest session ends with: per group, the best case, the cases that diverged, stalled
or failed, and the target; then where the results are.

pytest-benchmark's own table comes before it and is ~220 columns wide, built for timings; this answers
the study's question ("which setup converged, how well, how fast") in lines short enough to read. It
reads the same records the results file gets, with plain Python (no pandas: it runs at the end of
every session that trained a case).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

from convbench.report.identity import configuration_name, headline, seed_sets

Record = dict[str, Any]

#: Names listed per verdict before "and N more".
MAX_NAMES = 4


def _name(record: Record) -> str:
    """A run's case id; a case that failed before training has only its test name."""
    return str(record.get("case_id") or record.get("test") or "?")


def _names(names: Sequence[str]) -> str:
    shown = list(names[:MAX_NAMES])
    more = len(names) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more else "")


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def _verdict_names(configurations: Sequence[Sequence[Record]], verdict: str) -> list[str]:
    """The configurations where some seed has ``verdict`` (diverged, stalled), with how many seeds did."""
    names = []
    for runs in configurations:
        hit = sum(bool(r.get(verdict)) for r in runs)
        if hit:
            names.append(configuration_name(runs) + (f" ({hit}/{len(runs)} seeds)" if len(runs) > 1 else ""))
    return names


def group_lines(group: str, records: Sequence[Record]) -> list[str]:
    """The summary of one group's convergence records (result fields plus ``outcome`` and ``error``).

    Runs that differ only in their seed are one case, as in the report's tables: the best case is the
    best mean over its seeds, among cases where no seed diverged or stalled."""
    runs = [r for r in records if "schema" in r]  # trained: the others failed before training
    failed = [r for r in records if "schema" not in r]
    configurations = seed_sets(runs)
    cases = len(configurations) + len(failed)
    outcomes = [r.get("outcome") or "unknown" for r in records]
    tally = ", ".join(f"{outcomes.count(o)} {o}" for o in dict.fromkeys(outcomes))
    size = _count(cases, "case") + (f", {len(records)} runs" if len(records) != cases else "")
    lines = [f"{group}: {size} ({tally})"]
    if runs:
        metric = headline(runs)
        scored = []
        for members in configurations:
            values = [metric.value(r) for r in members]
            if all(v is not None and math.isfinite(v) for v in values) and not any(
                    r.get("diverged") or r.get("stalled") for r in members):
                scored.append((statistics.fmean(values), members))
        if scored:
            value, best = (max if metric.higher_is_better else min)(scored, key=lambda pair: pair[0])
            seeds = f" (mean of {len(best)} seeds)" if len(best) > 1 else ""
            lines.append(f"  best: {configuration_name(best)}, {metric.label} {value:.4g}{seeds}")
        for verdict in ("diverged", "stalled"):
            names = _verdict_names(configurations, verdict)
            if names:
                lines.append(f"  {verdict}: {_names(names)}")
        with_target = [r for r in runs if (r.get("target") or {}).get("value") is not None]
        reached = [r for r in with_target if r["target"].get("reached")]
        if with_target:
            line = f"  target reached: {len(reached)}/{_count(len(with_target), 'run')}"
            timed = [r for r in reached if r["target"].get("time_s") is not None]
            if timed:
                fastest = min(timed, key=lambda r: r["target"]["time_s"])
                line += (f"; fastest {_name(fastest)} in {fastest['target']['time_s']:.3g} s "
                         f"(step {fastest['target']['step']})")
            lines.append(line)
    if failed:
        lines.append(f"  failed before training: {_names([_name(r) for r in failed])}")
    return lines


#: Rounds whose spread is this share of their mean or more were disturbed: the line says so.
NOISY_ROUNDS_CV = 0.1


def throughput_lines(group: str, records: Sequence[Record]) -> list[str]:
    """One line per measured throughput case: its samples per second over its rounds, the number the
    report's throughput table shows, and the rounds' spread where it is large enough to doubt it."""
    lines = [f"{group}: {_count(len(records), 'throughput case')}"]
    for r in records:
        rounds = r.get("round_s") or {}
        if r.get("samples_per_s"):
            line = f"  {r['case_id']}: {r['samples_per_s']:,.0f} samples/s over {_count(r['rounds'], 'round')}"
            mean, std = rounds.get("mean"), rounds.get("std")
            if mean and std is not None and std / mean >= NOISY_ROUNDS_CV:
                line += f" (rounds vary: std {std / mean:.0%} of their mean)"
            lines.append(line)
        else:
            lines.append(f"  {r['case_id']}: not measured ({r.get('error') or r.get('outcome') or 'no rounds'})")
    return lines


def summary(convergence: Sequence[Record], throughput: Sequence[Record]) -> list[str]:
    """Every group's lines, groups in the order their first case finished."""
    lines: list[str] = []
    for kind, records, describe in (("run", convergence, group_lines), ("throughput", throughput, throughput_lines)):
        groups: dict[str, list[Record]] = {}
        for record in records:
            groups.setdefault(record.get("group") or kind, []).append(record)
        for group, members in groups.items():
            lines += describe(group, members)
    return lines
