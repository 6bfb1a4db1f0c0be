"""The few lines a pytest session ends with: per group, the best case, the cases that diverged, stalled
or failed, and the target; then where the results are.

pytest-benchmark's own table comes before it and is ~220 columns wide, built for timings; this answers
the study's question ("which setup converged, how well, how fast") in lines short enough to read. It
reads the same records the results file gets, with plain Python (no pandas: it runs at the end of
every session that trained a case).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from convbench.report.identity import headline

Record = dict[str, Any]

#: Names listed per verdict before "and N more".
MAX_NAMES = 4


def _names(records: Sequence[Record]) -> str:
    shown = [r["case_id"] for r in records[:MAX_NAMES]]
    more = len(records) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more else "")


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def group_lines(group: str, records: Sequence[Record]) -> list[str]:
    """The summary of one group's convergence records (result fields plus ``outcome`` and ``error``)."""
    runs = [r for r in records if "schema" in r]  # trained: the others failed before training
    outcomes = [r.get("outcome") or "unknown" for r in records]
    tally = ", ".join(f"{outcomes.count(o)} {o}" for o in dict.fromkeys(outcomes))
    lines = [f"{group}: {_count(len(records), 'case')} ({tally})"]
    if runs:
        metric = headline(runs)
        scored = [(metric.value(r), r) for r in runs if metric.value(r) is not None
                  and not r.get("diverged") and not r.get("stalled")]
        if scored:
            value, best = (max if metric.higher_is_better else min)(scored, key=lambda pair: pair[0])
            lines.append(f"  best: {best['case_id']}, {metric.label} {value:.4g}")
        for verdict in ("diverged", "stalled"):
            hit = [r for r in runs if r.get(verdict)]
            if hit:
                lines.append(f"  {verdict}: {_names(hit)}")
        with_target = [r for r in runs if (r.get("target") or {}).get("value") is not None]
        reached = [r for r in with_target if r["target"].get("reached")]
        if with_target:
            line = f"  target reached: {len(reached)}/{len(with_target)}"
            timed = [r for r in reached if r["target"].get("time_s") is not None]
            if timed:
                fastest = min(timed, key=lambda r: r["target"]["time_s"])
                line += (f"; fastest {fastest['case_id']} in {fastest['target']['time_s']:.3g} s "
                         f"(step {fastest['target']['step']})")
            lines.append(line)
    failed = [r for r in records if "schema" not in r]
    if failed:
        lines.append(f"  failed before training: {_names(failed)}")
    return lines


def throughput_lines(group: str, records: Sequence[Record]) -> list[str]:
    """One line per measured throughput case: samples per second over its rounds (median round)."""
    lines = [f"{group}: {_count(len(records), 'throughput case')}"]
    for r in records:
        rounds = r.get("round_s") or {}
        per_round, samples = rounds.get("median") or rounds.get("mean"), r.get("samples_per_round")
        if per_round and samples:
            lines.append(f"  {r['case_id']}: {samples / per_round:,.0f} samples/s (median of {r['rounds']} rounds)")
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
