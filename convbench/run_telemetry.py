"""Telemetry around one training run on one rank, and gathered over the ranks of a process group.

Each GPU rank samples its own GPU; on CPUs the first rank of each machine samples that machine (the
others would only read the same counters again). A run that fails or is interrupted still stops its
sampler, so no sampling thread outlives it; it gathers nothing, because the other ranks may not be
there to gather with.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import torch

from convbench.distributed import DistContext


class RunTelemetry:
    """``with RunTelemetry(device, dist, interval) as telemetry: ...``, then ``telemetry.result``.

    ``result`` is this rank's telemetry; on every rank of a process group, every rank's, merged
    (`convbench.telemetry.merge_ranks`). None when telemetry is off (``interval`` None or 0) or no
    rank sampled.
    """

    def __init__(self, device: torch.device, dist: DistContext, interval: float | None) -> None:
        self.device = device
        self.dist = dist
        self.interval = interval
        self.result: dict[str, Any] | None = None
        self._sampler: Any = None

    def __enter__(self) -> RunTelemetry:
        if self.interval and (self.device.type == "cuda" or self.dist.local_rank == 0):
            from convbench.telemetry import make_sampler

            self._sampler = make_sampler(self.device, self.interval).start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        telemetry = self._sampler.stop() if self._sampler is not None else None
        if exc_type is None:
            self.result = self._gather(telemetry)

    def _gather(self, telemetry: dict[str, Any] | None) -> dict[str, Any] | None:
        if not self.dist.distributed:
            return telemetry
        from convbench.telemetry import merge_ranks

        gathered: list[Any] = [None] * self.dist.world_size
        torch.distributed.all_gather_object(gathered, telemetry)
        return merge_ranks(gathered)
