"""What every benchmark shares: two sides timed alternately over repeats, their medians, spread and ratio,
and the machine they ran on.

Timings on a shared machine drift by a factor of 2-5 over minutes, so a benchmark never compares two
timings taken apart: each repeat runs side A, then side B (after one untimed warm-up of each), and the
ratio of the two medians is what the tables report. The load averages at the start and the end of a
benchmark travel with its numbers.
"""

from __future__ import annotations

import os
import platform
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch


@dataclass
class Side:
    """One side's values (seconds, or any measure) over the repeats."""

    label: str
    values: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def spread(self) -> float:
        """(max - min) / median: how far apart the repeats were, as a fraction of the median."""
        return (max(self.values) - min(self.values)) / self.median if self.median else 0.0


@dataclass
class Comparison:
    """One row of a benchmark's table: side B against side A (``ratio`` = B's median / A's median)."""

    benchmark: str
    case: str
    measure: str  # what the values are, e.g. "train s"
    a: Side
    b: Side
    goal: str = ""  # e.g. "ratio <= 1.02"
    goal_met: bool | None = None  # None: no goal, or not measurable here
    extra: dict[str, Any] = field(default_factory=dict)
    load: tuple[float, float] | None = None  # 1-minute load average at the start and the end

    @property
    def ratio(self) -> float:
        return self.b.median / self.a.median if self.a.median else float("nan")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for side in ("a", "b"):
            data[side]["median"] = getattr(self, side).median
            data[side]["spread"] = getattr(self, side).spread
        data["ratio"] = self.ratio
        return data


def alternate(first: Callable[[], float], second: Callable[[], float], repeats: int,
              labels: tuple[str, str], warm_up: bool = True) -> tuple[Side, Side]:
    """Run ``first`` and ``second`` alternately ``repeats`` times (after one untimed call of each); their values."""
    a, b = Side(labels[0]), Side(labels[1])
    if warm_up:  # data loading, the allocator, kernels chosen on first use
        first()
        second()
    for _ in range(repeats):
        a.values.append(first())
        b.values.append(second())
    return a, b


def load_1min() -> float:
    return os.getloadavg()[0]


def environment() -> dict[str, Any]:
    """The machine, torch and threads the numbers were measured with, and the load when they started."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"host": platform.node(), "cpu": cpu, "cores": os.cpu_count(), "gpu": gpu,
            "python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "load_avg": list(os.getloadavg())}


def format_table(rows: list[Comparison]) -> str:
    """The comparisons as one Markdown table: medians with their spread, the ratio, the goal."""
    header = ("| benchmark | case | measure | A | A median | B | B median | ratio B/A | goal | load |\n"
              "|:--|:--|:--|:--|--:|:--|--:|--:|:--|:--|")
    lines = [header]
    for row in rows:
        goal = row.goal + ("" if row.goal_met is None else (" met" if row.goal_met else " NOT met"))
        load = "" if row.load is None else f"{row.load[0]:.1f}-{row.load[1]:.1f}"
        lines.append(f"| {row.benchmark} | {row.case} | {row.measure} | {row.a.label} | {_number(row.a)} | "
                     f"{row.b.label} | {_number(row.b)} | {row.ratio:.3f} | {goal} | {load} |")
    return "\n".join(lines)


def _number(side: Side) -> str:
    return f"{side.median:.4g} ±{side.spread / 2:.0%}" if len(side.values) > 1 else f"{side.median:.4g}"
