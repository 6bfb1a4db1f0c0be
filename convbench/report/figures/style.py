"""What the built-in figures share: matplotlib without a window, axes finishing, seed-set labels, saving."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # reports are written to files; never open a window

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from convbench.report.identity import Record, configuration_name

DPI = 110


def number(value: Any) -> float:
    """A recorded number as a float; NaN where it was not recorded (None)."""
    return math.nan if value is None else float(value)


def stalled(record: Record) -> bool:
    """Whether the run never learned (the engine's "stalled" verdict); False for results written before it."""
    return bool(record.get("stalled", False))


def failed(record: Record) -> bool:
    """Whether the run diverged or stalled: a curve that ends in a cross, a point that is no result."""
    return bool(record.get("diverged")) or stalled(record)


def set_label(runs: list[Record]) -> str:
    """The legend entry of a configuration: its case id (without the seed when it has several), the seed
    count, how many seeds diverged, how many stalled (never learned: `stalled`), and how many were measured
    on a busy machine (their times, and the curves drawn against time, are not to be trusted like the others)."""
    name = configuration_name(runs)
    if len(runs) > 1:
        name += f" (mean of {len(runs)} seeds)"
    return name + run_flags(runs)


def row_label(runs: list[Record]) -> str:
    """A configuration's name where its seeds are drawn as one row of points or bars: the case id (without
    the seed when it has several), how many seeds, and `run_flags`."""
    seeds = f" ({len(runs)} seeds)" if len(runs) > 1 else ""
    return configuration_name(runs) + seeds + run_flags(runs)


def run_flags(runs: list[Record]) -> str:
    """`` (diverged)``, `` (2 stalled)``, `` (1 busy machine)``, `` (parallel)``...: what marks some of a
    configuration's runs (parallel: measured beside other cases, ``pytest -n N``, so their times and the curves
    drawn against time are not those of a run alone); without a count for a single run."""
    text = ""
    for flag, count in (("diverged", sum(bool(r["diverged"]) for r in runs)),
                        ("stalled", sum(stalled(r) for r in runs)),
                        ("busy machine", sum(bool((r.get("machine_load") or {}).get("busy")) for r in runs)),
                        ("parallel", sum(bool(r.get("parallel")) for r in runs))):
        if count:
            text += f" ({flag})" if len(runs) == 1 else f" ({count} {flag})"
    return text


#: An accuracy axis that shows less than this share of its full 0-1 range is said to be zoomed in its label.
ZOOMED_SHARE = 0.5


def zoom_note(low: float, high: float) -> str:
    """`` (axis zoomed to 0.76-0.85, not 0-1)`` where an accuracy axis shows less than half of 0-1, else ``""``:
    an autoscaled axis makes a 0.01 difference look like a chasm, and readers must be told."""
    if not (math.isfinite(low) and math.isfinite(high)) or high - low >= ZOOMED_SHARE:
        return ""
    return f" (axis zoomed to {low:.3g}-{high:.3g}, not 0-1)"


def say_if_zoomed(ax: Any, axis: str = "y") -> None:
    """Append `zoom_note` to the label of an accuracy ``axis`` of ``ax`` (call once its limits are final)."""
    low, high = ax.get_ylim() if axis == "y" else ax.get_xlim()
    label = ax.get_ylabel() if axis == "y" else ax.get_xlabel()
    note = zoom_note(low, high)
    if note:
        (ax.set_ylabel if axis == "y" else ax.set_xlabel)(label + note)


def plain_log_ticks(axis: Any) -> None:
    """Tick labels on a log axis as plain numbers (0.3, 2), not 3x10^-1."""
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    axis.set_major_formatter(plain)
    axis.set_minor_formatter(FuncFormatter(lambda value, _: f"{value:g}" if f"{value:.1e}"[0] in "25" else ""))


#: More legend entries than this do not fit inside the axes: the legend goes under them, in columns.
LEGEND_INSIDE = 12
LEGEND_ROW_INCHES = 0.16
#: The width of a character of an x-small legend label, and of a legend entry's marker and gaps (inches).
LEGEND_CHAR_INCHES, LEGEND_ENTRY_INCHES = 0.045, 0.6


def finish(ax: Any, title: str) -> None:
    """Title, grid, plain log ticks and a legend when something is labelled.

    A study of 72 cases has 72 legend entries: inside the axes they squeezed the plot to nothing
    (matplotlib's "axes sizes collapsed to zero"). Past `LEGEND_INSIDE` entries the legend goes under the
    axes in columns, once per figure, and the figure grows to hold it."""
    for axis, scale in ((ax.xaxis, ax.get_xscale()), (ax.yaxis, ax.get_yscale())):
        if scale == "log":
            plain_log_ticks(axis)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return
    if len(handles) <= LEGEND_INSIDE:
        ax.legend(fontsize="small")
        return
    fig = ax.figure
    if fig.legends:  # another panel of this figure already placed the shared legend
        return
    column_inches = max(map(len, labels)) * LEGEND_CHAR_INCHES + LEGEND_ENTRY_INCHES
    columns = max(1, min(4, int(fig.get_figwidth() // column_inches)))  # as many as fit the figure's width
    rows = -(-len(handles) // columns)
    fig.set_figheight(fig.get_figheight() + rows * LEGEND_ROW_INCHES)
    fig.legend(handles, labels, loc="outside lower center", ncols=columns, fontsize="x-small")


def save(fig: Figure, base: Path, formats: Sequence[str]) -> list[Path]:
    """Write ``base.<format>`` for each format, then close the figure."""
    paths = []
    for fmt in formats:
        path = base.with_name(f"{base.name}.{fmt}")
        fig.savefig(path, dpi=DPI)
        paths.append(path)
    plt.close(fig)
    return paths
