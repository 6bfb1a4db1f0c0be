"""Comparison tables: one per group, printed as Markdown and written as CSV, Markdown, HTML and LaTeX.

A group is a benchmark group, or with ``group_by`` each combination of the given case fields. Runs
that differ only in their seed are one row: each metric is the mean over the seeds, ``<metric>_std``
their sample standard deviation, and ``seeds`` how many runs there were. Where runs recorded it, ``busy``
says whether other work kept the machine busy (``yes``, ``no``, ``?``: could not tell; over seeds,
``2 yes, 1 no``), ``parallel`` whether they were measured beside other cases (``pytest -n 2``: ``2
workers``; ``alone``), and ``energy_j`` / ``energy_to_target_j`` the energy counters' readings; tables of
runs without them have no such columns. Pivot tables lay one metric out over two case fields (e.g. lr
x batch size) per group.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from convbench.errors import ConvbenchError, choices_hint
from convbench.report.formats import heading, to_csv, to_html, to_latex, to_markdown
from convbench.report.identity import Headline, seedless_id
from convbench.report.load import CASE_FIELDS, whole
from convbench.report.names import Names
from convbench.report.parallel import COLUMN as PARALLEL

#: Numbers only some results have: `convbench.report.load.to_frame` makes them columns only where a run has
#: them (energy where a counter was read), and the tables follow it, so that they stay narrow without them.
#: Columns shown only where some run has them: the train accuracy (where the headline split is held out),
#: energy, which only runs with a counter record, and compilation, which only compiled runs (Case.compile) record.
OPTIONAL_METRICS = ("final_train_accuracy", "energy_j", "energy_to_target_j", "compile_time_s")
#: The numbers a per-group table shows; with several seeds the mean, and ``<column>_std`` their spread.
METRIC_COLUMNS = ("final_{split}_accuracy", "best_{split}_accuracy", "final_train_accuracy", "final_train_loss",
                  "final_{split}_loss",
                  "time_to_target_s", "steps_to_target", "train_time_s", "samples_per_s", *OPTIONAL_METRICS)
#: The numbers a pivot table can show.
PIVOT_METRICS = (*METRIC_COLUMNS, "steps", "eval_time_s")
#: Whether the machine was busy with other work (``yes``/``no``/``?``), where runs recorded its load.
BUSY = "busy"
STD_SUFFIX = "_std"


def metric_columns(split: str, available: Collection[str]) -> list[str]:
    """The metric columns of a table of runs with these frame columns (the optional ones where present)."""
    columns = list(dict.fromkeys(c.format(split=split) for c in METRIC_COLUMNS))  # split "train": once
    return [c for c in columns if c not in OPTIONAL_METRICS or c in available]


def table_columns(split: str, available: Collection[str], *, with_group: bool = False) -> list[str]:
    """Every column of a per-group table (and of its CSV), in order, for runs with these frame columns."""
    columns = ["case", *(["group"] if with_group else []), "seeds"]
    for metric in metric_columns(split, available):
        columns += [metric, metric + STD_SUFFIX]
    return [*columns, "diverged", "stalled", "outcome", *([BUSY] if BUSY in available else []),
            *([PARALLEL] if PARALLEL in available else [])]


# ----------------------------------------------------------------------------------- grouping
def check_fields(fields: Sequence[str], option: str) -> list[str]:
    """The fields, each once, or a one-line error naming the first unknown one and the valid choices."""
    if not fields:
        raise ConvbenchError(f"{option} needs at least one field; valid choices: {', '.join(CASE_FIELDS)}")
    for name in fields:
        if name not in CASE_FIELDS:
            raise ConvbenchError(f"unknown {option} field {name!r}; " + choices_hint(name, CASE_FIELDS))
    return list(dict.fromkeys(fields))


def plain(value: Any) -> Any:
    """A frame cell as a plain Python value; missing values (None, NaN) become None."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def label(value: Any) -> str:
    """A case-field value as text: 0.1 -> '0.1', 100.0 -> '100', None -> 'None'."""
    value = plain(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:g}"
    return str(value)


