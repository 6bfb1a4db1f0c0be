"""Parameter trajectories: the values a model reports with ``convbench_trajectory()`` (W and b of
``linear_regression``), against step and, with two parameters, as a path in their plane."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from convbench.report.figures import X_AXES, FigureKind, FigureOptions
from convbench.report.figures.style import finish, number, plt
from convbench.report.identity import Record


def _series(record: Record) -> dict[str, np.ndarray]:
    """The run's parameter series as float arrays, NaN where a value was not recorded."""
    return {name: np.array([number(v) for v in values], dtype=float)
            for name, values in record["curves"]["params"].items()}


def params_figure(group: str, records: list[Record]) -> Figure:
    """Parameter values against step (left) and, with two parameters, their path in the plane (right)."""
    runs = [r for r in records if r["curves"].get("params")]
    names = list(dict.fromkeys(k for r in runs for k in r["curves"]["params"] if k != "step"))
    plane = len(names) == 2
    fig, axes = plt.subplots(1, 2 if plane else 1, figsize=(12 if plane else 8, 5), layout="constrained",
                             squeeze=False)
    ax = axes[0][0]
    for record in runs:
        params = _series(record)
        for name in names:
            if name in params:
                ax.plot(params["step"], params[name], label=f"{name}: {record['case_id']}")
    ax.set_xlabel(X_AXES["step"])
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("parameter value")
    finish(ax, f"{group}: parameter trajectories")
    if plane:
        path_ax = axes[0][1]
        first, second = names
        for record in runs:
            params = _series(record)
            if first in params and second in params and params[first].size:
                (line,) = path_ax.plot(params[first], params[second], marker=".", label=record["case_id"])
                path_ax.plot(params[first][0], params[second][0], marker="s", color=line.get_color())
                path_ax.plot(params[first][-1], params[second][-1], marker="*", markersize=12,
                             color=line.get_color())
        path_ax.set_xlabel(first)
        path_ax.set_ylabel(second)
        finish(path_ax, f"path in ({first}, {second}); square: start, star: end")
    return fig


def has_trajectory(record: Record) -> bool:
    """Whether the run recorded a parameter at two or more steps (one point is no trajectory)."""
    series = _series(record) if record["curves"].get("params") else {}
    return any(name != "step" and np.isfinite(values).sum() >= 2 for name, values in series.items())


class ParamsFigure(FigureKind):
    """Parameter trajectories (such as W and b of linear_regression); for runs that record them."""

    default = True
    needs = "parameter trajectories (a model with convbench_trajectory, such as linear_regression)"

    def applies(self, records: list[Record], options: FigureOptions) -> bool:
        return any(has_trajectory(r) for r in records)

    def draw(self, group: str | None, records: list[Record], options: FigureOptions) -> Figure:
        return params_figure(str(group), records)
