"""One search worker: join (or create) the study, then ask for trials and run them until the study's budget
is spent. Start as many workers as there are free devices, on one machine (the journal file) or many (a
database); Optuna hands each trial to one worker, and the study's storage is the only thing they share.
"""

from __future__ import annotations

import contextlib
import os
import platform
import signal
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from convbench.engine import RunSettings
from convbench.errors import ConvbenchError
from convbench.search.record import commit_info
from convbench.search.space import SearchSpace
from convbench.search.storage import DEFAULT_HEARTBEAT_S, open_storage, retry_callback
from convbench.search.trial import TrialContext, run_trial

#: The trial states that count towards a study's budget of trials.
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass(frozen=True)
class WorkerOptions:
    storage: str | None = None
    study: str = "search"
    results: Path | None = Path(".convbench/results.jsonl")
    scale: str = "quick"
    threads: int | None = None
    heartbeat_s: int = DEFAULT_HEARTBEAT_S
    case_timeout_s: float | None = None
    telemetry_interval_s: float | None = 0.2


@dataclass
class WorkerSummary:
    """What this worker did, by trial state, and how it ended."""

    ran: dict[str, int] = field(default_factory=dict)
    interrupted: bool = False
    requeued: int | None = None  # the trial Ctrl-C stopped, queued again for another worker


def make_sampler(space: SearchSpace, trials_before: int = 0) -> optuna.samplers.BaseSampler:
    """The space's sampler. A seeded one is seeded with the seed plus the trials the study held when this worker
    joined: one worker's study is reproducible, and a worker that joins or resumes it later does not draw the
    values of the first trials again (workers started together on a new study should leave the seed None)."""
    seed = None if space.seed is None else space.seed + trials_before
    if space.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if space.sampler == "grid":
        grid = {name: list(d.choices) for name, d in space.params.items()}  # checked categorical by SearchSpace
        return optuna.samplers.GridSampler(grid, seed=seed)
    # constant liar: a running trial counts as a poor one, so parallel workers do not all sample one spot
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def make_pruner(space: SearchSpace) -> optuna.pruners.BasePruner:
    return {"none": optuna.pruners.NopPruner, "median": optuna.pruners.MedianPruner,
            "hyperband": optuna.pruners.HyperbandPruner}[space.pruner]()


def open_study(space: SearchSpace, options: WorkerOptions) -> optuna.Study:
    """The study named in ``options``, created on first use; one made for another objective is an error."""
    goal = space.goal
    storage = open_storage(options.storage, options.heartbeat_s)
    study = optuna.create_study(storage=storage, study_name=options.study, direction=goal.direction,
                                sampler=make_sampler(space), pruner=make_pruner(space), load_if_exists=True)
    if space.seed is not None:
        study.sampler = make_sampler(space, trials_before=len(study.get_trials(deepcopy=False)))
    made_for = study.user_attrs.get("convbench_objective")
    if made_for is None:
        study.set_user_attr("convbench_objective", goal.name)
    elif made_for != goal.name or study.direction.name.lower() != goal.direction:
        raise ConvbenchError(f"study {options.study!r} was created for objective {made_for!r} "
                             f"({study.direction.name.lower()}), not {goal.name!r} ({goal.direction}); valid choices: "
                             "the same objective, or another --study name")
    return study


def counted(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=COUNTED))


