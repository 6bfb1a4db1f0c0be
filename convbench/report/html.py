"""``index.html``: every table and figure of a report on one page, with relative links; no external assets."""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from pathlib import Path

from convbench.report.figures import FORMATS

FIGURE_SUFFIXES = tuple(f".{fmt}" for fmt in FORMATS)
_TABLE = re.compile(r"<table.*?</table>", flags=re.S)
_STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
nav a { margin-right: 1em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: right; white-space: nowrap; }
th { background: #f0f0f0; }
figure { margin: 0 0 2em; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.9em; }
.scroll { overflow-x: auto; }
"""


def _table_html(path: Path) -> str:
    """The ``<table>`` of a written HTML table, or a CSV table rendered as one."""
    if path.suffix == ".html":
        found = _TABLE.search(path.read_text(encoding="utf-8"))
        return found.group(0) if found else ""
    import pandas as pd

    return pd.read_csv(path).to_html(index=False, na_rep="-", border=0)


def write_index(out_dir: Path, written: Sequence[Path], title: str = "convbench report") -> Path:
    """Write ``out_dir/index.html`` for the ``written`` files (tables under tables/, figures under figures/)."""
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

    parts = [f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{html.escape(title)}"
             f"</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n<h1>{html.escape(title)}</h1>\n"
             '<nav><a href="#tables">tables</a><a href="#figures">figures</a></nav>\n'
             f'<h2 id="tables">Tables ({len(tables)})</h2>\n']
    for path in tables:
        siblings = [p for p in files if p.parent == path.parent and p.stem == path.stem]
        links = " ".join(f'<a href="{rel(p)}">{html.escape(p.suffix[1:])}</a>' for p in sorted(siblings))
        parts.append(f'<section class="table" id="table-{html.escape(path.stem, quote=True)}">\n'
                     f"<h3>{html.escape(path.stem)}</h3>\n<p>{links}</p>\n"
                     f'<div class="scroll">{_table_html(path)}</div>\n</section>\n')
    parts.append(f'<h2 id="figures">Figures ({len(figures)})</h2>\n')
    for stem, paths in figures.items():
        shown = next((p for p in paths if p.suffix == ".png"), paths[0])
        links = " ".join(f'<a href="{rel(p)}">{html.escape(p.suffix[1:])}</a>' for p in paths)
        parts.append(f'<figure id="figure-{html.escape(stem, quote=True)}">\n'
                     f'<img src="{rel(shown)}" alt="{html.escape(stem, quote=True)}">\n'
                     f"<figcaption>{html.escape(stem)}: {links}</figcaption>\n</figure>\n")
    parts.append("</body>\n</html>\n")
    path = out_dir / "index.html"
    out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(parts), encoding="utf-8")
    return path
