"""What a sweep of short multi-process cases costs beyond their training: the persistent worker pool
against starting fresh workers for every case.

    python -m benchmarks --only sweep [--repeats 2]

Ten short world-size-2 cases (gloo on the CPU, NCCL on GPUs) run one after another, as a suite's sweep
does: once through the session's pool (`convbench.pool`, started once and reused), once with the pool
closed after every case, so that every case spawns its workers and joins a new process group. The table
compares the two sweeps' wall times, and each sweep's wall time against the sum of its cases' training
times. The goal (at most 1.2x) is judged on the pooled sweep after its first case, which starts the pool
and loads the data into the workers once per session: the steady state of a long sweep. The last row
takes the cases' own evaluations (at default settings; the harness benchmark's evaluation share) out
of that wall time: what it has above 1.0 is the pool's cost (preparing each case, messages, results).
"""

from __future__ import annotations

import time

from benchmarks.timing import Comparison, Side, alternate, load_1min
from convbench.case import Case
from convbench.engine import RunSettings
from convbench.launch import close_pools, run_case

BASE = Case(model="mlp", optimizer="sgd", lr=0.1, batch_size=64, steps=100, world_size=2)
CASES = 10
TINY_CASES = 3


def sweep(cases: list[Case], fresh: bool, record: dict[str, list[float]]) -> float:
    """Run the cases in turn; the sweep's wall time. Records the sum of training times and of pool start-ups."""
    settings = RunSettings(telemetry_interval_s=None)
    started = time.perf_counter()
    walls, trains, evals, startup = [], [], [], 0.0
    for case in cases:
        case_started = time.perf_counter()
        result = run_case(case, settings)
        if fresh:
            close_pools()
        walls.append(time.perf_counter() - case_started)
        trains.append(result.timing.train_s)
        evals.append(result.timing.eval_s)
        startup += result.timing.startup_s or 0.0
    wall = time.perf_counter() - started
    record["train"].append(sum(trains))
    record["startup"].append(startup)
    # after the first case: the pool is up and the workers hold the data (the steady state of a long sweep)
    steady = slice(1, None) if len(cases) > 1 else slice(None)
    record["steady"].append(sum(walls[steady]) / sum(trains[steady]))
    # what the cases' own evaluations add, and what is left: the pool (preparation, messages, results)
    record["steady_eval"].append(sum(evals[steady]) / sum(trains[steady]))
    record["steady_pool"].append((sum(walls[steady]) - sum(evals[steady])) / sum(trains[steady]))
    return wall


def run(repeats: int, tiny: bool = False) -> list[Comparison]:
    cases = [BASE.replace(seed=seed) for seed in range(TINY_CASES if tiny else CASES)]
    if tiny:
        cases = [case.replace(steps=10) for case in cases]
    fresh: dict[str, list[float]] = {"train": [], "startup": [], "steady": [], "steady_eval": [], "steady_pool": []}
    pooled: dict[str, list[float]] = {"train": [], "startup": [], "steady": [], "steady_eval": [], "steady_pool": []}
    load_start = load_1min()
    close_pools()
    try:
        a, b = alternate(lambda: sweep(cases, True, fresh), lambda: sweep(cases, False, pooled), repeats,
                         ("fresh workers per case", "persistent pool"))
    finally:
        close_pools()
    load = (load_start, load_1min())
    timed = slice(1, None)  # the warm-up sweeps are not in the medians
    fresh_ratio = Side("fresh: wall / train", [w / t for w, t in zip(a.values, fresh["train"][timed], strict=True)])
    pooled_ratio = Side("pool: wall / train", [w / t for w, t in zip(b.values, pooled["train"][timed], strict=True)])
    steady = Side("pool, cases 2-N: wall / train", pooled["steady"][timed])
    name = f"{len(cases)} x {BASE.model} w2 {cases[0].steps} steps"
    return [
        Comparison("sweep", name, "sweep wall s", a, b, load=load,
                   extra={"pool_startup_s": pooled["startup"][timed], "fresh_startup_s": fresh["startup"][timed]}),
        Comparison("sweep", name, "wall / sum(train)", fresh_ratio, pooled_ratio, load=load),
        Comparison("sweep", name, "wall / sum(train)", pooled_ratio, steady, goal="B <= 1.2",
                   goal_met=steady.median <= 1.2, load=load),
        Comparison("sweep", name, "wall / sum(train)", steady,
                   Side("pool, cases 2-N: (wall - evaluation) / train", pooled["steady_pool"][timed]), load=load,
                   extra={"evaluation / train": Side("", pooled["steady_eval"][timed]).median}),
    ]
