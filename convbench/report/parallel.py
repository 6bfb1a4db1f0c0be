"""Runs measured beside other cases (``pytest -n N``, a result's ``parallel``): how tables and figures label
them, and why `convbench compare` does not judge their times against times measured alone.

Under pytest-xdist each worker trains on a device of its own, so a run's quality numbers (losses,
accuracies, steps to target) are those it would have alone; its times are not. On CPUs the workers
share the memory bandwidth and caches, on GPUs the host; so a time taken beside N - 1 other cases is
compared only with times taken beside as many.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

Record = dict[str, Any]

#: The table column that says whether (and beside how many cases) runs were measured.
COLUMN = "parallel"
#: `convbench.report.time_rule.TimeVerdict.status`-like status of a case whose times were not compared.
NOT_COMPARABLE = "parallel and alone"


def workers(record: Record) -> int:
    """How many cases ran at once when this run was measured: 1 for a run alone (or written before
    parallel runs were recorded)."""
    return int((record.get("parallel") or {}).get("workers") or 1)


def label(record: Record) -> str:
    """``2 workers`` for a run measured beside another case, ``alone`` otherwise."""
    count = workers(record)
    return "alone" if count == 1 else f"{count} workers"


def device(record: Record) -> str | None:
    """``gw1 cuda:1``: the worker and the device a parallel run was pinned to; None for a run alone."""
    shared = record.get("parallel")
    return None if not shared else f"{shared.get('worker')} {shared.get('device')}"


def any_parallel(records: Iterable[Record]) -> bool:
    return any(record.get("parallel") for record in records)


def time_mismatch(base: list[Record], new: list[Record]) -> str | None:
    """Why the times of BASE's and NEW's runs of a case cannot be compared (one phrase), or None where they
    were all measured the same way: alone, or beside as many other cases."""
    sides = [sorted({workers(r) for r in runs}) for runs in (base, new)]
    if not base or not new or sides[0] == sides[1]:
        return None
    return f"times not compared: {_how(sides[0])} in BASE, {_how(sides[1])} in NEW"


def _how(counts: list[int]) -> str:
    return " and ".join("measured alone" if n == 1 else f"beside other cases (-n {n})" for n in counts)
