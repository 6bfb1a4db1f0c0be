"""Seed spread: how far apart the seeds of one configuration end, per configuration.

A study of the sources of randomness (weight initialisation, data order, dropout) runs one case over
several seeds with each source on or held fixed; what it asks is how much spread each source adds. The
curves' min-max bands show it over time but overlap; here each configuration is one row: the final headline
metric of every seed as a point, their mean as a tick and their range as a line, with the range and the
standard deviation written next to it, so that the rows compare at a glance.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure

from convbench.report.figures import FigureKind, FigureOptions
from convbench.report.figures.style import failed, number, plt, row_label, say_if_zoomed
from convbench.report.identity import Record, headline, seed_sets


def seeded_sets(records: list[Record]) -> list[list[Record]]:
    """The configurations run with 2 or more seeds that recorded the headline metric, in first-seen order."""
    metric = headline(records)
    return [runs for runs in seed_sets(records)
            if sum(math.isfinite(number(metric.value(r))) for r in runs) >= 2]


def spread(values: list[float]) -> tuple[float, float, float, float | None]:
    """(mean, min, max, sample standard deviation or None under 3 values) of the finite values."""
    finite = np.array([v for v in values if math.isfinite(v)], dtype=float)
    sd = float(finite.std(ddof=1)) if finite.size >= 3 else None
    return float(finite.mean()), float(finite.min()), float(finite.max()), sd


def seeds_figure(group: str, records: list[Record]) -> Figure:
    """One row per configuration with 2 or more seeds: each seed's final headline metric as a point (a cross
    for a seed that diverged or stalled), the mean over the seeds as a tick, the range as a line, and the
    range (and, from 3 seeds, the standard deviation) written beside it."""
    metric = headline(records)
    sets = seeded_sets(records)
    left_out = len(seed_sets(records)) - len(sets)
    fig, ax = plt.subplots(figsize=(9, 1.8 + 0.5 * len(sets)), layout="constrained")
    positions = np.arange(len(sets))[::-1]
    for y, runs in zip(positions, sets, strict=True):
        values = [number(metric.value(r)) for r in runs]
        good = [v for r, v in zip(runs, values, strict=True) if not failed(r) and math.isfinite(v)]
        bad = [v for r, v in zip(runs, values, strict=True) if failed(r) and math.isfinite(v)]
        mean, low, high, sd = spread(values)
        ax.hlines(y, low, high, color="grey", linewidth=2, label="range over seeds (min to max)")
        ax.plot(good, [y] * len(good), linestyle="none", marker="o", color="tab:blue", alpha=0.75,
                label="one seed's run")
        if bad:
            ax.plot(bad, [y] * len(bad), linestyle="none", marker="x", markersize=9, color="firebrick",
                    label="a seed that diverged or stalled")
        ax.plot([mean], [y], linestyle="none", marker="|", markersize=20, markeredgewidth=2, color="black",
                label="mean over seeds")
        text = f" range {high - low:.3g}" + (f", sd {sd:.2g}" if sd is not None else "")
        ax.annotate(text, (high, y), xytext=(6, 0), textcoords="offset points", va="center", fontsize="small")
    ax.set_yticks(positions, [row_label(runs) for runs in sets])
    ax.set_xlabel(f"{metric.label} (one point per seed)")
    low, high = ax.get_xlim()
    ax.set_xlim(low, high + 0.25 * (high - low))  # room for the range labels
    if metric.accuracy:
        say_if_zoomed(ax, "x")
    ax.grid(True, axis="x", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    fig.legend(unique.values(), unique.keys(), fontsize="small", loc="outside lower center", ncols=2)
    title = f"{group}: spread over seeds"
    if left_out:
        title += f" ({left_out} configuration{'s' if left_out > 1 else ''} with one seed not shown)"
    ax.set_title(title)
    return fig


class SeedsFigure(FigureKind):
    """Each seed's final headline metric per configuration, with mean and range: how much spread each source
    of randomness adds; for groups with a configuration run over 2 or more seeds."""

    default = True
    needs = "a configuration run with 2 or more seeds"

    def applies(self, records: list[Record], options: FigureOptions) -> bool:
        return bool(seeded_sets(records))

    def draw(self, group: str | None, records: list[Record], options: FigureOptions) -> Figure:
        return seeds_figure(str(group), records)
