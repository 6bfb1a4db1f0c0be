"""Figures per group (matplotlib; PNG and/or SVG).

Every ``*_figure`` function returns an open `matplotlib.figure.Figure` (tests read the plotted data back);
`write_figures` saves each in the requested formats and closes it. Runs that differ only in their seed are
drawn as one line, the mean over the seeds, with a band from their minimum to their maximum.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # reports are written to files; never open a window

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from convbench.errors import ConvbenchError
from convbench.report.load import config_key, seedless_id
from convbench.report.tables import slug

FORMATS = ("png", "svg")
#: Figure kinds: per group, and ``profile`` across groups.
KINDS = ("loss", "accuracy", "lr", "heatmap", "params", "target", "utilisation", "profile")
DEFAULT_KINDS = ("loss", "accuracy")
X_AXES = {"step": "training step", "epoch": "epoch (passes over the training set)",
          "time": "training time (s, evaluation excluded)"}
#: Case fields that never make two runs different configurations.
_IGNORED_FIELDS = ("seed", "label")


@dataclass(frozen=True)
class FigureOptions:
    kinds: tuple[str, ...] = DEFAULT_KINDS
    formats: tuple[str, ...] = ("png",)
    x: str = "step"
    log_y: bool = True

    @classmethod
    def parse(cls, kinds: str | None = None, formats: str | None = None, x: str = "step",
              log_y: bool = True) -> FigureOptions:
        """From the command line's comma-separated lists; unknown names are one-line `ConvbenchError`s."""
        chosen_kinds = DEFAULT_KINDS if kinds is None else _choices(kinds, (*KINDS, "all"), "--figures")
        if "all" in chosen_kinds:
            chosen_kinds = KINDS
        chosen_formats = ("png",) if formats is None else _choices(formats, FORMATS, "--format")
        if x not in X_AXES:
            raise ConvbenchError(f"--x must be one of {', '.join(X_AXES)}, got {x!r}")
        return cls(tuple(chosen_kinds), tuple(chosen_formats), x, log_y)


