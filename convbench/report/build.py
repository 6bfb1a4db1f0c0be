"""Assemble a report from several input files: load each, tabulate, plot, write."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from convbench.errors import ReportInputError
from convbench.report import load as loader
from convbench.report.figures import FigureKind, FigureOptions
from convbench.report.figures.writer import figure_kinds, figure_registry, write_figures
from convbench.report.formats import heading, to_markdown
from convbench.report.html import GroupSummary, write_index
from convbench.report.identity import headline
from convbench.report.interactive import curves_div, has_curves, write_plotly_js
from convbench.report.names import Names
from convbench.report.scaling import scaling_rows, throughput_rows, write_scaling, write_throughput
from convbench.report.tables import PivotSpec, group_tables, pivot_tables, write_pivots, write_tables
from convbench.report.terminal import to_terminal


@dataclass
class Report:
    text: str = ""
    written: list[Path] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    cases: int = 0


def make_report(paths: list[str | Path], out_dir: Path, *, figures: bool = True, sort: str | None = None,
                descending: bool = False, group_by: Sequence[str] | None = None,
                pivot: PivotSpec | None = None, figure_options: FigureOptions | None = None,
                interactive: bool = True) -> Report:
    """Report on every readable input; unreadable ones, and entries left out of readable ones, are listed in
    `Report.errors` (one line each), not fatal.

    A bad ``sort`` column, ``group_by`` field or ``pivot`` field/metric raises a one-line
    `ConvbenchError` before anything is written. ``interactive`` (with ``figures``) adds each group's
    interactive curves to index.html.
    """
    report = Report()
    kinds = _figure_kinds(report) if figures else {}  # built first: a figure plugin is checked before any writing
    records, throughput, failed = [], [], []
    for path in loader.expand_inputs(paths):
        try:
            loaded = loader.load(path)
        except ReportInputError as exc:
            report.errors.append(str(exc))
            continue
        report.warnings += loaded.warnings
        report.errors += loaded.rejected
        records += loaded.records
        throughput += loaded.throughput
        failed += loaded.failed
    records = _latest_only(records, report)
    names = Names()  # every file of the report is named by it: no two share a name
    if not records:
        if throughput:
            report.text, report.written = write_throughput(throughput_rows(throughput), out_dir, names)
            report.written.append(write_index(out_dir, report.written))
            report.cases = len(throughput)
        return report
    report.cases = len(records)
    metric = headline(records)
    frame = loader.to_frame(records, metric.split)
    tables = group_tables(frame, metric, group_by=group_by, sort=sort, descending=descending)
    pivots = pivot_tables(frame, metric, pivot, group_by) if pivot is not None else {}
    sections = []
    for group, table in tables.items():
        runs = int(table["seeds"].sum())
        count = f"{len(table)} case{'s' * (len(table) != 1)}" + (f", {runs} runs" if runs != len(table) else "")
        sections.append(f"{heading(2, f'{group} ({count})')}\n\n{to_terminal(table, metric)}")
    for pivot_table in pivots.values():
        sections.append(f"{heading(2, pivot_table.title)}\n\n{to_markdown(pivot_table.table)}")
        if pivot_table.mixed_cells:
            report.warnings.append(
                f"{pivot_table.title}: {pivot_table.mixed_cells} cell(s) average cases that differ in more than "
                f"{pivot.row}, {pivot.column} and seed; --group-by can separate them")
    scaling_text, scaling_files = write_scaling(scaling_rows(records), out_dir, names)
    throughput_text, throughput_files = write_throughput(throughput_rows(throughput), out_dir, names)
    sections += [text for text in (scaling_text, throughput_text) if text]
    from convbench.report.search import write_search  # convbench search's studies

    search_text, search_files = write_search(loader.expand_inputs(paths), out_dir, names, figures, report.warnings,
                                             tuple((figure_options or FigureOptions()).formats))  # convbench search
    sections += [search_text] if search_text else []
    report.written += search_files
    report.written += scaling_files + throughput_files
    report.cases += len(throughput)
    report.text = "\n\n".join(sections)
    report.written += write_tables(frame, tables, out_dir, names)
    report.written += write_pivots(pivots, out_dir, names)
    if figures:
        report.written += write_figures(records, out_dir, figure_options, kinds, names, report.warnings)
    curves = _interactive_curves(records, names, figure_options) if figures and interactive else {}
    if curves:
        report.written.append(write_plotly_js(out_dir))
    report.written.append(write_index(out_dir, report.written, groups=_group_summaries(records + failed, names),
                                      interactive=curves))
    return report


def _group_summaries(records: list[dict], names: Names) -> list[GroupSummary]:
    """Each benchmark group's summary lines for index.html (cases that failed before training included),
    groups in the order of their first run."""
    from convbench.session_summary import group_lines

    return [GroupSummary(group, names.group(group), group_lines(group, members))
            for group, members in _by_group(records).items()]


def _interactive_curves(records: list[dict], names: Names, options: FigureOptions | None) -> dict[str, str]:
    """Each group's interactive curves (`convbench.report.interactive`), by the group's file stem; groups
    whose runs logged no curve have none."""
    smooth = options.smooth if options is not None else 1
    return {names.group(group): curves_div(members, smooth=smooth, div_id=f"curves-{names.group(group)}")
            for group, members in _by_group(records).items() if has_curves(members)}


def _by_group(records: list[dict]) -> dict[str, list[dict]]:
    """The records of each benchmark group, groups in the order of their first record."""
    by_group: dict[str, list[dict]] = {}
    for record in records:
        by_group.setdefault(record["group"], []).append(record)
    return by_group


def _figure_kinds(report: Report) -> dict[str, FigureKind]:
    """The figure kinds to draw with; problems of figure plugins (failed to load, duplicate names) are warnings."""
    registry = figure_registry()
    kinds = figure_kinds(registry)
    report.warnings += registry.problems
    return kinds


def _latest_only(records: list[dict], report: Report) -> list[dict]:
    """Keep one record per (test, scale): the last one read (see `load.latest_only`)."""
    latest, superseded = loader.latest_only(records)
    if superseded:
        report.warnings.append(f"{superseded} earlier result(s) of re-run cases superseded by later ones")
    return latest
