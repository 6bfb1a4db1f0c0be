"""`RunResult`: what one training run measured, in a versioned schema of plain JSON types.

The JSON form (`RunResult.to_dict`) is what lands in ``extra_info["convbench"]`` of pytest-benchmark's
JSON and in the append-only results file, and what `convbench report` reads. Bump `SCHEMA` when a
field changes meaning; readers check it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

SCHEMA = "convbench.result/1"
#: A line of the results file: a pytest-benchmark-like entry whose extra_info["convbench"] is a result.
RECORD_SCHEMA = "convbench.record/1"
#: ``extra_info["convbench_throughput"]`` of a `throughput` fixture benchmark.
THROUGHPUT_SCHEMA = "convbench.throughput/1"
SPLITS = ("train", "val", "test")


@dataclass
class RunResult:
    """One run's measurements. Metrics that could not be computed (NaN, no such split) are None."""

    case_id: str
    case: dict[str, Any]
    scale: str
    device: str
    world_size: int
    steps: int
    steps_planned: int
    epochs: float
    samples: int
    diverged: bool
    divergence: dict[str, Any] | None
    timing: dict[str, float]
    samples_per_s: float | None
    final: dict[str, float | None]
    best: dict[str, float | None]
    target: dict[str, Any]
    curves: dict[str, dict[str, list[Any]]]
    telemetry: dict[str, Any] | None = None
    schema: str = field(default=SCHEMA)
    stop_reason: str | None = None

    # Conveniences for assertions in suites ------------------------------------------------------
    @property
    def initial_train_loss(self) -> float | None:
        losses = self.curves["train"]["loss"]
        return losses[0] if losses else None

    @property
    def final_train_loss(self) -> float | None:
        """The mean train loss over the last logged stretch of steps (less noisy than one batch)."""
        losses = self.curves["train"]["loss"]
        return losses[-1] if losses else None

    @property
    def target_reached(self) -> bool:
        return bool(self.target.get("reached"))

    def metric(self, split: str, name: str = "accuracy", which: str = "final") -> float | None:
        """e.g. ``result.metric("test")`` is the final test accuracy."""
        return getattr(self, which).get(f"{split}_{name}")

    def to_dict(self) -> dict[str, Any]:
        return _json_clean(asdict(self))


def _json_clean(value: Any) -> Any:
    """NaN and infinities are not JSON: they become None (divergence is recorded separately)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_clean(v) for v in value]
    return value
