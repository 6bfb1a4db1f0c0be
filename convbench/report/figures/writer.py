"""Draw the chosen figure kinds of a report and save them: the per-group kinds for each group, then the
across-groups kinds once, each where it applies."""

from __future__ import annotations

import warnings
from pathlib import Path

from convbench.errors import ConvbenchError, PluginProblemWarning
from convbench.registry import FIGURE, Registry, get_figure_registry
from convbench.report.figures import FigureKind, FigureOptions, Record
from convbench.report.names import Names


def figure_registry() -> Registry:
    """The registry that holds the figure kinds; its `Registry.problems` are the report's to print."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginProblemWarning)  # the report prints them as its warnings
        return get_figure_registry()


def figure_kinds(registry: Registry | None = None) -> dict[str, FigureKind]:
    """Every registered figure kind by name, built (their modules, and matplotlib, are imported here).

    A factory that fails or builds something other than a `FigureKind` is a plugin problem like any other:
    added to `Registry.problems` and left out, so that one broken plugin does not stop the report.
    """
    registry = registry or figure_registry()
    kinds = {}
    for name, component in registry.get_kind(FIGURE).items():
        try:
            kind = component.build()
        except Exception as exc:  # a plugin's bug: reported, not fatal
            problem = f"figure {name!r} from plugin {component.plugin!r} skipped: {type(exc).__name__}: {exc}"
        else:
            if isinstance(kind, FigureKind):
                kinds[name] = kind
                continue
            problem = (f"figure {name!r} from plugin {component.plugin!r} skipped: it built a "
                       f"{type(kind).__name__}, not a convbench.report.figures.FigureKind")
        if problem not in registry.problems:
            registry.problems.append(problem)
    return kinds


def figure_names(registry: Registry | None = None) -> list[str]:
    """The usable figure kinds' names, built-ins first, in the order they registered."""
    return list(figure_kinds(registry))


#: One figure to draw: (group, or None across groups; the runs it is drawn from; kind name; kind).
Job = tuple[str | None, list[Record], str, FigureKind]


def write_figures(records: list[Record], out_dir: Path, options: FigureOptions | None = None,
                  kinds: dict[str, FigureKind] | None = None, names: Names | None = None,
                  notes: list[str] | None = None) -> list[Path]:
    """Draw and save ``options.kinds`` (default: the kinds marked default) of ``kinds`` (default: the
    registered ones) under ``out_dir/figures``; return the files written.

    Each kind is drawn where its `FigureKind.applies` holds, so without ``--figures`` the report draws the
    default kinds the data supports. A kind asked for by name that applies nowhere adds one line to
    ``notes`` (the report's warnings) saying what it needs; one chosen by ``--figures all`` or by default
    is left out without a word.

    ``names`` (the report's, so that a group's figures and tables share a stem) names the files:
    ``<group>-<kind>`` per group, the kind's `FigureKind.file_stem` (else its name) across groups.
    """
    import matplotlib

    from convbench.report.figures.style import save

    options = options or FigureOptions()
    names = names or Names()
    kinds = figure_kinds() if kinds is None else kinds
    wanted = [n for n, k in kinds.items() if k.default] if options.kinds is None else options.kinds
    unknown = [name for name in wanted if name not in kinds]
    if unknown:
        raise ConvbenchError(f"unknown figure kind {unknown[0]!r}; choose from {', '.join(kinds)}")
    chosen = {name: kind for name, kind in kinds.items() if name in wanted}  # in registration order
    out = out_dir / "figures"
    out.mkdir(parents=True, exist_ok=True)
    jobs = figure_jobs(records, chosen, options)
    if notes is not None and options.kinds is not None and not options.every_kind:
        drawn = {name for _, _, name, _ in jobs}
        notes += [not_drawn(name, kind) for name, kind in chosen.items() if name not in drawn]
    written: list[Path] = []
    # Group and case names are text, not TeX: a '$' in a label is a dollar sign, not a formula that fails to
    # parse when the figure is saved. A figure kind that wants TeX passes parse_math=True to its text.
    with matplotlib.rc_context({"text.parse_math": False}):
        for group, members, name, kind in jobs:
            stem = names.file("figures", kind.file_stem or name) if group is None else \
                names.file("figures", names.group(group), name)
            written += save(kind.draw(group, members, options), out / stem, options.formats)
    return written


def figure_jobs(records: list[Record], kinds: dict[str, FigureKind], options: FigureOptions) -> list[Job]:
    """(group or None, its runs, kind name, kind) for each figure to draw: the per-group kinds for each group
    where they apply, then the across-groups kinds where they apply to all the runs."""
    groups: dict[str, list[Record]] = {}
    for record in records:
        groups.setdefault(record["group"], []).append(record)
    jobs: list[Job] = [(group, members, name, kind) for group, members in groups.items()
                       for name, kind in kinds.items() if not kind.across_groups and kind.applies(members, options)]
    jobs += [(None, records, name, kind) for name, kind in kinds.items()
             if kind.across_groups and kind.applies(records, options)]
    return jobs


def not_drawn(name: str, kind: FigureKind) -> str:
    """The one line that says why a kind asked for by name was drawn nowhere."""
    where = "not drawn" if kind.across_groups else "drawn for no group"
    return f"--figures {name}: {where}; it needs {kind.needs}"
