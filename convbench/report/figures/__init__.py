"""Report figures as registered kinds: each kind is a small `FigureKind` class, registered by name through the
``convbench_register_figures`` hook like any other component (the built-in ones by ``convbench_plugins.figures``).

`convbench report` draws every kind that ``--figures`` names (default: the kinds marked `FigureKind.default`),
once per benchmark group, or once over all groups for `FigureKind.across_groups` kinds, wherever
`FigureKind.applies` says the records give it something to show. So the default set is picked by the data:
each default kind is drawn where, and only where, its `applies` holds, and each built-in `applies` is strict
(an lr figure needs cases that differ only in their learning rate, a seed figure a configuration with two
seeds), so that a report without ``--figures`` holds the figures its study supports and no empty ones. A kind
named with ``--figures`` that applies nowhere is reported in one line saying what it needs (`FigureKind.needs`).
Adding a figure is one class and one ``register`` call; the command line's help, validation and listing follow
from the registry.

This module is light on purpose (no matplotlib): plugin modules import `FigureKind` from it, and every
training process loads the plugins.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from convbench.errors import ConvbenchError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

Record = dict[str, Any]

FORMATS = ("png", "svg")
X_AXES = {"step": "training step", "epoch": "epoch (passes over the training set)",
          "time": "training time (s, evaluation excluded)"}


@dataclass(frozen=True)
class FigureOptions:
    """What the command line asks of the figures: which kinds (None: the default ones), in which file
    formats, and how curves are drawn."""

    kinds: tuple[str, ...] | None = None
    formats: tuple[str, ...] = ("png",)
    x: str = "step"
    log_y: bool = True
    #: Whether ``--figures all`` chose the kinds: kinds that apply nowhere are then left out without a word,
    #: while a kind asked for by name that applies nowhere is reported (`FigureKind.needs`).
    every_kind: bool = False

    @classmethod
    def parse(cls, kinds: str | None = None, formats: str | None = None, x: str = "step", log_y: bool = True,
              *, available: Sequence[str] | None = None) -> FigureOptions:
        """From the command line's comma-separated lists; unknown names are one-line `ConvbenchError`s.

        ``available`` are the figure kinds to choose from; by default, the registered ones.
        """
        chosen_kinds, every_kind = None, False
        if kinds is not None:
            if available is None:
                from convbench.report.figures.writer import figure_names

                available = figure_names()
            chosen_kinds = _choices(kinds, (*available, "all"), "--figures")
            every_kind = "all" in chosen_kinds
            if every_kind:
                chosen_kinds = tuple(available)
        chosen_formats = ("png",) if formats is None else _choices(formats, FORMATS, "--format")
        if x not in X_AXES:
            raise ConvbenchError(f"--x must be one of {', '.join(X_AXES)}, got {x!r}")
        return cls(chosen_kinds, chosen_formats, x, log_y, every_kind=every_kind)


def _choices(text: str, valid: Sequence[str], option: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [name for name in names if name not in valid]
    if unknown or not names:
        raise ConvbenchError(f"{option}: unknown {', '.join(map(repr, unknown)) or 'empty list'}; "
                             f"choose from {', '.join(valid)}")
    return names


class FigureKind:
    """One kind of report figure. Subclass it, implement `draw` (and `applies` where the figure needs
    something particular of the runs), and register the class under a name with ``convbench_register_figures``;
    the name is the kind's name for ``--figures`` and in file names, and the class's docstring its description."""

    #: Drawn once over the runs of every group (``figures/<file_stem>.<format>``) instead of once per group
    #: (``figures/<group>-<name>.<format>``): for figures that compare groups, such as a performance profile.
    across_groups: ClassVar[bool] = False
    #: Drawn when ``--figures`` is not given.
    default: ClassVar[bool] = False
    #: The file name of an across-groups figure; None: the registered name.
    file_stem: ClassVar[str | None] = None
    #: What `applies` looks for, for the line the report prints when a kind asked for by name applies
    #: nowhere: "--figures NAME: drawn for no group; it needs <needs>".
    needs: ClassVar[str] = "runs that give it something to show"

    def applies(self, records: list[Record], options: FigureOptions) -> bool:
        """Whether these runs (one group's, or every group's) give the figure something to show. A default
        kind is drawn wherever this holds, so it should hold only where the figure says something."""
        return bool(records)

    def draw(self, group: str | None, records: list[Record], options: FigureOptions) -> Figure:
        """The figure of these runs: a `matplotlib.figure.Figure`, which the report saves in every format
        asked for and closes. ``group`` is the group's name; None for an across-groups kind."""
        raise NotImplementedError


def lazy(target: str) -> Callable[[], FigureKind]:
    """A factory for ``"module:Class"`` that imports the module only when the figure is drawn.

    Every training process loads the plugins; registering figures this way keeps matplotlib out of them.
    """
    module_name, _, class_name = target.partition(":")

    def build() -> FigureKind:
        return getattr(importlib.import_module(module_name), class_name)()

    build.__name__ = build.__qualname__ = class_name
    return build
