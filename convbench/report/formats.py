"""How a report's tables are written out: Markdown, HTML, LaTeX and CSV, from one reading of their cells.

Two things every format must get right, so they are decided here once:

* Missing is not the same as non-finite. A metric a run did not record is shown as ``-``; a NaN or an
  infinity that a run did record is shown as ``nan`` or ``inf``, never hidden and never a crash. In a
  float column pandas made, NaN is how pandas spells missing; in an object column (the report's tables
  keep their measurements that way, see `convbench.report.load.to_frame`) missing is None and a NaN is a NaN.
* A label may hold anything. In Markdown a ``|`` would open a new column and a newline end the row, so
  text cells and headings are escaped; in LaTeX a blank line inside a cell would end the paragraph.
"""

from __future__ import annotations

import html
import math
from typing import Any

import pandas as pd

MISSING = "-"


def one_line(text: Any) -> str:
    """``text`` on one line: each line break (``\\n``, ``\\r\\n``, ...) as a space."""
    return " ".join(str(text).splitlines())


def markdown_text(text: Any) -> str:
    """Text safe inside a Markdown table cell or heading: on one line, ``|`` escaped as ``\\|``."""
    return one_line(text).replace("|", "\\|")


def heading(level: int, text: Any) -> str:
    """A Markdown heading of ``text``, which stays one heading whatever it holds."""
    return f"{'#' * level} {markdown_text(text)}"


def _is_missing(value: Any) -> bool:
    return value is None or value is pd.NA or value is pd.NaT


def _objects(table: pd.DataFrame, values: list[Any]) -> pd.Series:
    """A column of exactly these values: a plain list assigned to a column is converted (pandas 3 makes
    ``[20.0, None]`` a float column, and the None a NaN that would be shown as ``nan``)."""
    return pd.Series(values, index=table.index, dtype=object)


def cells(table: pd.DataFrame) -> pd.DataFrame:
    """The table as plain cells (object dtype): None where a value is missing, numbers (non-finite ones
    included) and text as they are."""
    shown = table.astype(object)
    for column in table.columns:
        native_float = table[column].dtype.kind == "f"
        shown[column] = _objects(shown, [None if _is_missing(v) or (native_float and math.isnan(v)) else v
                                         for v in shown[column]])
    return shown


def _text_cells(table: pd.DataFrame, text: Any) -> pd.DataFrame:
    """Every cell with a non-number value (and every column name) passed through ``text``."""
    shown = cells(table)
    for column in shown.columns:
        shown[column] = _objects(shown, [v if v is None or isinstance(v, (int, float)) else text(v)
                                         for v in shown[column]])
    return shown.rename(columns=lambda c: text(c))


def _non_finite_text(value: Any) -> Any:
    return str(value) if isinstance(value, float) and not math.isfinite(value) else value


def _non_finite_as_text(table: pd.DataFrame) -> pd.DataFrame:
    """Missing cells as ``-`` and non-finite numbers as ``nan``/``inf`` text: HTML and LaTeX writers would
    show NaN as missing and None as ``None``."""
    for column in table.columns:
        table[column] = _objects(table, [MISSING if v is None else _non_finite_text(v) for v in table[column]])
    return table


def number(value: float) -> str:
    return format(value, ".4g")


def to_markdown(table: pd.DataFrame, *, numbers: bool = True) -> str:
    """A Markdown table; numbers to 4 significant digits unless ``numbers`` is False (cells shown as given)."""
    shown = _text_cells(table, markdown_text)
    if not numbers:
        shown = shown.map(lambda v: MISSING if v is None else str(v))
        return shown.to_markdown(index=False, disable_numparse=True)
    return shown.to_markdown(index=False, floatfmt=".4g", missingval=MISSING)


def to_html(table: pd.DataFrame, title: str) -> str:
    """A standalone HTML page holding the table (numbers to 4 significant digits, missing as '-')."""
    body = _non_finite_as_text(cells(table)).to_html(index=False, na_rep=MISSING, float_format=number, border=0)
    name = html.escape(one_line(title))
    return (f'<!DOCTYPE html>\n<html>\n<head>\n<meta charset="utf-8">\n<title>{name}</title>\n</head>\n'
            f"<body>\n<h1>{name}</h1>\n{body}\n</body>\n</html>\n")


def to_latex(table: pd.DataFrame, title: str) -> str:
    """A booktabs ``tabular`` (``\\usepackage{booktabs}``) to ``\\input`` into a document."""
    shown = _non_finite_as_text(_text_cells(table, one_line))
    return f"% {one_line(title)}\n" + shown.to_latex(index=False, na_rep=MISSING, float_format=number, escape=True)


def to_csv(table: pd.DataFrame, path: Any) -> None:
    """CSV at full precision: missing cells empty, non-finite numbers as ``nan``/``inf``."""
    shown = cells(table)
    for column in shown.columns:
        shown[column] = _objects(shown, [_non_finite_text(v) for v in shown[column]])
    shown.to_csv(path, index=False)
