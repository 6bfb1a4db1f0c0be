"""Scaling over world sizes: speedup against world size, and where the time of one case goes."""

from __future__ import annotations

from typing import Any

from matplotlib.figure import Figure

from convbench.report.figures import FigureKind, FigureOptions
from convbench.report.figures.style import plt
from convbench.report.identity import Record
from convbench.report.scaling import scaling_rows


def scaling_figure(table: Any) -> Figure:
    """Speedup against world size, one line per case, with the ideal line (left); where the time of
    the first case goes at each world size (right). ``table`` holds `scaling_rows`."""
    fig, (speed_ax, time_ax) = plt.subplots(1, 2, figsize=(11, 4.5), layout="constrained")
    sizes = sorted(table["world_size"].unique())
    speed_ax.plot(sizes, sizes, linestyle="--", color="grey", label="ideal (strong scaling)")
    for family, rows in table.groupby("family", sort=False):
        rows = rows.sort_values("world_size")
        speed_ax.plot(rows["world_size"], rows["speedup"], marker="o", label=str(family))
    speed_ax.set_xlabel("world size (processes / devices)")
    speed_ax.set_ylabel("speedup over world size 1")
    speed_ax.set_xticks(sizes)
    speed_ax.set_title("speedup")
    speed_ax.grid(True, alpha=0.3)
    speed_ax.legend(fontsize="small")
    first_case = table["family"].iloc[0]
    rows = table[table["family"] == first_case].sort_values("world_size")
    labels = [str(s) for s in rows["world_size"]]
    ideal = rows["ideal_time_s"].clip(lower=0).to_numpy()
    overhead = (rows["train_time_s"] - rows["ideal_time_s"]).clip(lower=0).to_numpy()
    startup = rows["startup_s"].fillna(0).to_numpy()
    time_ax.bar(labels, ideal, label="ideal compute (time on 1 / N)")
    time_ax.bar(labels, overhead, bottom=ideal, label="communication and overhead (estimate)")
    time_ax.bar(labels, startup, bottom=ideal + overhead, label="start-up (processes, process group)")
    time_ax.set_xlabel("world size")
    time_ax.set_ylabel("seconds")
    time_ax.set_title(f"where the time goes: {first_case}")
    time_ax.legend(fontsize="small")
    return fig


class ScalingFigure(FigureKind):
    """Speedup over world size 1 and where the time goes; for cases run on several world sizes."""

    across_groups = True
    default = True

    def applies(self, records: list[Record], options: FigureOptions) -> bool:
        return bool(scaling_rows(records))

    def draw(self, group: str | None, records: list[Record], options: FigureOptions) -> Figure:
        import pandas as pd

        return scaling_figure(pd.DataFrame(scaling_rows(records)))
