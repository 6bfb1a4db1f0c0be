"""Training curves: the train loss and the held-out accuracy against step, epoch or training time; the loss
on linear and log axes side by side; the held-out error against epochs and against time side by side.

The seeds of a configuration are one line, their mean, with a band from their minimum to their maximum;
the line of a configuration with a diverged or stalled seed ends in a cross.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from convbench.report.figures import X_AXES, FigureKind, FigureOptions
from convbench.report.figures.style import failed, finish, number, plt, set_label
from convbench.report.identity import Record, headline, metric_split, seed_sets


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
    known = [(s, t) for s, t in zip(evals["step"], evals["time_s"], strict=False) if s is not None and t is not None]
    if not known:
        return np.full(steps.shape, math.nan)
    at, times = zip(*sorted(known), strict=True)
    if at[0] > 0:
        at, times = (0, *at), (0.0, *times)
    return np.interp(steps, at, times)


#: Curves a figure can draw: the train loss, and accuracy or error (1 - accuracy) on an evaluated split.
METRICS = ("loss", "accuracy", "error")
#: A loss curve that falls by this factor or more spans decades: the `loss-scales` figure draws it.
DECADES_SPAN = 100.0


def curve_series(runs: list[Record], metric: str, split: str, x: str) -> tuple[np.ndarray, np.ndarray]:
    """(x, values) with one row of values per seed: train loss (``metric="loss"``), or ``split`` accuracy or
    error (1 - accuracy).

    The seeds of one case log the same steps; x is the mean over the seeds (only time differs).
    """
    if metric not in METRICS:
        raise ValueError(f"curve metric must be one of {', '.join(METRICS)}, got {metric!r}")
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
        if metric == "error":
            ys[-1] = 1.0 - ys[-1]
    length = min(len(v) for v in ys)
    return np.mean([v[:length] for v in xs], axis=0), np.array([v[:length] for v in ys])


def moving_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Each row's mean over the last ``window`` points (fewer at the start): a trailing mean, so no change
    is drawn earlier than it happened. A NaN makes that point and every later one NaN (a loss turns
    non-finite where a run diverged, and its curve ends there)."""
    if window <= 1 or values.shape[-1] == 0:
        return values
    cumulative = np.cumsum(np.pad(values, ((0, 0), (1, 0))), axis=1)
    ends = np.arange(1, values.shape[1] + 1)
    starts = np.maximum(ends - window, 0)
    return (cumulative[:, ends] - cumulative[:, starts]) / (ends - starts)


def draw_curves(ax: Any, records: list[Record], metric: str, split: str = "test", *, x: str = "step",
                log_y: bool = True, smooth: int = 1) -> bool:
    """One line per configuration on ``ax``: the mean over its seeds, with a band from their minimum to their
    maximum; the line of a configuration with a diverged or stalled seed ends in a cross. Labels the axes;
    returns whether some configuration has several seeds (a band)."""
    configurations = seed_sets(records)
    for runs in configurations:
        xs, values = curve_series(runs, metric, split, x)
        if metric == "loss":
            values = moving_mean(values, smooth)
        if metric != "accuracy" and log_y:
            values = np.where(values > 0, values, math.nan)
        if values.size == 0 or np.all(np.isnan(values)):
            continue
        mean = values.mean(axis=0)
        (line,) = ax.plot(xs, mean, marker="o" if metric != "loss" else None, markersize=3, label=set_label(runs))
        if len(runs) > 1:
            ax.fill_between(xs, values.min(axis=0), values.max(axis=0), color=line.get_color(), alpha=0.2,
                            linewidth=0)
        finite = np.flatnonzero(np.isfinite(mean))
        if any(failed(r) for r in runs) and finite.size:
            ax.plot(xs[finite[-1]], mean[finite[-1]], marker="x", markersize=10, color=line.get_color())
    ax.set_xlabel(X_AXES[x])
    if x == "step":
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    scale = ", log scale)" if log_y else ")"
    if metric == "loss":
        smoothed = f", moving mean of {smooth} points" if smooth > 1 else ""
        ax.set_ylabel(f"train loss (mean over logged steps{smoothed}" + scale)
    elif metric == "error":
        ax.set_ylabel(f"{split} error (1 - accuracy" + scale)
    else:
        ax.set_ylabel(f"{split} accuracy (fraction correct)")
        ax.set_ylim(0, 1)
    if metric != "accuracy" and log_y:
        ax.set_yscale("log")
    return any(len(runs) > 1 for runs in configurations)


