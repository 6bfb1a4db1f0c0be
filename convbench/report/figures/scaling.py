"""Scaling over world sizes: speedup against world size, and where the time of one case goes.

A flagged row (`convbench.report.plausibility`: superlinear, oversubscribed, busy machine), a diverged
one or a stalled one (it never learned: the speed of a broken configuration answers no scaling question) has
no speedup worth a point:
it is left out of the speedup lines and named in a note under the figure, so that an impossible 3.7x on
2 cores is never drawn as a result. In the time bars, the ideal compute is never drawn above the measured
time: where a run was faster than ideal its bar is cut at the measured time, drawn faded, and labelled
with its flags.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from convbench.report.figures import FigureKind, FigureOptions
from convbench.report.figures.style import plt, stalled
from convbench.report.identity import Record, case_name, mixes_sources
from convbench.report.scaling import scaling_rows

#: Notes under the figure beyond this many rows are summed up in one line.
MAX_NOTES = 6
_FADED = 0.35


def scaling_table(records: list[Record]) -> Any:
    """`scaling_rows` as a DataFrame, with ``stalled`` (the run never learned) and ``base_stalled`` (its
    family's world-size-1 run never learned) per row; False for results written before the verdict."""
    import pandas as pd

    table = pd.DataFrame(scaling_rows(records))
    mixed = mixes_sources(records)
    verdicts = {(r["group"], case_name(r, mixed_sources=mixed)): stalled(r) for r in records}
    table["stalled"] = [verdicts.get((group, case), False) for group, case in zip(table["group"], table["case"],
                                                                                  strict=True)]
    base = table[table["world_size"] == 1].set_index("family")["stalled"]
    table["base_stalled"] = [bool(base.get(family, False)) for family in table["family"]]
    return table


def _column(rows: Any, name: str) -> Any:
    """A boolean column; all False where the table has none (built from `scaling_rows` alone)."""
    return rows[name].astype(bool) if name in rows else rows["world_size"] != rows["world_size"]


def drawn_speedups(rows: Any) -> Any:
    """The speedups the figure draws: NaN where the row is flagged, diverged, stalled, measured against a
    stalled world-size-1 run, or has none."""
    trusted = (rows["flags"] == "") & ~rows["diverged"].astype(bool) & ~_column(rows, "stalled") \
        & ~_column(rows, "base_stalled") & rows["speedup"].notna()
    return rows["speedup"].where(trusted).astype(float)


def left_out_notes(table: Any) -> list[str]:
    """Why each row that the speedup lines leave out is missing: its flags, a divergence or a stall (its
    own, or its world-size-1 run's)."""
    several = table["family"].nunique() > 1
    stalls, base_stalls = _column(table, "stalled"), _column(table, "base_stalled")
    notes = []
    for (_, row), stall, base_stall in zip(table.iterrows(), stalls, base_stalls, strict=True):
        why = [name for name, found in (("diverged", row["diverged"]), ("stalled", stall),
                                        (row["flags"], row["flags"])) if found]
        if not why and base_stall:
            why = ["its world-size-1 run stalled"]
        if not why and (row["speedup"] is None or math.isnan(row["speedup"])):
            why = ["its world-size-1 run diverged"]
        if why:
            notes.append(f"{row['family'] + ' ' if several else ''}world size {row['world_size']}: {', '.join(why)}")
    if len(notes) > MAX_NOTES:
        notes = [*notes[:MAX_NOTES - 1], f"and {len(notes) - MAX_NOTES + 1} more"]
    return notes


def _speedup_panel(ax: Any, table: Any, sizes: list[int]) -> None:
    ax.plot(sizes, sizes, linestyle="--", color="grey", label="ideal (strong scaling)")
    for family, rows in table.groupby("family", sort=False):
        rows = rows.sort_values("world_size")
        ax.plot(rows["world_size"], drawn_speedups(rows), marker="o", label=str(family))
    ax.set_xlabel("world size (processes / devices)")
    ax.set_ylabel("speedup over world size 1")
    ax.set_xticks(sizes)
    ax.set_title("speedup")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")


def _time_panel(ax: Any, rows: Any, case: str) -> None:
    """Ideal compute, overhead and start-up stacked per world size; the ideal cut at the measured time."""
    labels = [str(s) for s in rows["world_size"]]
    train = rows["train_time_s"].astype(float).to_numpy()
    ideal = np.minimum(rows["ideal_time_s"].astype(float).clip(lower=0).to_numpy(), train)
    overhead = (train - ideal).clip(min=0)
    startup = rows["startup_s"].fillna(0).astype(float).to_numpy()
    flagged = (rows["flags"] != "").to_numpy()
    stacks = [(ideal, 0, "ideal compute (time on 1 / N)"),
              (overhead, ideal, "communication and overhead (estimate)"),
              (startup, ideal + overhead, "start-up (processes, process group)")]
    for heights, bottom, label in stacks:
        bars = ax.bar(labels, heights, bottom=bottom, label=label)
        for bar, faded in zip(bars, flagged, strict=True):
            if faded:
                bar.set_alpha(_FADED)
    tops = ideal + overhead + startup
    finite = tops[np.isfinite(tops)]
    highest = float(finite.max()) if finite.size and finite.max() > 0 else 1.0  # a run may record inf or NaN
    for x, (top, row) in enumerate(zip(tops, rows.itertuples(), strict=True)):
        if row.flags:
            cut = row.ideal_time_s > row.train_time_s
            text = row.flags + (f"\nideal {row.ideal_time_s:.3g} s > measured" if cut else "")
            ax.annotate(text, (x, top if math.isfinite(top) else highest), xytext=(0, 3), textcoords="offset points",
                        ha="center", va="bottom", fontsize="x-small", color="firebrick")
    ax.set_ylim(0, 1.2 * highest)  # room for the flag labels above the bars
    ax.set_xlabel("world size")
    ax.set_ylabel("seconds")
    ax.set_title(f"where the time goes: {case}")
    # under the axes, never over a bar (inside, "best" still covered the tallest bar's top)
    ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=2, frameon=False)


def scaling_figure(table: Any) -> Figure:
    """Speedup against world size, one line per case, with the ideal line (left); where the time of
    the first case goes at each world size (right). ``table`` holds `scaling_rows` (`scaling_table` adds
    the stall verdicts); flagged, diverged and stalled rows are left out of the speedup lines and named in a
    note under the figure."""
    fig, (speed_ax, time_ax) = plt.subplots(1, 2, figsize=(11, 4.5), layout="constrained")
    _speedup_panel(speed_ax, table, sorted(table["world_size"].unique()))
    first_case = table["family"].iloc[0]
    _time_panel(time_ax, table[table["family"] == first_case].sort_values("world_size"), first_case)
    if notes := left_out_notes(table):
        fig.supxlabel("speedups not drawn (see the flags in tables/scaling.md): " + "; ".join(notes),
                      fontsize="small", color="firebrick", wrap=True)
    return fig


class ScalingFigure(FigureKind):
    """Speedup over world size 1 and where the time goes; for cases run on several world sizes."""

    across_groups = True
    default = True
    needs = "a case run on world size 1 and on a larger world size"

    def applies(self, records: list[Record], options: FigureOptions) -> bool:
        return bool(scaling_rows(records))

    def draw(self, group: str | None, records: list[Record], options: FigureOptions) -> Figure:
        return scaling_figure(scaling_table(records))