def _order(value: Any) -> tuple[bool, bool, Any]:
    value = plain(value)
    return (value is None, isinstance(value, str), 0 if value is None else value)


def _matches(column: pd.Series, value: Any) -> pd.Series:
    return column.isna() if value is None else column.map(plain) == value


def partition(frame: pd.DataFrame, group_by: Sequence[str] | None = None) -> dict[str, pd.DataFrame]:
    """Rows per group: benchmark groups in the order they first appear, or with ``group_by`` one part
    per combination of those fields' values, in ascending order (``optimizer=sgd, lr=0.1``)."""
    if not group_by:
        return {group: frame.loc[frame["group"] == group] for group in frame["group"].drop_duplicates()}
    combos = {tuple(plain(v) for v in row) for row in frame[list(group_by)].itertuples(index=False)}
    parts = {}
    for combo in sorted(combos, key=lambda c: tuple(_order(v) for v in c)):
        selected = pd.Series(True, index=frame.index)
        for field_name, value in zip(group_by, combo, strict=True):
            selected &= _matches(frame[field_name], value)
        name = ", ".join(f"{f}={label(v)}" for f, v in zip(group_by, combo, strict=True))
        parts[name] = frame.loc[selected]
    return parts


# --------------------------------------------------------------------------- seed aggregation
def _case_name(ids: list[str]) -> str:
    distinct = list(dict.fromkeys(ids))
    if len(ids) == 1 or len(distinct) == 1:
        return distinct[0]
    stripped = list(dict.fromkeys(seedless_id(i) for i in distinct))
    return stripped[0] if len(stripped) == 1 else ", ".join(distinct)


def mean_and_spread(values: Sequence[Any]) -> tuple[float | None, float | None]:
    """The mean and the sample standard deviation (None for one value) of the values the runs recorded.

    None is a value a run did not record and is left out; a NaN or an infinity a run did record is not:
    it makes the mean non-finite (and the spread NaN), so that the table shows it instead of hiding it.
    """
    recorded = [float(v) for v in values if v is not None and v is not pd.NA]
    if not recorded:
        return None, None
    if not all(map(math.isfinite, recorded)):
        return sum(recorded) / len(recorded), (math.nan if len(recorded) > 1 else None)
    series = pd.Series(recorded, dtype=float)
    return float(series.mean()), (float(series.std(ddof=1)) if len(recorded) > 1 else None)


def _summary(values: list[Any]) -> Any:
    """One value when all runs agree, else the counts (``2 passed, 1 failed``)."""
    distinct = list(dict.fromkeys(values))
    if len(distinct) == 1:
        return distinct[0]
    return ", ".join(f"{values.count(v)} {v}" for v in distinct)


def aggregate_seeds(runs: pd.DataFrame, split: str, *, with_group: bool = False) -> pd.DataFrame:
    """One row per configuration: runs that differ only in their seed become one row with means and
    sample standard deviations (None for a single seed) and the count of runs in ``seeds``."""
    rows = []
    for _, seeds in runs.groupby("_config", sort=False):
        row: dict[str, Any] = {"case": _case_name(seeds["case"].tolist()), "seeds": len(seeds)}
        if with_group:
            row["group"] = seeds["group"].iloc[0]
        for metric in metric_columns(split, runs.columns):
            mean, std = mean_and_spread(seeds[metric].tolist())
            if metric == "samples_per_s":
                mean, std = whole(mean), whole(std)
            row[metric], row[metric + STD_SUFFIX] = mean, std
        row["diverged"] = _verdict_count(seeds["diverged"].tolist())
        row["stalled"] = _verdict_count(seeds["stalled"].tolist())
        row["outcome"] = _summary([plain(v) for v in seeds["outcome"]])
        if BUSY in runs.columns:  # "yes", or "2 yes, 1 no" over the seeds ("-": not recorded)
            row[BUSY] = _summary([plain(v) or "-" for v in seeds[BUSY]])
        if PARALLEL in runs.columns:  # "2 workers" (pytest -n 2), "alone", or "2 2 workers, 1 alone" over seeds
            row[PARALLEL] = _summary([plain(v) for v in seeds[PARALLEL]])
        rows.append(row)
    # object dtype keeps None (not recorded) apart from NaN (recorded): see convbench.report.formats
    table = pd.DataFrame(rows, columns=table_columns(split, runs.columns, with_group=with_group), dtype=object)
    return table.astype({"seeds": int})


