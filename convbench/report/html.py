"""``index.html``: the report on one page, answering each group's question first.

Per group: a short summary (the best case, the diverged, stalled and failed ones, the target; the same
lines a pytest session ends with, `convbench.session_summary`), then its interactive curves
(`convbench.report.interactive`: hover, toggle cases), then its figures, then its table. What
spans groups (scaling, throughput, pivots, the performance profile, all cases) follows. Tables sort by
a click on a column header (a few lines of inline script); links are relative and nothing is fetched,
so the folder can be opened from disk, zipped or served as it is.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from convbench.report.figures import FORMATS
from convbench.report.interactive import INTERACTIVE_KINDS, PLOTLY_JS

FIGURE_SUFFIXES = tuple(f".{fmt}" for fmt in FORMATS)
_TABLE = re.compile(r"<table.*?</table>", flags=re.S)
_STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; max-width: 110em; }
nav a { margin-right: 1em; }
section.group { border-top: 2px solid #ddd; margin-top: 1.5em; }
ul.summary { background: #f6f8fa; padding: 0.6em 0.6em 0.6em 2em; font-size: 0.95em; }
ul.summary .bad { color: #a40000; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: right; white-space: nowrap; }
th { background: #f0f0f0; cursor: pointer; user-select: none; }
th[aria-sort=ascending]::after { content: " \\25B2"; }
th[aria-sort=descending]::after { content: " \\25BC"; }
.figures { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0 0 1em; max-width: 48em; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.9em; }
.scroll { overflow-x: auto; }
.interactive { max-width: 100em; }
"""
# Click a header to sort its table by that column (numbers as numbers, "-" last); again to reverse.
_SORT_SCRIPT = """
document.querySelectorAll("table").forEach(function (table) {
  table.querySelectorAll("thead th").forEach(function (th, column) {
    th.addEventListener("click", function () {
      var up = th.getAttribute("aria-sort") !== "ascending";
      table.querySelectorAll("thead th").forEach(function (other) { other.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", up ? "ascending" : "descending");
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      function key(row) {
        var text = row.cells[column] ? row.cells[column].textContent.trim() : "";
        var number = parseFloat(text);
        return text === "-" || text === "" ? null : (isNaN(number) || !/^[-+]?[0-9.]/.test(text) ? text : number);
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === null || y === null) { return x === y ? 0 : (x === null ? 1 : -1); }
        if (typeof x !== typeof y) { x = String(x); y = String(y); }
        return (x < y ? -1 : x > y ? 1 : 0) * (up ? 1 : -1);
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""


@dataclass(frozen=True)
class GroupSummary:
    """One group of the report: its name, the stem of its files (`Names.group`), its summary lines."""

    name: str
    stem: str
    lines: list[str] = field(default_factory=list)


def _table_html(path: Path) -> str:
    """The ``<table>`` of a written HTML table, or a CSV table rendered as one."""
    if path.suffix == ".html":
        found = _TABLE.search(path.read_text(encoding="utf-8"))
        return found.group(0) if found else ""
    import pandas as pd

    return pd.read_csv(path).to_html(index=False, na_rep="-", border=0)


def _owner(stem: str, groups: Sequence[GroupSummary], *, exact: bool) -> GroupSummary | None:
    """The group a file belongs to: its table is named by the group's stem, its figures
    ``<stem>-<kind>``; the longest matching stem wins (groups ``a`` and ``a-b``)."""
    matches = [g for g in groups if stem == g.stem or (not exact and stem.startswith(g.stem + "-"))]
    return max(matches, key=lambda g: len(g.stem), default=None)


def _summary_html(lines: Sequence[str]) -> str:
    """The summary lines as a list (the group's own first line is its heading's count)."""
    items = []
    for line in lines[1:]:
        text = line.strip()
        bad = text.startswith(("diverged:", "stalled:", "failed before training:"))
        attribute = ' class="bad"' if bad else ""
        items.append(f"<li{attribute}>{html.escape(text)}</li>")
    return f'<ul class="summary">\n{"".join(items)}\n</ul>\n' if items else ""


def write_index(out_dir: Path, written: Sequence[Path], title: str = "convbench report",
                groups: Sequence[GroupSummary] = (), interactive: Mapping[str, str] | None = None) -> Path:
    """Write ``out_dir/index.html`` for the ``written`` files (tables under tables/, figures under figures/),
    one section per group of ``groups`` (summary, interactive curves, figures, table), then everything else.

    ``interactive`` maps a group's stem to its interactive curves (`convbench.report.interactive`), drawn by
    the ``plotly.min.js`` written beside the page."""
    interactive = dict(interactive or {})
    out_dir = Path(out_dir)
    files = list(dict.fromkeys(Path(p) for p in written))  # a file written twice is still one entry
    tables = [p for p in files if p.parent.name == "tables" and p.suffix == ".html"]
    html_stems = {p.stem for p in tables}
    tables += [p for p in files if p.parent.name == "tables" and p.suffix == ".csv" and p.stem not in html_stems]
    figures: dict[str, list[Path]] = {}
    for path in files:
        if path.parent.name == "figures" and path.suffix in FIGURE_SUFFIXES:
            figures.setdefault(path.stem, []).append(path)

    def rel(path: Path) -> str:
        return html.escape(path.relative_to(out_dir).as_posix(), quote=True)

    def table_section(path: Path) -> str:
        siblings = [p for p in files if p.parent == path.parent and p.stem == path.stem]
        links = " ".join(f'<a href="{rel(p)}">{html.escape(p.suffix[1:])}</a>' for p in sorted(siblings))
        return (f'<section class="table" id="table-{html.escape(path.stem, quote=True)}">\n'
                f"<h3>{html.escape(path.stem)}</h3>\n<p>{links}</p>\n"
                f'<div class="scroll">{_table_html(path)}</div>\n</section>\n')

    def figure_html(stem: str) -> str:
        paths = figures[stem]
        shown = next((p for p in paths if p.suffix == ".png"), paths[0])
        links = " ".join(f'<a href="{rel(p)}">{html.escape(p.suffix[1:])}</a>' for p in paths)
        return (f'<figure id="figure-{html.escape(stem, quote=True)}">\n'
                f'<img src="{rel(shown)}" alt="{html.escape(stem, quote=True)}">\n'
                f"<figcaption>{html.escape(stem)}: {links}</figcaption>\n</figure>\n")

    def figures_html(stems: Sequence[str]) -> str:
        return f'<div class="figures">\n{"".join(figure_html(s) for s in stems)}</div>\n' if stems else ""

    def curves_html(group: GroupSummary, stems: list[str]) -> str:
        """The interactive curves, with links to the static figures they stand in for (taken out of
        ``stems``, so that the page does not show the same curves twice)."""
        if group.stem not in interactive:
            return ""
        static = [s for s in stems if s in (f"{group.stem}-{kind}" for kind in INTERACTIVE_KINDS)]
        for stem in static:
            stems.remove(stem)
        links = "; ".join(f"{html.escape(stem)}: " + " ".join(f'<a href="{rel(p)}">{html.escape(p.suffix[1:])}</a>'
                                                              for p in figures[stem]) for stem in static)
        note = f'<p class="static">static figures: {links}</p>\n' if links else ""
        return f'<div class="interactive" id="curves-{html.escape(group.stem, quote=True)}-section">' \
               f"{interactive[group.stem]}</div>\n{note}"

    placed_tables = {p: _owner(p.stem, groups, exact=True) for p in tables}
    placed_figures = {s: _owner(s, groups, exact=False) for s in figures}
    nav = "".join(f'<a href="#group-{html.escape(g.stem, quote=True)}">{html.escape(g.name)}</a>' for g in groups)
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{html.escape(title)}"
             f"</title>\n<style>{_STYLE}</style>\n"
             + (f'<script src="{PLOTLY_JS}" charset="utf-8"></script>\n' if interactive else "")
             + f"</head>\n<body>\n<h1>{html.escape(title)}</h1>\n"
             f'<nav>{nav}<a href="#across">across groups</a></nav>\n']
    for group in groups:
        heading = group.lines[0] if group.lines else group.name
        stems = [s for s, owner in placed_figures.items() if owner is group]
        parts.append(f'<section class="group" id="group-{html.escape(group.stem, quote=True)}">\n'
                     f"<h2>{html.escape(heading)}</h2>\n{_summary_html(group.lines)}"
                     + curves_html(group, stems)
                     + figures_html(stems)
                     + "".join(table_section(p) for p, owner in placed_tables.items() if owner is group)
                     + "</section>\n")
    rest_figures = [s for s, owner in placed_figures.items() if owner is None]
    rest_tables = [p for p, owner in placed_tables.items() if owner is None]
    parts.append(f'<section class="group" id="across">\n<h2>Across groups ({len(rest_figures)} figures, '
                 f"{len(rest_tables)} tables)</h2>\n" + figures_html(rest_figures)
                 + "".join(table_section(p) for p in rest_tables) + "</section>\n")
    parts.append(f"<script>{_SORT_SCRIPT}</script>\n</body>\n</html>\n")
    path = out_dir / "index.html"
    out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(parts), encoding="utf-8")
    return path
