"""The per-group table as `convbench report` prints it: the columns that answer a study's question, narrow
enough for a terminal.

The written tables (``tables/<group>.{csv,md,html,tex}``) keep every column; a printed table of all of
them was 250 to 500 characters wide and wrapped into noise. Here each metric is one cell, ``mean ±sd``
over the seeds, the three verdict columns (diverged, stalled, outcome) are one, and columns no case has a
value in are left out.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from convbench.report.formats import number, to_markdown
from convbench.report.identity import Headline
from convbench.report.parallel import COLUMN as PARALLEL
from convbench.report.tables import BUSY, STD_SUFFIX, plain

#: What each printed metric column is called: the written tables' column names are made for scripts.
SHORT_NAMES = {"final_{split}_accuracy": "{split} acc", "best_{split}_accuracy": "best {split} acc",
               "final_{split}_loss": "{split} loss", "final_train_loss": "train loss",
               "final_train_accuracy": "train acc", "time_to_target_s": "to target s", "train_time_s": "train s",
               "compile_time_s": "compile s", "energy_j": "energy J"}
VERDICT = "verdict"


def printed_metrics(headline: Headline) -> dict[str, str]:
    """Table column -> printed name, for the metrics a printed table shows: the headline (final accuracy,
    else final loss) on its split, the best accuracy, the train accuracy and loss, time to target, training
    time, compile time (apart from training) and energy (the optional ones where runs recorded them)."""
    wanted = [headline.column, *([f"best_{headline.split}_accuracy"] if headline.accuracy else []),
              "final_train_accuracy", "final_train_loss", "time_to_target_s", "train_time_s", "compile_time_s",
              "energy_j"]
    names = {}
    for column in dict.fromkeys(wanted):
        template = next(t for t in SHORT_NAMES if t.format(split=headline.split) == column)
        names[column] = SHORT_NAMES[template].format(split=headline.split)
    return names


def mean_spread_text(mean: Any, spread: Any) -> Any:
    """``0.8207 ±0.01`` (the mean to 4 significant digits, the spread to 2), the mean alone where there is
    no spread (one seed), None where the runs did not record the metric."""
    if mean is None or mean is pd.NA:  # not `plain`: that would hide a recorded NaN as missing
        return None
    shown = number(float(mean))
    if spread is not None and spread is not pd.NA and math.isfinite(float(spread)):
        shown += f" ±{float(spread):.2g}"
    return shown


def verdict_text(row: pd.Series) -> str:
    """One word for how the case's runs ended: ``ok``, ``diverged``, ``stalled``, ``failed``, or over seeds
    ``diverged 1/3``; several where they differ (``diverged 1/3, stalled 1/3``); ``?`` for runs recorded
    before the stalled verdict existed that are otherwise fine."""
    words = []
    for name in ("diverged", "stalled"):
        value = plain(row.get(name))
        if value is True:
            words.append(name)
        elif isinstance(value, str):
            words.append(f"{name} {value}")
    outcome = plain(row.get("outcome"))
    if outcome is not None and outcome != "passed":
        words.append(str(outcome))
    if words:
        return ", ".join(words)
    return "?" if plain(row.get("stalled")) is None else "ok"


def terminal_table(table: pd.DataFrame, headline: Headline) -> pd.DataFrame:
    """The printed form of a per-group table (see the module docstring); rows in the table's order."""
    shown = pd.DataFrame({"case": table["case"]}, dtype=object)
    if "group" in table.columns:
        shown["group"] = table["group"]
    if (table["seeds"] > 1).any():
        shown["seeds"] = table["seeds"]
    for column, name in printed_metrics(headline).items():
        if column in table.columns:
            spread = table.get(column + STD_SUFFIX, pd.Series(None, index=table.index, dtype=object))
            values = [mean_spread_text(m, s) for m, s in zip(table[column], spread, strict=True)]
            if any(v is not None for v in values):
                shown[name] = pd.Series(values, index=table.index, dtype=object)
    shown[VERDICT] = [verdict_text(row) for _, row in table.iterrows()]
    for column in (BUSY, PARALLEL):  # whether the times can be trusted: other work, other cases beside it
        if column in table.columns:
            shown[column] = table[column]
    return shown


def to_terminal(table: pd.DataFrame, headline: Headline) -> str:
    """The printed Markdown table (cells as composed, missing as ``-``)."""
    return to_markdown(terminal_table(table, headline).reset_index(drop=True), numbers=False)

