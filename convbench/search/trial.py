"""One trial: draw the parameters, build the case, train it with the same launcher as a suite's case (this
process at world size 1, the worker pool at N), feed the pruner from rank 0's evaluations, and append the
finished run to the results file before the trial's value goes back to the study."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
)

from convbench import results_file
from convbench.engine import Progress, RunSettings
from convbench.errors import ConvbenchError
from convbench.launch import run_case
from convbench.result import RunResult
from convbench.search.record import trial_line
from convbench.search.space import TIME_TO_TARGET, Objective, SearchSpace


@dataclass(frozen=True)
class TrialContext:
    """What every trial of one worker shares."""

    space: SearchSpace
    study: str
    scale: str
    settings: RunSettings
    results: Path | None
    session: str
    commit: dict[str, Any]


def suggest(trial: optuna.Trial, name: str, distribution: BaseDistribution) -> Any:
    """Draw ``name`` from ``distribution`` through the trial's public API (a retried trial gets its old value)."""
    if isinstance(distribution, FloatDistribution):
        return trial.suggest_float(name, distribution.low, distribution.high, log=distribution.log,
                                   step=distribution.step)
    if isinstance(distribution, IntDistribution):
        return trial.suggest_int(name, distribution.low, distribution.high, log=distribution.log,
                                 step=distribution.step)
    if isinstance(distribution, CategoricalDistribution):
        return trial.suggest_categorical(name, distribution.choices)
    raise ConvbenchError(f"parameter {name!r}: unsupported distribution {type(distribution).__name__}; valid "
                         "choices: FloatDistribution, IntDistribution, CategoricalDistribution")


def objective_value(result: RunResult, goal: Objective) -> float:
    """The trial's value; a run that never measured it (diverged to NaN, missed its target) gets the worst
    value there is, so that the sampler learns to avoid its region rather than losing the trial."""
    worst = -math.inf if goal.direction == "maximize" else math.inf
    if goal.which == TIME_TO_TARGET:
        reached = result.target.reached and result.target.time_s is not None
        return float(result.target.time_s) if reached else math.inf
    value = getattr(result, goal.which).get(f"{goal.split}_{goal.metric}")
    return worst if value is None or not math.isfinite(value) else float(value)


def pruning_reporter(trial: optuna.Trial, goal: Objective) -> Callable[[Progress], None]:
    """A progress callback that reports the objective's metric at each evaluation and raises `TrialPruned`
    when the pruner says so. The engine calls progress on rank 0 only (a worker pool forwards rank 0's),
    so in a multi-process trial exactly one process talks to the study, as Optuna's pruning needs."""
    key = goal.eval_key

    def report(progress: Progress) -> None:
        if key is None or progress.step == 0 or set(progress.metrics) == {"train_loss"}:  # a heartbeat, not an eval
            return
        value = progress.metrics.get(key)
        if value is None or not math.isfinite(value):
            return
        trial.report(value, progress.step)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {progress.step}: {key} {value:.4g}")

    return report


def retried_from(trial: optuna.Trial) -> int | None:
    """The number of the trial this one runs again (its worker died), else None."""
    frozen = trial.study._storage.get_trial(trial._trial_id)
    return frozen.system_attrs.get("failed_trial")


def run_trial(trial: optuna.Trial, context: TrialContext) -> float:
    """Train one trial's case and return its objective value (the study records it)."""
    space, goal = context.space, context.space.goal
    values = {name: suggest(trial, name, distribution) for name, distribution in space.params.items()}
    declared = space.case(values)  # as a suite declares it (with the base's scales): what the report prints
    case = declared.at_scale(context.scale)
    trial.set_user_attr("case_id", case.id)
    settings = dataclasses.replace(context.settings, progress=pruning_reporter(trial, goal))
    result = run_case(case, settings)
    value = objective_value(result, goal)
    if context.results is not None:
        line = trial_line(study=context.study, number=trial.number, result=result, case=case, declared=declared,
                          scale=context.scale,
                          value=value, params=values,
                          distributions={n: distribution_to_json(d) for n, d in space.params.items()},
                          objective=goal.name, direction=goal.direction, session=context.session,
                          commit=context.commit, retry_of=retried_from(trial))
        results_file.append_record(context.results, line)  # on disk before the study hears of it
    return value