BAND = " (band: min to max over seeds)"


def accuracy_targets(records: list[Record]) -> list[tuple[float, str | None]]:
    """The distinct accuracy targets of these runs: (value, split), ascending."""
    return sorted({(r["target"]["value"], r["target"].get("split")) for r in records
                   if (r.get("target") or {}).get("metric") == "accuracy" and r["target"].get("value") is not None},
                  key=lambda target: (target[0], str(target[1])))


def draw_targets(ax: Any, records: list[Record]) -> None:
    """A dashed line at each accuracy target of these runs, labelled with its value and split: where the
    curves must get to, so a run that stops short of it is seen to."""
    for value, split in accuracy_targets(records):
        ax.axhline(value, linestyle="--", linewidth=1, color="0.4", label=f"target: {split or ''} accuracy {value:g}")


def curve_figure(group: str, records: list[Record], metric: str, split: str = "test", *,
                 x: str = "step", log_y: bool = True, smooth: int = 1) -> Figure:
    """Train loss (``metric="loss"``) or ``split`` accuracy against ``x``; seeds as mean line and min-max band."""
    fig, ax = plt.subplots(figsize=(8, 5), layout="constrained")
    banded = draw_curves(ax, records, metric, split, x=x, log_y=log_y and metric == "loss", smooth=smooth)
    if metric == "accuracy":
        draw_targets(ax, records)
    title = f"{group}: training loss" if metric == "loss" else f"{group}: {split} {metric}"
    finish(ax, title + (BAND if banded else ""))
    return fig


def loss_scales_figure(group: str, records: list[Record], *, x: str = "step", smooth: int = 1) -> Figure:
    """The train loss on a linear axis (left) and a log axis (right), against the same ``x``."""
    fig, (linear, log) = plt.subplots(1, 2, figsize=(13, 5), layout="constrained")
    banded = draw_curves(linear, records, "loss", x=x, log_y=False, smooth=smooth)
    draw_curves(log, records, "loss", x=x, log_y=True, smooth=smooth)
    linear.set_ylim(bottom=0)  # a loss is not negative: the height above zero is what is left
    finish(linear, "linear axis: how much of the loss is gone, and when")
    finish(log, "log axis: how fast the rest still falls")
    fig.suptitle(f"{group}: training loss" + (BAND if banded else ""))
    return fig


def error_figure(group: str, records: list[Record], split: str, *, log_y: bool = True) -> Figure:
    """``split`` error (1 - accuracy) against epochs (left) and training time (right), same y axis."""
    fig, (epochs, time) = plt.subplots(1, 2, figsize=(13, 5), layout="constrained", sharey=True)
    banded = draw_curves(epochs, records, "error", split, x="epoch", log_y=log_y)
    draw_curves(time, records, "error", split, x="time", log_y=log_y)
    time.yaxis.set_tick_params(labelleft=True)
    finish(epochs, "against epochs: what each pass over the data buys")
    finish(time, "against training time: what each second buys")
    fig.suptitle(f"{group}: {split} error" + (BAND if banded else ""))
    return fig


def has_loss(records: list[Record]) -> bool:
    """Whether some run logged a finite train loss."""
    return any(math.isfinite(number(v)) for r in records for v in r["curves"]["train"].get("loss") or ())


def has_accuracy(records: list[Record], split: str) -> bool:
    """Whether some run logged an accuracy on ``split`` (a regression run logs it as None)."""
    return any(v is not None for r in records for v in r["curves"]["eval"].get(f"{split}_accuracy") or ())


