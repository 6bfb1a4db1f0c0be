"""Sweeps: the headline metric against the learning rate, and over a grid of two varied case fields (one
grid per value of a third, for an optimizer x batch size x learning rate study)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from convbench.report.figures import FigureKind, FigureOptions
from convbench.report.figures.style import failed, finish, number, plt, say_if_zoomed
from convbench.report.identity import Record, configuration, headline, metric_split


def flat_case(record: Record) -> dict[str, str]:
    """The configuration's case fields, kwargs dicts flattened to ``optimizer_kwargs.momentum``; values as
    JSON text, so that lists and dicts compare."""
    flat: dict[str, str] = {}
    for key, value in configuration(record).items():
        if isinstance(value, dict):
            for inner, item in value.items():
                flat[f"{key}.{inner}"] = json.dumps(item, sort_keys=True, default=str)
        else:
            flat[key] = json.dumps(value, sort_keys=True, default=str)
    return flat


def varied_fields(records: list[Record]) -> list[str]:
    """The case fields (seed aside) whose values differ between records, in case-field order."""
    flats = [flat_case(r) for r in records]
    keys = list(dict.fromkeys(k for flat in flats for k in flat))
    return [k for k in keys if len({flat.get(k) for flat in flats}) > 1]


def _field_value(record: Record, field: str) -> Any:
    text = flat_case(record).get(field)
    return None if text is None else json.loads(text)


def _sortable(value: Any) -> tuple[int, Any]:
    return (0, value) if isinstance(value, (int, float)) and not isinstance(value, bool) else (1, str(value))


def _parsed(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _text_order(text: str | None) -> tuple[int, Any]:
    return _sortable(_parsed(text))


def lr_figure(group: str, records: list[Record], split: str) -> Figure:
    """The headline metric against learning rate (log x), one line per optimizer (and other varied field values)."""
    metric = headline(records, split)
    others = [f for f in varied_fields(records) if f != "lr"]
    lines: dict[str, dict[float, list[float]]] = {}
    failures: dict[str, set[float]] = {}  # the rates where some seed diverged or stalled
    for record in records:
        name = ", ".join([str(record["case"]["optimizer"])]
                         + [f"{f}={_field_value(record, f)}" for f in others if f != "optimizer"])
        lr = float(record["case"]["lr"])
        lines.setdefault(name, {}).setdefault(lr, []).append(number(metric.value(record)))
        if failed(record):
            failures.setdefault(name, set()).add(lr)
    fig, ax = plt.subplots(figsize=(8, 5), layout="constrained")
    for name, by_lr in lines.items():
        lrs = sorted(by_lr)
        values = np.array([np.mean(by_lr[lr]) for lr in lrs])
        (line,) = ax.plot(lrs, values, marker="o", label=name)
        if any(len(by_lr[lr]) > 1 for lr in lrs):
            ax.fill_between(lrs, [min(by_lr[lr]) for lr in lrs], [max(by_lr[lr]) for lr in lrs],
                            color=line.get_color(), alpha=0.2, linewidth=0)
        bad = [i for i, lr in enumerate(lrs) if lr in failures.get(name, ())]
        if bad:  # a diverged or stalled run's number is no result: a cross says so
            ax.plot([lrs[i] for i in bad], values[bad], linestyle="none", marker="x", markersize=11,
                    markeredgewidth=2, color=line.get_color())
    if failures:
        ax.plot([], [], linestyle="none", marker="x", color="0.3", label="diverged or stalled (some seed)")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel(metric.label + " (mean over seeds)")
    if metric.accuracy:
        say_if_zoomed(ax, "y")
    finish(ax, f"{group}: learning-rate sensitivity")
    return fig


def heatmap_data(records: list[Record], split: str, fields: tuple[str, str] | None = None,
                 values: tuple[list[str | None], list[str | None]] | None = None,
                 ) -> tuple[str, str, list[Any], list[Any], np.ndarray]:
    """(row field, column field, row values, column values, mean headline metric per cell; NaN where no run).

    ``fields`` (default: the two varied fields) and their ``values`` as JSON text (default: those the runs
    have) let the panels of one figure share their rows and columns.
    """
    fields = fields or tuple(varied_fields(records))
    if len(fields) != 2:
        raise ValueError(f"a heatmap needs exactly two varied fields, got {list(fields)}")
    metric = headline(records, split)
    row_field, col_field = fields
    # values are told apart by their JSON text: a list value (augmentations) cannot be a set member or a key
    flats = [flat_case(r) for r in records]
    rows, cols = values or (_values(flats, row_field), _values(flats, col_field))
    cells: dict[tuple[int, int], list[float]] = {}
    for record, flat in zip(records, flats, strict=True):
        key = (rows.index(flat.get(row_field)), cols.index(flat.get(col_field)))
        cells.setdefault(key, []).append(number(metric.value(record)))
    grid = np.full((len(rows), len(cols)), math.nan)
    for (i, j), cell in cells.items():
        grid[i, j] = float(np.mean(cell))
    return row_field, col_field, [_parsed(r) for r in rows], [_parsed(c) for c in cols], grid


def _values(flats: list[dict[str, str]], field: str) -> list[str | None]:
    return sorted({flat.get(field) for flat in flats}, key=_text_order)


def heatmap_panels(records: list[Record]) -> tuple[str | None, tuple[str, str], list[tuple[Any, list[Record]]]]:
    """(panel field, (row field, column field), [(panel value, its runs)]): one panel for a group that
    differs in two case fields; for three (optimizer x batch size x lr), one panel per value of the field
    with the fewest values (the first in case-field order on a tie), each a grid of the other two, and only
    the panels whose runs form a grid (`is_grid` over those two fields)."""
    fields = varied_fields(records)
    if len(fields) == 2:
        return None, (fields[0], fields[1]), [(None, records)] if is_grid(records, fields) else []
    if len(fields) != 3:
        return None, ("", ""), []
    flats = [flat_case(r) for r in records]
    panel = min(fields, key=lambda f: len(_values(flats, f)))
    row_field, col_field = (f for f in fields if f != panel)
    panels = []
    for value in _values(flats, panel):
        members = [r for r, flat in zip(records, flats, strict=True) if flat.get(panel) == value]
        if is_grid(members, (row_field, col_field)):
            panels.append((_parsed(value), members))
    return panel, (row_field, col_field), panels


def heatmap_figure(group: str, records: list[Record], split: str) -> Figure:
    """The mean headline metric over a two-field grid, annotated cell by cell; with a third varied field,
    one such grid per value of it, side by side on one colour scale."""
    panel_field, fields, panels = heatmap_panels(records)
    if not panels:
        raise ValueError(f"no grid of two case fields to draw among {varied_fields(records)}")
    metric = headline(records, split)
    flats = [flat_case(r) for r in records]
    values = (_values(flats, fields[0]), _values(flats, fields[1]))
    drawn = [(value, heatmap_data(members, split, fields, values)[4]) for value, members in panels]
    rows, cols = [_parsed(r) for r in values[0]], [_parsed(c) for c in values[1]]
    finite = np.concatenate([grid[np.isfinite(grid)] for _, grid in drawn])
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    fig, axes = plt.subplots(1, len(drawn), figsize=(1.0 + (1.2 + 1.3 * len(cols)) * len(drawn),
                                                     1.8 + 0.8 * len(rows)),
                             layout="constrained", squeeze=False, sharey=True)
    cmap = "viridis" if metric.higher_is_better else "viridis_r"  # bright is good either way
    for ax, (value, grid) in zip(axes[0], drawn, strict=True):
        image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, aspect="auto", vmin=low, vmax=high)
        ax.set_xticks(range(len(cols)), [str(c) for c in cols])
        ax.set_yticks(range(len(rows)), [str(r) for r in rows])
        ax.set_xlabel(fields[1])
        middle = (low + high) / 2
        for i in range(len(rows)):
            for j in range(len(cols)):
                cell = grid[i, j]
                text = "-" if math.isnan(cell) else f"{cell:.3g}"
                light = math.isnan(cell) or (cell < middle) == (cmap == "viridis")
                ax.text(j, i, text, ha="center", va="center", color="white" if light else "black",
                        fontsize="medium")
        if panel_field is not None:
            ax.set_title(f"{panel_field} = {value}", fontsize="medium")
    axes[0][0].set_ylabel(fields[0])
    fig.colorbar(image, ax=list(axes[0]), label=metric.label + " (mean over seeds)")
    title = f"{group}: {metric.label}"
    if panel_field is None:
        axes[0][0].set_title(title, fontsize="medium")
    else:
        fig.suptitle(title, fontsize="medium")
    return fig


def lr_families(records: list[Record]) -> list[set[float]]:
    """The learning rates of each family of cases that differ only in their learning rate (and seed)."""
    families: dict[str, set[float]] = {}
    for record in records:
        key = json.dumps({k: v for k, v in flat_case(record).items() if k != "lr"}, sort_keys=True)
        families.setdefault(key, set()).add(float(record["case"]["lr"]))
    return list(families.values())


def is_grid(records: list[Record], fields: Sequence[str] | None = None) -> bool:
    """Whether the runs differ in exactly two case fields (``fields``, default: those they differ in), and
    vary each with the other held: some value of each field is run with two or more values of the other
    (not only a diagonal, where the two fields change together and a cell's colour cannot say which of them
    made it)."""
    if fields is None:
        fields = varied_fields(records)
    if len(fields) != 2 or not set(varied_fields(records)) <= set(fields):
        return False
    pairs = {tuple(flat_case(r).get(f) for f in fields) for r in records}
    crosses = [{}, {}]
    for first, second in pairs:
        crosses[0].setdefault(first, set()).add(second)
        crosses[1].setdefault(second, set()).add(first)
    return all(any(len(others) >= 2 for others in cross.values()) for cross in crosses)


class LrFigure(FigureKind):
    """The headline metric against learning rate; for groups where some cases differ only in their learning
    rate, over two or more rates (a line is such a family)."""

    default = True
    needs = "cases that differ only in their learning rate, over 2 or more rates"

    def applies(self, records: list[Record], options: FigureOptions) -> bool:
        return any(len(rates) >= 2 for rates in lr_families(records))

    def draw(self, group: str | None, records: list[Record], options: FigureOptions) -> Figure:
        return lr_figure(str(group), records, metric_split(records))


class HeatmapFigure(FigureKind):
    """The mean headline metric over the grid of a group whose cases differ in two case fields, each varied
    with the other held (not only along a diagonal); with a third varied field, one grid per value of it."""

    default = True
    needs = ("cases that differ in two case fields (a third makes panels), each run at 2 or more values of "
             "the other")

    def applies(self, records: list[Record], options: FigureOptions) -> bool:
        return bool(heatmap_panels(records)[2])

    def draw(self, group: str | None, records: list[Record], options: FigureOptions) -> Figure:
        return heatmap_figure(str(group), records, metric_split(records))