def _verdict_count(values: list[Any]) -> Any:
    """A verdict over the seeds: True/False when they agree, else ``"1/3"`` (how many of them had it).

    None (the result predates the verdict) is unknown, never False: all unknown is None; a mix counts
    only the seeds that were judged."""
    judged = [bool(plain(v)) for v in values if plain(v) is not None]
    if not judged:
        return None
    if len(judged) == len(values) and len(set(judged)) == 1:
        return judged[0]
    return f"{sum(judged)}/{len(judged)}"


# ----------------------------------------------------------------------------------- sorting
def _diverged_fraction(value: Any) -> float | None:
    value = plain(value)
    if value is None:
        return None
    if isinstance(value, str):
        done, total = value.split("/")
        return int(done) / int(total)
    return float(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _sort_key(column: pd.Series) -> pd.Series:
    if column.name in ("diverged", "stalled"):
        return column.map(_diverged_fraction)
    if column.dtype == object:
        values = [plain(v) for v in column]
        if all(v is None or _is_number(v) for v in values):  # a column of measurements: by value, NaN last
            return pd.to_numeric(column.map(plain), errors="coerce")
        return column.map(lambda v: None if plain(v) is None else str(v))
    return column


def sort_table(table: pd.DataFrame, column: str, *, descending: bool) -> pd.DataFrame:
    """Rows ordered by ``column`` (missing values last; ties keep their order)."""
    if not table[column].notna().any():
        return table
    return table.sort_values(column, ascending=not descending, na_position="last", kind="stable", key=_sort_key)


def group_tables(frame: pd.DataFrame, headline: Headline, *, group_by: Sequence[str] | None = None,
                 sort: str | None = None, descending: bool = False) -> dict[str, pd.DataFrame]:
    """One seed-aggregated table per group, best ``headline`` first unless ``sort`` names a column.

    With ``group_by`` the groups are combinations of those case fields and the tables gain a ``group``
    column (the benchmark group). Unknown fields or sort columns are one-line `ConvbenchError`s.
    """
    if group_by is not None:
        group_by = check_fields(group_by, "--group-by")
    with_group = bool(group_by) and "group" not in group_by
    valid = table_columns(headline.split, frame.columns, with_group=with_group)
    if sort is not None and sort not in valid:
        raise ConvbenchError(f"unknown --sort column {sort!r}; " + choices_hint(sort, valid))
    by, desc = (headline.column, headline.higher_is_better) if sort is None else (sort, descending)
    tables = {}
    for name, runs in partition(frame, group_by).items():
        table = aggregate_seeds(runs, headline.split, with_group=with_group)
        tables[name] = sort_table(table, by, descending=desc).reset_index(drop=True)
    return tables


# ----------------------------------------------------------------------------------- pivots
@dataclass(frozen=True)
class PivotSpec:
    row: str
    column: str
    metric: str | None = None  # None: the headline metric (final accuracy, else final loss)

    @classmethod
    def parse(cls, text: str) -> PivotSpec:
        """``ROW,COL[:METRIC]``, e.g. ``lr,batch_size:final_test_accuracy``."""
        fields, colon, metric = text.partition(":")
        names = [f.strip() for f in fields.split(",")]
        if len(names) != 2 or not all(names) or (colon and not metric.strip()):
            raise ConvbenchError(f"--pivot expects ROW,COL[:METRIC] (e.g. lr,batch_size:final_test_accuracy), "
                                 f"got {text!r}")
        for name in names:
            check_fields([name], "--pivot")
        if names[0] == names[1]:
            raise ConvbenchError(f"--pivot needs two different fields, got {text!r}")
        return cls(names[0], names[1], metric.strip() or None)

    def metric_for(self, headline: Headline, available: Collection[str]) -> str:
        """The metric to lay out; one that no run has (an optional one, such as energy) is an error."""
        if self.metric is None:
            return headline.column
        valid = [m for m in (m.format(split=headline.split) for m in PIVOT_METRICS)
                 if m not in OPTIONAL_METRICS or m in available]
        if self.metric not in valid:
            raise ConvbenchError(f"unknown --pivot metric {self.metric!r}; " + choices_hint(self.metric, valid))
        return self.metric


@dataclass
class Pivot:
    group: str
    metric: str
    spec: PivotSpec
    table: pd.DataFrame
    mixed_cells: int  # cells averaging runs that differ in more than the two fields and the seed

    @property
    def title(self) -> str:
        return f"pivot {self.group}: mean {self.metric} by {self.spec.row} (rows) and {self.spec.column} (columns)"


def pivot_tables(frame: pd.DataFrame, headline: Headline, spec: PivotSpec,
                 group_by: Sequence[str] | None = None) -> dict[str, Pivot]:
    """Per group, the mean of one metric over the runs (seeds included) at each (row, column) value pair."""
    metric = spec.metric_for(headline, frame.columns)
    if group_by is not None:
        group_by = check_fields(group_by, "--group-by")
    pivots = {}
    for name, runs in partition(frame, group_by).items():
        rows = sorted({plain(v) for v in runs[spec.row]}, key=_order)
        columns = sorted({plain(v) for v in runs[spec.column]}, key=_order)
        data: dict[str, list[Any]] = {f"{spec.row} \\ {spec.column}": [label(r) for r in rows]}
        mixed = 0
        for column in columns:
            cells = []
            for row in rows:
                cell = runs.loc[_matches(runs[spec.row], row) & _matches(runs[spec.column], column)]
                cells.append(mean_and_spread(cell[metric].tolist())[0])
                mixed += cell["_config"].nunique() > 1
            data[label(column)] = cells
        pivots[name] = Pivot(name, metric, spec, pd.DataFrame(data, dtype=object), mixed)
    return pivots


def display(table: pd.DataFrame) -> pd.DataFrame:
    """The table as shown to people: spread columns only where some case has several seeds."""
    empty = [c for c in table.columns if c.endswith(STD_SUFFIX) and not table[c].notna().any()]
    return table.drop(columns=empty)


def write_tables(frame: pd.DataFrame, tables: dict[str, pd.DataFrame], out_dir: Path, names: Names) -> list[Path]:
    """``all_cases.{csv,html,tex}`` (one row per run, every column) and ``<group>.{csv,md,html,tex}``, each
    group's files named by ``names`` (shared with the figures)."""
    out = out_dir / "tables"
    out.mkdir(parents=True, exist_ok=True)
    everything = frame.drop(columns=[c for c in frame.columns if c.startswith("_")])
    base = names.file("tables", "all_cases")
    written = [out / f"{base}.csv", out / f"{base}.html", out / f"{base}.tex"]
    to_csv(everything, written[0])
    written[1].write_text(to_html(everything, "all cases"), encoding="utf-8")
    written[2].write_text(to_latex(everything, "all cases"), encoding="utf-8")
    for group, table in tables.items():
        base = names.file("tables", names.group(group))
        paths = [out / f"{base}{suffix}" for suffix in (".csv", ".md", ".html", ".tex")]
        shown = display(table)
        to_csv(table, paths[0])
        paths[1].write_text(f"{heading(1, group)}\n\n{to_markdown(shown)}\n", encoding="utf-8")
        paths[2].write_text(to_html(shown, group), encoding="utf-8")
        paths[3].write_text(to_latex(shown, group), encoding="utf-8")
        written += paths
    return written


def write_pivots(pivots: dict[str, Pivot], out_dir: Path, names: Names) -> list[Path]:
    """``pivot-<group>.csv`` (full precision) and ``.md``."""
    out = out_dir / "tables"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for group, pivot in pivots.items():
        base = names.file("tables", "pivot", names.group(group))
        csv_path, md_path = out / f"{base}.csv", out / f"{base}.md"
        to_csv(pivot.table, csv_path)
        md_path.write_text(f"{heading(1, pivot.title)}\n\n{to_markdown(pivot.table)}\n", encoding="utf-8")
        written += [csv_path, md_path]
    return written