def run_worker(space: SearchSpace, options: WorkerOptions, say: Callable[[str], None] = print) -> WorkerSummary:
    """Run trials of ``space`` in the study until its budget is spent (or Ctrl-C, which ends the trial in
    progress as failed and queues its parameters again for another worker)."""
    from convbench import results_file
    from convbench.launch import close_pools

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # one line per trial, below, instead of Optuna's
    if options.threads is not None:
        import torch

        torch.set_num_threads(options.threads)
    if options.results is not None:
        try:
            results_file.check_appendable(options.results)
        except OSError as exc:
            raise ConvbenchError(f"--results={str(options.results)!r}: cannot append to it: "
                                 f"{exc.strerror or exc}") from None
    study = open_study(space, options)
    summary = WorkerSummary()
    if space.trials is not None and counted(study) >= space.trials:
        say(f"study {options.study!r}: its {space.trials} trials are done; nothing to run")
        return summary
    settings = RunSettings(scale=options.scale, timeout_s=options.case_timeout_s,
                           telemetry_interval_s=options.telemetry_interval_s)
    context = TrialContext(space, options.study, options.scale, settings, options.results,
                           session=uuid.uuid4().hex[:12], commit=commit_info())
    worker = f"{platform.node()}:{os.getpid()}"
    current: list[int] = []
    interrupted = threading.Event()

    def objective(trial: optuna.Trial) -> float:
        current[:] = [trial._trial_id]
        trial.set_user_attr("worker", worker)
        try:
            return run_trial(trial, context)
        except ConvbenchError as exc:
            if interrupted.is_set():  # Ctrl-C inside a library that turned it into an error (pandas' reader)
                raise KeyboardInterrupt from exc
            trial.set_user_attr("error", str(exc))  # this trial's values were wrong: say why, go on
            raise

    def after(study: optuna.Study, trial: FrozenTrial) -> None:
        state = trial.state.name.lower()
        summary.ran[state] = summary.ran.get(state, 0) + 1
        say(_trial_line(study, trial, space))
        if interrupted.is_set():
            raise KeyboardInterrupt

    callbacks: list[Callable[[optuna.Study, FrozenTrial], None]] = [after]
    if space.trials is not None:
        callbacks.append(optuna.study.MaxTrialsCallback(space.trials, states=COUNTED))
    say(f"study {options.study!r} ({_storage_name(options.storage)}): worker {worker}, objective "
        f"{space.goal.name} ({space.goal.direction}), {space.sampler} sampler, pruner {space.pruner}, budget "
        + " or ".join(b for b in (f"{space.trials} trials" if space.trials else "",
                                  f"{space.timeout_s:g} s" if space.timeout_s else "") if b))
    try:
        with _noting_ctrl_c(interrupted):
            study.optimize(objective, timeout=space.timeout_s, callbacks=callbacks, catch=(ConvbenchError,),
                           gc_after_trial=True)
    except KeyboardInterrupt:
        summary.interrupted = True
        summary.requeued = _requeue(study, current)
    finally:
        close_pools()
    return summary


@contextlib.contextmanager
def _noting_ctrl_c(interrupted: threading.Event) -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt as usual, and is also noted: code that catches it and raises something
    else in its place (a C extension reading a file) must not leave the worker running more trials."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigint(signum: int, frame: Any) -> None:
        interrupted.set()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _requeue(study: optuna.Study, current: list[int]) -> int | None:
    """Queue the trial Ctrl-C failed once more, as a worker killed outright would have it (heartbeats)."""
    if not current:
        return None
    trial = study._storage.get_trial(current[0])
    if trial.state != TrialState.FAIL or trial.system_attrs.get("failed_trial") is not None:
        return None  # it finished before the interrupt, or it was a retry already
    retry_callback()(study, trial)
    return trial.number


def _trial_line(study: optuna.Study, trial: FrozenTrial, space: SearchSpace) -> str:
    case = trial.user_attrs.get("case_id", "?")
    if trial.state == TrialState.COMPLETE:
        what = f"{space.goal.name} {trial.value:.4g}"
    elif trial.state == TrialState.FAIL:
        what = "failed" + (f": {trial.user_attrs['error']}" if "error" in trial.user_attrs else "")
    else:
        what = trial.state.name.lower()
    retry = trial.system_attrs.get("failed_trial")
    retry = f" (retry of trial {retry})" if retry is not None else ""
    try:
        best = f"; best {study.best_value:.4g} (trial {study.best_trial.number})"
    except ValueError:  # no trial completed yet
        best = ""
    return f"trial {trial.number}{retry}: {case} -> {what}{best}"


def _storage_name(url: str | None) -> str:
    from convbench.search.storage import DEFAULT_JOURNAL, _hide_password

    return _hide_password(url) if url else DEFAULT_JOURNAL
