"""What a search explores: a base `Case`, an Optuna distribution per field, the sampler, the pruner, the
budget and the objective. A search space is declared in a Python file (``SPACE = SearchSpace(...)``), so
that it is reviewed and versioned like a suite, and checked here in full before any trial trains: a
misspelt field or objective is one line naming it and the valid choices, not a failed trial per worker.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from convbench.case import Case
from convbench.errors import ConvbenchError, choices_hint
from convbench.result import SPLITS

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

SAMPLERS = ("random", "tpe", "grid")
PRUNERS = ("none", "median", "hyperband")
DIRECTIONS = ("maximize", "minimize")
TIME_TO_TARGET = "time_to_target"
_KWARGS_FIELDS = ("model_kwargs", "optimizer_kwargs", "dataset_kwargs", "scheduler_kwargs")
_CASE_FIELDS = tuple(f.name for f in dataclasses.fields(Case))
#: Fields a search may not vary: they say how a case is run or named, not what trains.
_NOT_SEARCHED = ("scales", "label", "device")


class SearchSpaceError(ConvbenchError):
    """A search space file or `SearchSpace` is invalid; the message names the bad value."""


@dataclasses.dataclass(frozen=True)
class Objective:
    """The number a trial returns: a final (or best) metric of one split, or the training time to the case's
    target. Pruning reads the same metric at every evaluation; time-to-target has no such intermediate value."""

    which: str  # "final", "best" or TIME_TO_TARGET
    split: str | None
    metric: str | None  # "accuracy" or "loss"
    direction: str

    @classmethod
    def parse(cls, text: str, direction: str | None = None) -> Objective:
        """``val_accuracy``, ``final_test_loss``, ``best_val_accuracy`` or ``time_to_target``; the direction
        defaults to maximize for an accuracy and minimize for a loss or a time."""
        if direction is not None and direction not in DIRECTIONS:
            raise SearchSpaceError(f"direction={direction!r} is invalid; " + choices_hint(str(direction), DIRECTIONS))
        if text == TIME_TO_TARGET:
            if direction == "maximize":
                raise SearchSpaceError("objective 'time_to_target' is minimised; direction='maximize' cannot apply")
            return cls(TIME_TO_TARGET, None, None, "minimize")
        match = re.fullmatch(r"(?:(final|best)_)?(train|val|test)_(accuracy|loss)", str(text))
        if match is None:
            valid = [f"{s}_{m}" for s in SPLITS for m in ("accuracy", "loss")] + ["best_val_accuracy", TIME_TO_TARGET]
            raise SearchSpaceError(f"objective {text!r} is invalid; valid choices: [final_|best_]SPLIT_METRIC with "
                                   f"SPLIT in {', '.join(SPLITS)} and METRIC accuracy or loss (e.g. "
                                   f"{', '.join(valid[:2])}), or {TIME_TO_TARGET}")
        which, split, metric = match.group(1) or "final", match.group(2), match.group(3)
        return cls(which, split, metric, direction or ("maximize" if metric == "accuracy" else "minimize"))

    @property
    def name(self) -> str:
        return TIME_TO_TARGET if self.which == TIME_TO_TARGET else f"{self.which}_{self.split}_{self.metric}"

    @property
    def eval_key(self) -> str | None:
        """The key of this metric in an evaluation's metrics (`convbench.engine.Progress`); None: not prunable."""
        return None if self.which == TIME_TO_TARGET else f"{self.split}_{self.metric}"


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """A search: each trial trains ``base`` with the fields of ``params`` drawn from their distributions.

    ``params`` maps a `Case` field (``lr``, ``batch_size``, ``optimizer``...) or one keyword of a kwargs
    field (``optimizer_kwargs.momentum``, ``model_kwargs.dropout``) to an Optuna distribution
    (``FloatDistribution(1e-4, 0.5, log=True)``, ``IntDistribution``, ``CategoricalDistribution``).
    ``case_for(base, params)`` replaces the default mapping where a drawn value is not a field's value
    (draw a filter count, build the ``(n, 2n)`` tuple a model takes). ``trials`` and ``timeout_s`` are the
    budget (the study's finished trials; each worker's seconds); at least one is needed.
    """

    base: Case
    params: Mapping[str, BaseDistribution]
    objective: str = "val_accuracy"
    direction: str | None = None
    sampler: str = "tpe"
    pruner: str = "none"
    trials: int | None = None
    timeout_s: float | None = None
    seed: int | None = None
    case_for: Callable[[Case, dict[str, Any]], Case] | None = None

    def __post_init__(self) -> None:
        from optuna.distributions import BaseDistribution, CategoricalDistribution

        if not isinstance(self.base, Case):
            raise SearchSpaceError(f"base must be a convbench Case, got {self.base!r}")
        if not isinstance(self.params, Mapping) or not self.params:
            raise SearchSpaceError("params must map at least one Case field to an Optuna distribution, e.g. "
                                   "{'lr': FloatDistribution(1e-4, 0.5, log=True)}")
        for name, distribution in self.params.items():
            if self.case_for is None:  # case_for reads the values by its own names
                _check_field(name)
            if not isinstance(distribution, BaseDistribution):
                raise SearchSpaceError(f"params[{name!r}] must be an optuna.distributions distribution "
                                       f"(FloatDistribution, IntDistribution, CategoricalDistribution), got "
                                       f"{distribution!r}")
        objective = Objective.parse(self.objective, self.direction)
        if self.sampler not in SAMPLERS:
            raise SearchSpaceError(f"sampler={self.sampler!r} is invalid; " + choices_hint(str(self.sampler), SAMPLERS))
        if self.pruner not in PRUNERS:
            raise SearchSpaceError(f"pruner={self.pruner!r} is invalid; " + choices_hint(str(self.pruner), PRUNERS))
        if self.pruner != "none" and objective.eval_key is None:
            raise SearchSpaceError(f"pruner={self.pruner!r} needs an objective measured at every evaluation; "
                                   f"{objective.name!r} is known only when a run ends: valid choices: pruner='none'")
        if objective.which == TIME_TO_TARGET and self.base.target_accuracy is None and self.base.target_loss is None:
            raise SearchSpaceError("objective 'time_to_target' needs a target: set target_accuracy or target_loss "
                                   "on the base case")
        if self.sampler == "grid":
            loose = [name for name, d in self.params.items() if not isinstance(d, CategoricalDistribution)]
            if loose:
                raise SearchSpaceError(f"sampler='grid' needs a CategoricalDistribution (the grid's values) for every "
                                       f"parameter; not for {', '.join(loose)}")
        _check_budget(self.trials, self.timeout_s)
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool)):
            raise SearchSpaceError(f"seed must be a whole number or None, got {self.seed!r}")

    @property
    def goal(self) -> Objective:
        return Objective.parse(self.objective, self.direction)

    def case(self, values: Mapping[str, Any]) -> Case:
        """The trial's case: ``base`` with the drawn ``values``; a value the `Case` rejects is a `ConvbenchError`."""
        if self.case_for is not None:
            case = self.case_for(self.base, dict(values))
            if not isinstance(case, Case):
                raise SearchSpaceError(f"case_for must return a Case, got {case!r}")
            return case
        changes: dict[str, Any] = {}
        for name, value in values.items():
            field, _, key = name.partition(".")
            if key:
                merged = changes.setdefault(field, dict(getattr(self.base, field)))
                merged[key] = value
            else:
                changes[field] = value
        return self.base.replace(**changes)


