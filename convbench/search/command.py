"""``convbench search SPACE.py``: the command's options and handler (`convbench.cli` registers them).

Nothing here imports Optuna or torch at import time: the command line starts without them."""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Any

from convbench.errors import ConvbenchError

DEFAULT_RESULTS = ".convbench/results.jsonl"


def add_parser(commands: Any) -> None:
    search = commands.add_parser(
        "search", help="hyperparameter search over a case (Optuna), trials in the results file",
        description="Run trials of a search space (a Python file defining SPACE = SearchSpace(...): a base Case, an "
                    "Optuna distribution per field, sampler, pruner, budget, objective) in an Optuna study. Start "
                    "several workers on one study: on one machine they share the journal file "
                    ".convbench/search-journal.log; on many, a database (--storage postgresql://...). A worker "
                    "that dies leaves its trial failed (heartbeats) and the trial is run once more by another; "
                    "Ctrl-C stops a worker, queueing its trial again. Each finished trial is appended to the "
                    "results file, so `convbench report` shows the trials, the search's figures and the best "
                    "trial's Case.")
    search.add_argument("space", metavar="SPACE.py", help="the search space file")
    search.add_argument("--storage", metavar="URL|FILE",
                        help="the study's storage: a database URL (postgresql://user:password@host/db) for workers "
                             "on many machines, or a journal file (default .convbench/search-journal.log)")
    search.add_argument("--study", metavar="NAME", help="the study's name (default: the space file's name)")
    search.add_argument("--trials", metavar="N", help="the study's budget of finished trials (default: the space's)")
    search.add_argument("--timeout", metavar="SECONDS", help="this worker's time budget (default: the space's)")
    search.add_argument("--results", metavar="PATH", default=DEFAULT_RESULTS,
                        help=f"results file each finished trial is appended to (default {DEFAULT_RESULTS}; none "
                             "to disable)")
    search.add_argument("--scale", choices=("quick", "full"), default=os.environ.get("CONVBENCH_SCALE", "quick"),
                        help="scale profile of the cases (default $CONVBENCH_SCALE or quick)")
    search.add_argument("--threads", metavar="N", help="torch threads for trials trained in this process")
    search.add_argument("--heartbeat", metavar="SECONDS", default="30",
                        help="seconds between a running trial's heartbeats; a trial without one for twice as long "
                             "is failed and retried once (default 30)")
    search.add_argument("--case-timeout", metavar="SECONDS",
                        help="fail a trial whose case runs longer (a multi-process one: default 1800)")
    search.set_defaults(handler=run)


def _whole(text: str | None, option: str) -> int | None:
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ConvbenchError(f"{option}={text!r}: expected a whole number >= 1")
    return value


def _seconds(text: str | None, option: str) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ConvbenchError(f"{option}={text!r}: expected a positive, finite number of seconds")
    return value


def run(args: argparse.Namespace) -> int:
    from convbench.search.space import load_space, with_budget
    from convbench.search.worker import WorkerOptions, run_worker

    trials, timeout = _whole(args.trials, "--trials"), _seconds(args.timeout, "--timeout")
    heartbeat, threads = _whole(args.heartbeat, "--heartbeat"), _whole(args.threads, "--threads")
    case_timeout = _seconds(args.case_timeout, "--case-timeout")
    space = with_budget(load_space(args.space), trials, timeout)
    _check_components(space, args.scale)
    results = None if args.results.lower() == "none" else Path(args.results).expanduser()
    options = WorkerOptions(storage=args.storage, study=args.study or Path(args.space).stem, results=results,
                            scale=args.scale, threads=threads, heartbeat_s=heartbeat, case_timeout_s=case_timeout)
    summary = run_worker(space, options, say=lambda line: print(line, flush=True))
    ran = ", ".join(f"{count} {state}" for state, count in summary.ran.items()) or "no trials"
    if summary.interrupted:
        queued = (f"; trial {summary.requeued} ended failed and is queued again for another worker"
                  if summary.requeued is not None else "")
        print(f"convbench: search stopped by Ctrl-C after {ran}{queued}", file=sys.stderr)
        return 130
    print(f"this worker ran {ran}; results: {results or 'not written (--results none)'}; tables, figures and the "
          f"best trial: convbench report {results or '...'}")
    return 0


def _check_components(space: Any, scale: str) -> None:
    """The base case's names and kwargs exist (a typo is one line now, not a failed trial per worker)."""
    from convbench.components import check_components
    from convbench.registry import get_registry

    check_components(space.base.at_scale(scale), get_registry())
