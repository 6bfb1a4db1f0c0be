"""What sampling the device and the CPU during a run costs its training time.

    python -m benchmarks --only telemetry [--repeats 5]

The same case trains with telemetry off (``RunSettings.telemetry_interval_s=None``) and on (the default,
a sample every 0.2 s from a background thread), alternately. Goal: under 1% difference in training time.
"""

from __future__ import annotations

from benchmarks.timing import Comparison, alternate, load_1min
from convbench.case import Case
from convbench.engine import PreparedRun, RunSettings

CASE = Case(model="mlp", optimizer="adam", lr=1e-3, batch_size=64, epochs=3)
TINY = {"epochs": None, "steps": 20}


def train_s(case: Case, interval: float | None) -> float:
    return PreparedRun(case, RunSettings(telemetry_interval_s=interval)).run().timing.train_s


def run(repeats: int, tiny: bool = False) -> list[Comparison]:
    case = CASE.replace(**TINY) if tiny else CASE
    load_start = load_1min()
    a, b = alternate(lambda: train_s(case, None), lambda: train_s(case, RunSettings().telemetry_interval_s), repeats,
                     ("telemetry off", "telemetry on"))
    ratio = b.median / a.median
    return [Comparison("telemetry", case.model, "train s", a, b, goal="|ratio - 1| < 0.01",
                       goal_met=abs(ratio - 1) < 0.01, load=(load_start, load_1min()))]
