"""Which device each pytest-xdist worker trains on: its own GPUs, or its share of the CPU cores.

`pytest -n N` starts N worker processes that run a suite's cases side by side. Left alone, every one of
them would train on the first GPU (or spin as many torch threads as there are cores), so N cases would
fight over one device while the others idle. The plan below gives worker slot k (``gw0`` is slot 0):

- where GPUs are visible, a block of ``G // N`` of the ``G`` visible GPUs, in order: GPUs ``k*b`` to
  ``k*b + b - 1`` (with ``-n G``, GPU k for worker k), handed to the worker as its ``CUDA_VISIBLE_DEVICES``
  before it imports anything, so that ``auto``, ``cuda`` and a multi-process case's ranks all land on its
  own GPUs. GPUs are counted as this process sees them: an existing ``CUDA_VISIBLE_DEVICES`` narrows them,
  and its entries (indices or UUIDs) are what the workers get. More workers than GPUs is an error: two
  workers on one GPU would time each other;
- where there is none, ``cores // N`` torch threads (at least 1), and never more than
  ``--convbench-threads`` where it is given.

This module only plans; `convbench.xdist_support` applies the plan to the workers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from convbench.errors import ConvbenchError

CUDA_VISIBLE = "CUDA_VISIBLE_DEVICES"


@dataclass(frozen=True)
class WorkerDevice:
    """One worker slot's share of the machine."""

    slot: int
    workers: int
    #: The worker's GPUs as ``CUDA_VISIBLE_DEVICES`` entries (what this process's variable listed, else indices).
    gpus: tuple[str, ...] = ()
    #: The same GPUs by their index among this process's visible GPUs (``cuda:<index>`` here).
    gpu_indices: tuple[int, ...] = ()
    #: torch threads for a CPU worker; None on GPUs (the session's own setting applies).
    threads: int | None = None

    @property
    def device(self) -> str:
        """``cuda:1``, ``cuda:2,cuda:3`` for a block, ``cpu`` without GPUs: the session's names for them."""
        return ",".join(f"cuda:{index}" for index in self.gpu_indices) or "cpu"

    def environment(self) -> dict[str, str]:
        """The variables the worker process starts with: its GPUs, where it has any."""
        return {CUDA_VISIBLE: ",".join(self.gpus)} if self.gpus else {}

    def to_dict(self) -> dict[str, Any]:
        return {"slot": self.slot, "workers": self.workers, "gpus": list(self.gpus),
                "gpu_indices": list(self.gpu_indices), "threads": self.threads}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WorkerDevice:
        """Read back what `to_dict` sent to the worker (pytest-xdist's ``workerinput`` carries plain types)."""
        return cls(slot=data["slot"], workers=data["workers"], gpus=tuple(data["gpus"]),
                   gpu_indices=tuple(data["gpu_indices"]), threads=data["threads"])


def visible_gpus() -> list[str]:
    """This process's GPUs as ``CUDA_VISIBLE_DEVICES`` entries: that variable's first ``device_count()``
    entries where it is set, else ``0`` to ``device_count() - 1``; none where CUDA is not available."""
    import torch

    if not torch.cuda.is_available():
        return []
    count = torch.cuda.device_count()
    listed = os.environ.get(CUDA_VISIBLE)
    if listed is None:
        return [str(index) for index in range(count)]
    return [entry.strip() for entry in listed.split(",") if entry.strip()][:count]


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the platform has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def plan(workers: int, gpus: list[str], cores: int, threads: int | None = None) -> list[WorkerDevice]:
    """Each of ``workers`` slots' device (module docstring); `ConvbenchError` when GPUs are visible but
    fewer than the workers."""
    if workers < 1:
        raise ConvbenchError(f"pytest-xdist workers={workers}: expected 1 or more")
    if gpus:
        if workers > len(gpus):
            listed = os.environ.get(CUDA_VISIBLE)
            seen = f" ({CUDA_VISIBLE}={listed})" if listed is not None else ""
            raise ConvbenchError(
                f"-n {workers}: {workers} pytest-xdist workers but {len(gpus)} GPU(s) visible{seen}; each worker "
                f"trains on GPUs of its own: use -n {len(gpus)} or fewer (or -n auto), or {CUDA_VISIBLE}= to train on "
                "the CPU cores")
        block = len(gpus) // workers
        return [WorkerDevice(slot, workers, tuple(gpus[slot * block:(slot + 1) * block]),
                             tuple(range(slot * block, (slot + 1) * block))) for slot in range(workers)]
    share = max(1, cores // workers)
    return [WorkerDevice(slot, workers, threads=min(share, threads or share)) for slot in range(workers)]
