"""Run `convbench search` workers the way a user does (one process each, in their own folder), and read back
what they left: the study in its storage and the trial lines of the results file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna

#: A search over a softmax regression whose length comes from $STEPS (a worker to be killed trains long).
SPACE = """
import os

from optuna.distributions import CategoricalDistribution, FloatDistribution

from convbench import Case
from convbench.search import SearchSpace

SPACE = SearchSpace(
    base=Case(model="softmax", optimizer="sgd", lr=0.1, dataset="mnist-5k", batch_size=100,
              steps=int(os.environ.get("STEPS", "20")), eval_every=10, eval_train_samples=500),
    params={"lr": FloatDistribution(1e-3, 1.0, log=True), "batch_size": CategoricalDistribution([50, 100])},
    objective="val_accuracy", sampler="random", trials=int(os.environ.get("TRIALS", "3")),
)
"""


def write_space(folder: Path, source: str = SPACE, name: str = "space.py") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(source), encoding="utf-8")
    return path


def worker_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CONVBENCH_SCALE", "PYTEST_ADDOPTS")}
    env.update(OMP_NUM_THREADS="1", **extra)
    return env


def start_worker(folder: Path, *options: str, **env: str) -> subprocess.Popen[str]:
    """``convbench search space.py --threads 1 OPTIONS`` in ``folder``, with ``env`` added to its environment."""
    return subprocess.Popen([sys.executable, "-m", "convbench.cli", "search", "space.py", "--threads", "1",
                             *options], cwd=folder, env=worker_env(**env), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(worker: subprocess.Popen[str], timeout: float = 300) -> tuple[int, str]:
    output, _ = worker.communicate(timeout=timeout)
    return worker.returncode, output


def journal_study(path: Path, name: str = "space") -> optuna.Study:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return optuna.load_study(study_name=name, storage=JournalStorage(JournalFileBackend(str(path))))


def trial_lines(results: Path) -> list[dict[str, Any]]:
    """The search facts of every trial line of the results file, in file order."""
    if not results.exists():
        return []
    lines = [json.loads(line) for line in results.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [line["extra_info"]["convbench_search"] for line in lines if "convbench_search" in line["extra_info"]]


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 120, every: float = 0.2) -> Any:
    """Poll ``condition`` until it returns something true (and return it); fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def assert_no_duplicate_no_lost(study: optuna.Study, results: Path, budget: int, workers: int) -> None:
    """Every finished trial was run once, by one worker, and wrote exactly one line; no trial was left behind."""
    trials = study.get_trials(deepcopy=False)
    states = {t.number: t.state for t in trials}
    complete = sorted(t.number for t in trials if t.state == optuna.trial.TrialState.COMPLETE)
    assert all(state == optuna.trial.TrialState.COMPLETE for state in states.values()), states
    # the budget is met; a worker that was mid-trial when it was met finishes that trial (at most one each)
    assert budget <= len(complete) <= budget + workers - 1, complete
    numbers = [line["trial"] for line in trial_lines(results)]
    assert sorted(numbers) == complete, (numbers, complete)  # one line per finished trial, none twice
    params = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(params)) == len(params), params  # no two trials trained the same values
