"""Training curves: the train loss and the held-out accuracy against step, epoch or training time.

The seeds of a configuration are one line, their mean, with a band from their minimum to their maximum;
a diverged configuration's line ends in a cross.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from convbench.report.figures import X_AXES, FigureKind, FigureOptions
from convbench.report.figures.style import finish, number, plt, set_label
from convbench.report.identity import Record, metric_split, seed_sets


def x_of_steps(record: Record, steps: Sequence[float], x: str) -> np.ndarray:
    """The x positions of logged steps: the steps, the epochs they fall in, or the training time (interpolated
    between evaluations, which are the only points that record a time)."""
    steps = np.asarray(steps, dtype=float)
    if x == "step":
        return steps
    if x == "epoch":
        per_step = (record["epochs"] / record["steps"]) if record.get("steps") else math.nan
        return steps * per_step
    evals = record["curves"]["eval"]
    known = [(s, t) for s, t in zip(evals["step"], evals["time_s"], strict=False) if t is not None]
    if not known:
        return np.full(steps.shape, math.nan)
    at, times = zip(*sorted(known), strict=True)
    if at[0] > 0:
        at, times = (0, *at), (0.0, *times)
    return np.interp(steps, at, times)


def curve_series(runs: list[Record], metric: str, split: str, x: str) -> tuple[np.ndarray, np.ndarray]:
    """(x, values) with one row of values per seed: train loss (``metric="loss"``) or ``split`` accuracy.

    The seeds of one case log the same steps; x is the mean over the seeds (only time differs).
    """
    xs, ys = [], []
    for record in runs:
        if metric == "loss":
            curve = record["curves"]["train"]
            steps, values = curve["step"], curve["loss"]
        else:
            evals = record["curves"]["eval"]
            steps, values = evals["step"], evals.get(f"{split}_accuracy") or [None] * len(evals["step"])
        xs.append(x_of_steps(record, steps, x))
        ys.append(np.array([number(v) for v in values], dtype=float))
    length = min(len(v) for v in ys)
    return np.mean([v[:length] for v in xs], axis=0), np.array([v[:length] for v in ys])


def curve_figure(group: str, records: list[Record], metric: str, split: str = "test", *,
                 x: str = "step", log_y: bool = True) -> Figure:
    """Train loss (``metric="loss"``) or ``split`` accuracy against ``x``; seeds as mean line and min-max band."""
    fig, ax = plt.subplots(figsize=(8, 5), layout="constrained")
    configurations = seed_sets(records)
    for runs in configurations:
        xs, values = curve_series(runs, metric, split, x)
        if metric == "loss" and log_y:
            values = np.where(values > 0, values, math.nan)
        if values.size == 0 or np.all(np.isnan(values)):
            continue
        mean = values.mean(axis=0)
        (line,) = ax.plot(xs, mean, marker="o" if metric != "loss" else None, markersize=3, label=set_label(runs))
        if len(runs) > 1:
            ax.fill_between(xs, values.min(axis=0), values.max(axis=0), color=line.get_color(), alpha=0.2,
                            linewidth=0)
        finite = np.flatnonzero(np.isfinite(mean))
        if any(r["diverged"] for r in runs) and finite.size:
            ax.plot(xs[finite[-1]], mean[finite[-1]], marker="x", markersize=10, color=line.get_color())
    ax.set_xlabel(X_AXES[x])
    if x == "step":
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if metric == "loss":
        if log_y:
            ax.set_yscale("log")
        ax.set_ylabel("train loss (mean over logged steps" + (", log scale)" if log_y else ")"))
        title = f"{group}: training loss"
    else:
        ax.set_ylabel(f"{split} accuracy (fraction correct)")
        ax.set_ylim(0, 1)
        title = f"{group}: {split} accuracy"
    if any(len(runs) > 1 for runs in configurations):
        title += " (band: min to max over seeds)"
    finish(ax, title)
    return fig


class LossFigure(FigureKind):
    """Train loss against step, epoch or time (log scale unless --no-log-y)."""

    default = True

    def draw(self, group: str | None, records: list[Record], options: FigureOptions) -> Figure:
        return curve_figure(str(group), records, "loss", x=options.x, log_y=options.log_y)


class AccuracyFigure(FigureKind):
    """Held-out accuracy against step, epoch or time; for groups that evaluate accuracy."""

    default = True

    def applies(self, records: list[Record], options: FigureOptions) -> bool:
        split = metric_split(records)  # a regression run logs accuracy as None: nothing to draw
        return any(v is not None for r in records for v in r["curves"]["eval"].get(f"{split}_accuracy") or ())

    def draw(self, group: str | None, records: list[Record], options: FigureOptions) -> Figure:
        return curve_figure(str(group), records, "accuracy", metric_split(records), x=options.x)