def spans_decades(records: list[Record]) -> bool:
    """Whether some configuration that neither diverged nor stalled has a mean loss curve whose highest
    value is `DECADES_SPAN` times its lowest or more (a diverged curve's blow-up does not count)."""
    for runs in seed_sets(records):
        if any(failed(r) for r in runs):
            continue
        _, values = curve_series(runs, "loss", "train", "step")
        mean = values.mean(axis=0) if values.size else values
        positive = mean[np.isfinite(mean) & (mean > 0)]
        if positive.size >= 2 and positive.max() >= DECADES_SPAN * positive.min():
            return True
    return False


#: Case fields that change what an epoch costs: runs that differ in them can rank differently per second
#: than per epoch (``model_kwargs.*`` too: the width of a layer, the number of filters).
COST_FIELDS = ("model", "batch_size")


def cost_varies(records: list[Record]) -> bool:
    """Whether the configurations differ in the model, its kwargs or the batch size."""
    from convbench.report.figures.sweeps import varied_fields

    return any(f in COST_FIELDS or f.startswith("model_kwargs.") for f in varied_fields(records))


class LossFigure(FigureKind):
    """Train loss against step, epoch or time (log scale unless --no-log-y)."""

    default = True
    needs = "a logged train loss"

    def applies(self, records: list[Record], options: FigureOptions) -> bool:
        return has_loss(records)

    def draw(self, group: str | None, records: list[Record], options: FigureOptions) -> Figure:
        return curve_figure(str(group), records, "loss", x=options.x, log_y=options.log_y, smooth=options.smooth)


class AccuracyFigure(FigureKind):
    """Held-out accuracy against step, epoch or time; for groups that evaluate accuracy."""

    default = True
    needs = "an evaluated accuracy (a classification task)"

    def applies(self, records: list[Record], options: FigureOptions) -> bool:
        return has_accuracy(records, metric_split(records))

    def draw(self, group: str | None, records: list[Record], options: FigureOptions) -> Figure:
        return curve_figure(str(group), records, "accuracy", metric_split(records), x=options.x)


class LossScalesFigure(FigureKind):
    """Train loss on a linear and a log axis side by side; for regressions and losses that span decades.

    Why a figure kind and not an option of ``loss`` (such as ``--log-y both``): the linear axis shows how
    much of the loss is gone and when (the early drop that the log axis flattens), the log axis how fast the
    rest still falls (the tail that the linear axis flattens onto zero), and a study of a loss that falls
    toward zero (linear regression's mean squared error, study 1) reads both, side by side on one x axis.
    Whether both are needed is a property of each group's curves, while ``--log-y`` is one choice for the
    whole report; as a kind it is drawn by default exactly where it applies (a regression, or a loss that
    falls by `DECADES_SPAN` times or more), ``--figures loss-scales`` asks for it anywhere, and ``loss`` and
    ``--no-log-y`` keep their meaning. It follows ``--x``.
    """

    default = True
    needs = (f"a regression's train loss, or a train loss that falls {DECADES_SPAN:g}-fold or more "
             "without diverging or stalling")

    def applies(self, records: list[Record], options: FigureOptions) -> bool:
        return has_loss(records) and (not headline(records).accuracy or spans_decades(records))

    def draw(self, group: str | None, records: list[Record], options: FigureOptions) -> Figure:
        return loss_scales_figure(str(group), records, x=options.x, smooth=options.smooth)


class ErrorFigure(FigureKind):
    """Held-out error (1 - accuracy) against epochs and against training time, side by side (log scale
    unless --no-log-y); for groups whose cases differ in what an epoch costs (model, its kwargs, batch size),
    where the fastest per epoch need not be the fastest per second."""

    default = True
    needs = ("an evaluated accuracy with times, and cases that differ in the model, its kwargs or the batch "
             "size")

    def applies(self, records: list[Record], options: FigureOptions) -> bool:
        timed = any(t is not None for r in records for t in r["curves"]["eval"].get("time_s") or ())
        return timed and has_accuracy(records, metric_split(records)) and cost_varies(records)

    def draw(self, group: str | None, records: list[Record], options: FigureOptions) -> Figure:
        return error_figure(str(group), records, metric_split(records), log_y=options.log_y)
