"""The ``convbench`` command: ``report`` turns benchmark JSON into tables and figures; ``compare``
checks a new run of a suite against a baseline; ``list`` shows every registered component and the
plugin it came from."""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from convbench import __version__
from convbench.errors import ConvbenchError
from convbench.report.figures import FORMATS, X_AXES
from convbench.report.load import CASE_FIELDS

DEFAULT_REPORT_DIR = "convbench-report"


class _CommandParser(argparse.ArgumentParser):
    """A command's parser whose help may name registered components: an argument's ``late_help`` (a function)
    is called when help is shown, so that a command starts without loading plugins just to describe them."""

    def format_help(self) -> str:
        for action in self._actions:
            late_help = getattr(action, "late_help", None)
            if late_help is not None:
                action.help = late_help()
        return super().format_help()


def _figures_help() -> str:
    from convbench.registry import FIGURE
    from convbench.report.figures.writer import figure_kinds, figure_registry

    registry = figure_registry()
    kinds = figure_kinds(registry)
    listed = "; ".join(f"{name}: {c.description}" for name, c in registry.get_kind(FIGURE).items())
    defaults = ", ".join(name for name, kind in kinds.items() if kind.default)
    across = ", ".join(name for name, kind in kinds.items() if kind.across_groups)
    return (f"which figures to draw, or all (default: each of {defaults} where the runs support it); each per "
            f"group, but {across} across groups. "
            f"{listed}. `convbench list figure` names their plugins")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="convbench", description=__doc__)
    parser.add_argument("--version", action="version", version=f"convbench {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_CommandParser)

    report = commands.add_parser("report", help="tables and figures from benchmark JSON / results files",
                                 description="Print a comparison table per group and write tables (CSV, "
                                             "Markdown, HTML, LaTeX) and figures (PNG, SVG) to a folder. Runs that "
                                             "differ only in their seed are one row: each metric is the mean "
                                             "over the seeds, <metric>_std the standard deviation, and 'seeds' "
                                             "the number of runs.")
    report.add_argument("inputs", nargs="+", metavar="FILE",
                        help="pytest --benchmark-json files or convbench results files (.jsonl)")
    report.add_argument("-o", "--output", metavar="DIR", default=DEFAULT_REPORT_DIR,
                        help=f"folder for tables/ and figures/ (default {DEFAULT_REPORT_DIR})")
    report.add_argument("--no-figures", action="store_true", help="write tables only")
    report.add_argument("--no-interactive", action="store_true",
                        help="index.html without the interactive curves (hover, toggle cases), and without the "
                             "4.6 MB plotly.min.js they need beside it")
    report.add_argument("--sort", metavar="COLUMN",
                        help="order each table by this column, ascending; -COLUMN for descending "
                             "(default: best final accuracy first)")
    report.add_argument("--descending", action="store_true", help="sort --sort's column in descending order")
    report.add_argument("--group-by", metavar="FIELD[,FIELD...]",
                        help="one table per combination of these case fields (e.g. optimizer,lr) instead of "
                             "one per benchmark group; fields: " + ", ".join(CASE_FIELDS))
    report.add_argument("--pivot", metavar="ROW,COL[:METRIC]",
                        help="also a grid per group of METRIC's mean over ROW x COL values (e.g. "
                             "lr,batch_size:final_test_accuracy), printed and written as "
                             "tables/pivot-<group>.csv and .md; METRIC defaults to the final accuracy "
                             "(the final held-out loss where there is no accuracy)")
    figures = report.add_argument("--figures", metavar="KIND[,KIND...]",
                                  help="which registered figure kinds to draw, or all")
    figures.late_help = _figures_help
    report.add_argument("--format", metavar="FMT[,FMT...]",
                        help=f"figure file formats: {', '.join(FORMATS)} (default png)")
    report.add_argument("--x", choices=tuple(X_AXES), default="step",
                        help="x axis of the loss and accuracy curves (default step; time is training time)")
    report.add_argument("--log-y", action=argparse.BooleanOptionalAction, default=True,
                        help="log scale for the loss curves' y axis (default; --no-log-y for linear)")
    report.add_argument("--smooth", type=int, default=1, metavar="N",
                        help="draw the loss curves as the moving mean over N logged points (default 1: as logged; "
                             "each logged point is already the mean loss of its stretch of steps)")
    report.set_defaults(handler=_report)

    compare = commands.add_parser(
        "compare", help="regressions of a new run against a baseline",
        description="Compare two benchmark JSON / results files case by case (convergence cases matched by test "
                    "name and scale, their seeds together; throughput cases by test name). Exit status 1 when a "
                    "case regressed: it converged in BASE (not diverged, not stalled, target reached if it had "
                    "one, test passed) and does not in NEW; its final metric (accuracy, or loss where there is "
                    "none) got worse by more than --metric-threshold, or its steps to target grew by more than "
                    "--steps-threshold (with several seeds a change must also exceed 2 x the pooled standard "
                    "error of the difference); its final metric is missing or not finite in NEW; or its train "
                    "time (a throughput case: its time per round) grew by more than --time-threshold and "
                    "--min-time-diff, with Welch's t-test p <= --alpha on at least --min-time-samples runs "
                    "(rounds) a side, none measured on a busy machine. A time that cannot be judged (too few "
                    "runs, a busy machine) is a note, never a failure. 0 otherwise; 2 when an input, or an "
                    "entry of one, cannot be read (one line each; the rest is still compared), or when no case "
                    "of BASE matches one of NEW. Cases in only one file are listed, not failures.")
    compare.add_argument("base", metavar="BASE", help="the baseline: benchmark JSON or results file (.jsonl)")
    compare.add_argument("new", metavar="NEW", help="the run to check, in either format")
    compare.add_argument("--time-threshold", metavar="FRACTION", default="0.10",
                         help="largest train-time (round-time) increase that is not a regression, relative "
                              "(default 0.10)")
    compare.add_argument("--min-time-diff", metavar="SECONDS", default="0.05",
                         help="largest increase in seconds that is not a regression, however large relative to "
                              "a short run (default 0.05: a few scheduler time slices)")
    compare.add_argument("--alpha", metavar="P", default="0.01",
                         help="significance level of the one-sided Welch t-test a slowdown must pass (default "
                              "0.01)")
    compare.add_argument("--min-time-samples", metavar="N", default="3",
                         help="fewest runs (seeds) or throughput rounds a side for a time to be judged (default "
                              "3); fewer are 'not enough data'. 1 judges single runs by the thresholds alone")
    compare.add_argument("--judge-busy", action="store_true",
                         help="judge times measured while the machine was busy with other work too (by default "
                              "they are noted, not judged)")
    compare.add_argument("--metric-threshold", metavar="DELTA", default="0.01",
                         help="largest worsening of the final metric that is not a regression, absolute "
                              "(default 0.01; 0 fails any worsening)")
    compare.add_argument("--steps-threshold", metavar="FRACTION", default="0.10",
                         help="largest growth of the steps to target that is not a regression, relative "
                              "(default 0.10)")
    compare.set_defaults(handler=_compare)

    listing = commands.add_parser("list", help="registered optimizers, models, schedulers, augmentations, "
                                               "datasets and report figures",
                                  description="List components and their plugins.")
    listing.add_argument("kind", nargs="?", help="only this kind: optimizer, model, scheduler, augmentation, "
                                                 "dataset or figure")
    listing.set_defaults(handler=_list)

    from convbench.search.command import add_parser as add_search_parser  # convbench search (Optuna)

    add_search_parser(commands)
    return parser


def _report(args: argparse.Namespace) -> int:
    from convbench.report.build import make_report
    from convbench.report.figures import FigureOptions
    from convbench.report.tables import PivotSpec

    sort, descending = args.sort, args.descending
    if sort is not None and sort.startswith("-"):
        sort, descending = sort[1:], True
    group_by = None if args.group_by is None else [f.strip() for f in args.group_by.split(",") if f.strip()]
    pivot = None if args.pivot is None else PivotSpec.parse(args.pivot)
    figure_options = FigureOptions.parse(args.figures, args.format, args.x, args.log_y, smooth=args.smooth)
    report = make_report(args.inputs, Path(args.output), figures=not args.no_figures, sort=sort,
                         descending=descending, group_by=group_by, pivot=pivot, figure_options=figure_options,
                         interactive=not args.no_interactive)
    _print_problems(report.warnings, report.errors)
    if not report.cases:
        if not report.errors:
            print("convbench: error: no results to report", file=sys.stderr)
        return 2
    print(report.text)
    print(f"\n{report.cases} cases; wrote {len(report.written)} files to {args.output}/: open index.html; "
          "the tables with every column are under tables/")
    return 1 if report.errors else 0


def _print_problems(warnings: Sequence[str], errors: Sequence[str]) -> None:
    """Each warning and error on one line of its own (a file or test name may hold a line break)."""
    from convbench.report.formats import one_line

    for kind, lines in (("warning", warnings), ("error", errors)):
        for line in lines:
            print(f"convbench: {kind}: {one_line(line)}", file=sys.stderr)


def _threshold(text: str, option: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConvbenchError(f"{option} must be a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ConvbenchError(f"{option} must be a finite number >= 0, got {text!r}")
    return value


def _compare(args: argparse.Namespace) -> int:
    from convbench.report.compare import compare_files
    from convbench.report.regression import Rules
    from convbench.report.time_rule import TimeRule

    alpha = _threshold(args.alpha, "--alpha")
    if not 0 < alpha < 1:
        raise ConvbenchError(f"--alpha must be between 0 and 1, got {args.alpha!r}")
    time_rule = TimeRule(threshold=_threshold(args.time_threshold, "--time-threshold"),
                         min_diff_s=_threshold(args.min_time_diff, "--min-time-diff"), alpha=alpha,
                         min_samples=_count(args.min_time_samples, "--min-time-samples"), judge_busy=args.judge_busy)
    rules = Rules(time=time_rule, metric_threshold=_threshold(args.metric_threshold, "--metric-threshold"),
                  steps_threshold=_threshold(args.steps_threshold, "--steps-threshold"))
    comparison = compare_files(args.base, args.new, rules)
    _print_problems(comparison.warnings, comparison.errors)
    if comparison.text:  # what could be read is compared, even beside an entry that could not
        print(comparison.text)
    if comparison.errors:
        return 2
    return 1 if comparison.regressions else 0


def _count(text: str, option: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ConvbenchError(f"{option} must be a whole number >= 1, got {text!r}")
    return value


def _list(args: argparse.Namespace) -> int:
    import warnings

    from convbench.errors import PluginProblemWarning
    from convbench.registry import KINDS, load_registry

    if args.kind is not None and args.kind not in KINDS:
        from convbench.errors import choices_hint

        raise ConvbenchError(f"unknown kind {args.kind!r}; " + choices_hint(args.kind, KINDS))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginProblemWarning)  # printed below, once
        registry = load_registry()
    kinds = KINDS if args.kind is None else (args.kind,)
    for kind in kinds:
        components = registry.components(kind)
        print(f"{kind}s ({len(components)}):")
        width = max((len(c.name) for c in components), default=0)
        for c in components:
            defaults = ", ".join(f"{k}={v!r}" for k, v in c.effective_defaults().items())
            extra = f"  [{defaults}]" if defaults else ""
            print(f"  {c.name:<{width}}  {c.description}{extra}  ({c.plugin})")
    for problem in registry.problems:
        print(f"convbench: warning: {problem}", file=sys.stderr)
    return 0


def _attach_sort_values(argv: list[str]) -> list[str]:
    """``--sort -COLUMN`` as ``--sort=-COLUMN``: argparse would take ``-COLUMN`` for an option."""
    joined: list[str] = []
    index = 0
    while index < len(argv):
        token = argv[index]
        if token == "--":
            return joined + argv[index:]
        following = argv[index + 1] if index + 1 < len(argv) else ""
        if token == "--sort" and re.fullmatch(r"-[A-Za-z_]\w+", following):
            joined.append(f"--sort={following}")
            index += 2
            continue
        joined.append(token)
        index += 1
    return joined


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_attach_sort_values(list(sys.argv[1:] if argv is None else argv)))
    try:
        return args.handler(args)
    except ConvbenchError as exc:
        print(f"convbench: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