def _choices(text: str, valid: Sequence[str], option: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [name for name in names if name not in valid]
    if unknown or not names:
        raise ConvbenchError(f"{option}: unknown {', '.join(map(repr, unknown)) or 'empty list'}; "
                             f"choose from {', '.join(valid)}")
    return names


# ----------------------------------------------------------------------------------- helpers
def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def seed_sets(records: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Records split into configurations (runs that differ only in their seed), in first-seen order."""
    sets: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        sets.setdefault(config_key(record), []).append(record)
    return list(sets.values())


def _set_label(runs: list[dict[str, Any]]) -> str:
    name = runs[0]["case_id"] if len(runs) == 1 else seedless_id(runs[0]["case_id"])
    if len(runs) > 1:
        name += f" (mean of {len(runs)} seeds)"
    diverged = sum(bool(r["diverged"]) for r in runs)
    if diverged:
        name += " (diverged)" if len(runs) == 1 else f" ({diverged} diverged)"
    return name


def _x_of_steps(record: dict[str, Any], steps: Sequence[float], x: str) -> np.ndarray:
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


def curve_series(runs: list[dict[str, Any]], metric: str, split: str, x: str) -> tuple[np.ndarray, np.ndarray]:
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
        xs.append(_x_of_steps(record, steps, x))
        ys.append(np.array([_number(v) for v in values], dtype=float))
    length = min(len(v) for v in ys)
    return np.mean([v[:length] for v in xs], axis=0), np.array([v[:length] for v in ys])


def _save(fig: Figure, base: Path, formats: Sequence[str]) -> list[Path]:
    paths = []
    for fmt in formats:
        path = base.with_name(f"{base.name}.{fmt}")
        fig.savefig(path, dpi=110)
        paths.append(path)
    plt.close(fig)
    return paths


def _plain_log_ticks(axis: Any) -> None:
    """Tick labels on a log axis as plain numbers (0.3, 2), not 3x10^-1."""
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    axis.set_major_formatter(plain)
    axis.set_minor_formatter(FuncFormatter(lambda value, _: f"{value:g}" if f"{value:.1e}"[0] in "25" else ""))


def _finish(ax: Any, title: str) -> None:
    for axis, scale in ((ax.xaxis, ax.get_xscale()), (ax.yaxis, ax.get_yscale())):
        if scale == "log":
            _plain_log_ticks(axis)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")


# ----------------------------------------------------------------------------------- figures
def curve_figure(group: str, records: list[dict[str, Any]], metric: str, split: str = "test", *,
                 x: str = "step", log_y: bool = True) -> Figure:
    """Train loss (``metric="loss"``) or ``split`` accuracy against ``x``; seeds as mean line and min-max band."""
    fig, ax = plt.subplots(figsize=(8, 5), layout="constrained")
    for runs in seed_sets(records):
        xs, values = curve_series(runs, metric, split, x)
        if metric == "loss" and log_y:
            values = np.where(values > 0, values, math.nan)
        if values.size == 0 or np.all(np.isnan(values)):
            continue
        mean = values.mean(axis=0)
        (line,) = ax.plot(xs, mean, marker="o" if metric != "loss" else None, markersize=3, label=_set_label(runs))
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
    if any(len(runs) > 1 for runs in seed_sets(records)):
        title += " (band: min to max over seeds)"
    _finish(ax, title)
    return fig


def final_metric(record: dict[str, Any], split: str) -> tuple[str, float]:
    """(name, value) of the number figures compare cases by: the final accuracy, else the final loss."""
    accuracy = record["final"].get(f"{split}_accuracy")
    if accuracy is not None:
        return f"final {split} accuracy", float(accuracy)
    loss = record["final"].get(f"{split}_loss")
    if loss is None:
        loss = record["final"].get("train_loss")
        return "final train loss", _number(loss)
    return f"final {split} loss", float(loss)


def _metric_name(records: list[dict[str, Any]], split: str) -> str:
    names = {final_metric(r, split)[0] for r in records}
    return names.pop() if len(names) == 1 else "final metric"


def _flat_case(record: dict[str, Any]) -> dict[str, str]:
    """Case fields, with kwargs dicts flattened to ``optimizer_kwargs.momentum``; values as JSON text."""
    flat: dict[str, str] = {}
    for key, value in record["case"].items():
        if key in _IGNORED_FIELDS:
            continue
        if isinstance(value, dict):
            for inner, item in value.items():
                flat[f"{key}.{inner}"] = json.dumps(item, sort_keys=True, default=str)
        else:
            flat[key] = json.dumps(value, sort_keys=True, default=str)
    return flat


def varied_fields(records: list[dict[str, Any]]) -> list[str]:
    """The case fields (seed aside) whose values differ between records, in case-field order."""
    flats = [_flat_case(r) for r in records]
    keys = list(dict.fromkeys(k for flat in flats for k in flat))
    return [k for k in keys if len({flat.get(k) for flat in flats}) > 1]


def _field_value(record: dict[str, Any], field: str) -> Any:
    text = _flat_case(record).get(field)
    return None if text is None else json.loads(text)


def _sortable(value: Any) -> tuple[int, Any]:
    return (0, value) if isinstance(value, (int, float)) and not isinstance(value, bool) else (1, str(value))


def lr_figure(group: str, records: list[dict[str, Any]], split: str) -> Figure:
    """Final metric against learning rate (log x), one line per optimizer (and other varied field values)."""
    others = [f for f in varied_fields(records) if f != "lr"]
    lines: dict[str, dict[float, list[float]]] = {}
    for record in records:
        name = ", ".join([str(record["case"]["optimizer"])]
                         + [f"{f}={_field_value(record, f)}" for f in others if f != "optimizer"])
        lines.setdefault(name, {}).setdefault(float(record["case"]["lr"]), []).append(final_metric(record, split)[1])
    fig, ax = plt.subplots(figsize=(8, 5), layout="constrained")
    for name, by_lr in lines.items():
        lrs = sorted(by_lr)
        values = np.array([np.mean(by_lr[lr]) for lr in lrs])
        (line,) = ax.plot(lrs, values, marker="o", label=name)
        if any(len(by_lr[lr]) > 1 for lr in lrs):
            ax.fill_between(lrs, [min(by_lr[lr]) for lr in lrs], [max(by_lr[lr]) for lr in lrs],
                            color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (log scale)")
    metric = _metric_name(records, split)
    ax.set_ylabel(metric + " (mean over seeds)")
    _finish(ax, f"{group}: learning-rate sensitivity")
    return fig


def heatmap_data(records: list[dict[str, Any]], split: str) -> tuple[str, str, list[Any], list[Any], np.ndarray]:
    """(row field, column field, row values, column values, mean final metric per cell; NaN where no run)."""
    fields = varied_fields(records)
    if len(fields) != 2:
        raise ValueError(f"a heatmap needs exactly two varied fields, got {fields}")
    row_field, col_field = fields
    rows = sorted({_field_value(r, row_field) for r in records}, key=_sortable)
    cols = sorted({_field_value(r, col_field) for r in records}, key=_sortable)
    cells: dict[tuple[int, int], list[float]] = {}
    for record in records:
        key = (rows.index(_field_value(record, row_field)), cols.index(_field_value(record, col_field)))
        cells.setdefault(key, []).append(final_metric(record, split)[1])
    grid = np.full((len(rows), len(cols)), math.nan)
    for (i, j), values in cells.items():
        grid[i, j] = float(np.mean(values))
    return row_field, col_field, rows, cols, grid


def heatmap_figure(group: str, records: list[dict[str, Any]], split: str) -> Figure:
    """The mean final metric over a two-field grid, annotated cell by cell."""
    row_field, col_field, rows, cols, grid = heatmap_data(records, split)
    metric = _metric_name(records, split)
    fig, ax = plt.subplots(figsize=(2.2 + 1.3 * len(cols), 1.8 + 0.8 * len(rows)), layout="constrained")
    cmap = "viridis" if "accuracy" in metric else "viridis_r"
    image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, aspect="auto")
    ax.set_xticks(range(len(cols)), [str(c) for c in cols])
    ax.set_yticks(range(len(rows)), [str(r) for r in rows])
    ax.set_xlabel(col_field)
    ax.set_ylabel(row_field)
    finite = grid[np.isfinite(grid)]
    middle = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    for i in range(len(rows)):
        for j in range(len(cols)):
            value = grid[i, j]
            text = "-" if math.isnan(value) else f"{value:.3g}"
            light = math.isnan(value) or (value < middle) == (cmap == "viridis")
            ax.text(j, i, text, ha="center", va="center", color="white" if light else "black", fontsize="medium")
    fig.colorbar(image, ax=ax, label=metric + " (mean over seeds)")
    ax.set_title(f"{group}: {metric}", fontsize="medium")
    return fig


def params_figure(group: str, records: list[dict[str, Any]]) -> Figure:
    """Parameter values against step (left) and, with two parameters, their path in the plane (right)."""
    runs = [r for r in records if r["curves"].get("params")]
    names = list(dict.fromkeys(k for r in runs for k in r["curves"]["params"] if k != "step"))
    plane = len(names) == 2
    fig, axes = plt.subplots(1, 2 if plane else 1, figsize=(12 if plane else 8, 5), layout="constrained",
                             squeeze=False)
    ax = axes[0][0]
    for record in runs:
        params = record["curves"]["params"]
        for name in names:
            if name in params:
                ax.plot(params["step"], params[name], label=f"{name}: {record['case_id']}")
    ax.set_xlabel(X_AXES["step"])
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("parameter value")
    _finish(ax, f"{group}: parameter trajectories")
    if plane:
        path_ax = axes[0][1]
        first, second = names
        for record in runs:
            params = record["curves"]["params"]
            if first in params and second in params:
                (line,) = path_ax.plot(params[first], params[second], marker=".", label=record["case_id"])
                path_ax.plot(params[first][0], params[second][0], marker="s", color=line.get_color())
                path_ax.plot(params[first][-1], params[second][-1], marker="*", markersize=12,
                             color=line.get_color())
        path_ax.set_xlabel(first)
        path_ax.set_ylabel(second)
        _finish(path_ax, f"path in ({first}, {second}); square: start, star: end")
    return fig


def utilisation_series(record: dict[str, Any]) -> dict[str, tuple[list[float], list[float]]]:
    """Per device, (seconds since the run started, utilisation %): GPU utilisation from NVML (``gpuN``)
    or the machine's CPU percent from psutil (``cpu``), from the telemetry timeline of every rank that
    sampled. Devices of a run over several machines are named ``host/gpuN``."""
    telemetry = record.get("telemetry") or {}
    timelines = [t for t in telemetry.get("ranks") or [telemetry] if t]
    several_hosts = len({t.get("host") for t in timelines}) > 1
    series = {}
    for sampled in timelines:
        timeline = sampled.get("timeline") or {}
        times = timeline.get("t_s") or []
        for key, values in timeline.items():
            gpu = key.startswith("gpu") and key.endswith("_utilization") and "memory" not in key
            if gpu or key == "cpu_percent":
                points = [(t, v) for t, v in zip(times, values, strict=False) if v is not None]
                if points:
                    name = key.removesuffix("_utilization").replace("_percent", "")
                    name = f"{sampled.get('host')}/{name}" if several_hosts else name
                    series[name] = ([t for t, _ in points], [v for _, v in points])
    return series


def utilisation_figure(group: str, records: list[dict[str, Any]]) -> Figure:
    """Utilisation of every sampled device over each run: shows idle devices and start-up stalls."""
    fig, ax = plt.subplots(figsize=(8, 5), layout="constrained")
    for record in records:
        for device, (times, values) in utilisation_series(record).items():
            ax.plot(times, values, label=f"{record['case_id']}: {device}")
    ax.set_xlabel("time since the run started (s)")
    ax.set_ylabel("utilisation (%)")
    _finish(ax, f"{group}: device utilisation")
    return fig


def target_times(records: list[dict[str, Any]]) -> list[tuple[str, float | None, int, int]]:
    """Per configuration with a target: (label, mean time to target in s or None, seeds reached, seeds)."""
    rows = []
    for runs in seed_sets([r for r in records if r["target"].get("value") is not None]):
        times = [r["target"]["time_s"] for r in runs if r["target"].get("reached") and
                 r["target"].get("time_s") is not None]
        name = runs[0]["case_id"] if len(runs) == 1 else seedless_id(runs[0]["case_id"])
        mean = float(np.mean(times)) if len(times) == len(runs) else None
        rows.append((name, mean, len(times), len(runs)))
    return rows


def target_figure(group: str, records: list[dict[str, Any]]) -> Figure:
    """Horizontal bars of time to target; configurations that missed it (any seed) as hatched grey bars."""
    rows = target_times(records)
    targets = {(r["target"].get("metric"), r["target"].get("split"), r["target"].get("value")) for r in records
               if r["target"].get("value") is not None}
    fig, ax = plt.subplots(figsize=(8, 2.0 + 0.45 * len(rows)), layout="constrained")
    reached = [t for _, t, _, _ in rows if t is not None]
    full = max(reached) * 1.15 if reached else 1.0
    positions = np.arange(len(rows))[::-1]
    for y, (_name, mean, hits, total) in zip(positions, rows, strict=True):
        if mean is not None:
            ax.barh(y, mean, color="tab:blue", label="reached (mean over seeds)")
            ax.text(mean, y, f" {mean:.3g} s", va="center", fontsize="small")
        else:
            ax.barh(y, full, color="lightgrey", hatch="//", edgecolor="grey", label="not reached")
            ax.text(full, y, f" not reached ({hits}/{total} seeds)" if total > 1 else " not reached",
                    va="center", fontsize="small")
    ax.set_yticks(positions, [name for name, *_ in rows])
    ax.set_xlabel("training time to target (s, evaluation excluded)")
    ax.set_xlim(0, full * 1.35)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    fig.legend(unique.values(), unique.keys(), fontsize="small", loc="outside lower center", ncols=2)
    what = "; ".join(f"{split} {metric} {'>=' if metric == 'accuracy' else '<='} {value:g}"
                     for metric, split, value in sorted(targets, key=str))
    ax.set_title(f"{group}: time to target ({what})")
    ax.grid(True, axis="x", alpha=0.3)
    return fig


def performance_ratios(records: list[dict[str, Any]]) -> tuple[list[str], dict[str, list[float]]]:
    """AlgoPerf-style: (problems, optimizer -> time-to-target ratio to the fastest optimizer per problem).

    A problem is a group whose cases have a target. An optimizer's time on a problem is that of its
    fastest configuration there (mean over the seeds, all of which must reach the target); an optimizer
    that never reached the target on a problem, or was not run on it, has ratio infinity.
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        if record["target"].get("value") is not None:
            groups.setdefault(record["group"], []).append(record)
    optimizers = list(dict.fromkeys(str(r["case"]["optimizer"]) for rs in groups.values() for r in rs))
    problems, ratios = [], {name: [] for name in optimizers}
    for group, members in groups.items():
        best: dict[str, float] = {}
        for runs in seed_sets(members):
            if all(r["target"].get("reached") and r["target"].get("time_s") is not None for r in runs):
                name = str(runs[0]["case"]["optimizer"])
                time = float(np.mean([r["target"]["time_s"] for r in runs]))
                best[name] = min(best.get(name, math.inf), time)
        fastest = min(best.values(), default=math.inf)
        if not math.isfinite(fastest) or fastest <= 0:
            continue
        problems.append(group)
        for name in optimizers:
            ratios[name].append(best.get(name, math.inf) / fastest)
    return problems, ratios


def profile_curve(ratios: Sequence[float], taus: Sequence[float]) -> np.ndarray:
    """The fraction of problems solved within tau times the fastest, at each tau."""
    values = np.asarray(ratios, dtype=float)
    return np.array([np.mean(values <= tau) if values.size else 0.0 for tau in taus])


def profile_figure(records: list[dict[str, Any]]) -> Figure:
    problems, ratios = performance_ratios(records)
    finite = [r for rs in ratios.values() for r in rs if math.isfinite(r)]
    tau_max = max(2.0, max(finite, default=1.0) * 1.5)
    taus = np.unique(np.concatenate([[1.0, tau_max], [r for r in finite]]))
    fig, ax = plt.subplots(figsize=(8, 5), layout="constrained")
    for name, values in ratios.items():
        ax.plot(taus, profile_curve(values, taus), drawstyle="steps-post", marker="o", markersize=3, label=name)
    ax.set_xscale("log")
    ax.set_xlim(1, tau_max)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("tau: time to target relative to the fastest optimizer on the problem (log scale)")
    ax.set_ylabel(f"fraction of the {len(problems)} problems solved within tau")
    _finish(ax, "performance profile (problems: " + ", ".join(problems) + ")")
    return fig


# ----------------------------------------------------------------------------------- writing
def write_figures(records: list[dict[str, Any]], split: str, out_dir: Path,
                  options: FigureOptions | None = None) -> list[Path]:
    options = options or FigureOptions()
    kinds = set(options.kinds)
    out = out_dir / "figures"
    out.mkdir(parents=True, exist_ok=True)
    groups: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault(record["group"], []).append(record)
    written: list[Path] = []

    def save(fig: Figure, name: str) -> None:
        written.extend(_save(fig, out / name, options.formats))

    for group, members in groups.items():
        base = slug(group)
        if "loss" in kinds:
            save(curve_figure(group, members, "loss", split, x=options.x, log_y=options.log_y), f"{base}-loss")
        if "accuracy" in kinds and any(m["curves"]["eval"].get(f"{split}_accuracy") for m in members):
            save(curve_figure(group, members, "accuracy", split, x=options.x), f"{base}-accuracy")
        if "lr" in kinds and len({m["case"]["lr"] for m in members}) >= 2:
            save(lr_figure(group, members, split), f"{base}-lr")
        if "heatmap" in kinds and len(varied_fields(members)) == 2:
            save(heatmap_figure(group, members, split), f"{base}-heatmap")
        if "params" in kinds and any(m["curves"].get("params") for m in members):
            save(params_figure(group, members), f"{base}-params")
        if "target" in kinds and any(m["target"].get("value") is not None for m in members):
            save(target_figure(group, members), f"{base}-target")
        if "utilisation" in kinds and any(utilisation_series(m) for m in members):
            save(utilisation_figure(group, members), f"{base}-utilisation")
    if "profile" in kinds and performance_ratios(records)[0]:
        save(profile_figure(records), "performance-profile")
    return written