def _check_field(name: str) -> None:
    field, dot, key = str(name).partition(".")
    if dot:
        if field not in _KWARGS_FIELDS or not key:
            raise SearchSpaceError(f"parameter {name!r}: only kwargs fields take a key; valid choices: "
                                   + ", ".join(f"{f}.NAME" for f in _KWARGS_FIELDS))
        return
    searchable = [f for f in _CASE_FIELDS if f not in _NOT_SEARCHED]
    if field not in searchable:
        raise SearchSpaceError(f"parameter {name!r} is not a Case field a search can vary; "
                               + choices_hint(field, searchable))


def _check_budget(trials: int | None, timeout_s: float | None) -> None:
    if trials is not None and (not isinstance(trials, int) or isinstance(trials, bool) or trials < 1):
        raise SearchSpaceError(f"trials must be a whole number >= 1 or None, got {trials!r}")
    if timeout_s is not None and not (isinstance(timeout_s, (int, float)) and not isinstance(timeout_s, bool)
                                      and math.isfinite(timeout_s) and timeout_s > 0):
        raise SearchSpaceError(f"timeout_s must be a positive number of seconds or None, got {timeout_s!r}")
    if trials is None and timeout_s is None:
        raise SearchSpaceError("a search needs a budget: trials (a number of finished trials), timeout_s (seconds per "
                               "worker), or both")


def with_budget(space: SearchSpace, trials: int | None, timeout_s: float | None) -> SearchSpace:
    """``space`` with the command line's budget where it gives one."""
    changes = {k: v for k, v in (("trials", trials), ("timeout_s", timeout_s)) if v is not None}
    return dataclasses.replace(space, **changes) if changes else space


def load_space(path: str | Path) -> SearchSpace:
    """The ``SPACE`` a search-space file defines; a one-line `SearchSpaceError` if it has none or cannot run.

    The file is run as a module named after it (so that the workers on other machines, which run the same
    file, build the same space)."""
    path = Path(path)
    if not path.is_file():
        raise SearchSpaceError(f"search space file {str(path)!r}: no such file")
    name = f"convbench_search_space_{re.sub(r'[^0-9A-Za-z_]', '_', path.stem)}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise SearchSpaceError(f"search space file {str(path)!r}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except ConvbenchError as exc:
        raise SearchSpaceError(f"{path}: {exc}") from None
    except Exception as exc:
        raise SearchSpaceError(f"{path}: {type(exc).__name__}: {exc}") from exc
    space = getattr(module, "SPACE", None)
    if not isinstance(space, SearchSpace):
        raise SearchSpaceError(f"{path} defines no SPACE = SearchSpace(...) (found {type(space).__name__})")
    return space
