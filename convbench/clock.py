"""Device-synchronised time: CUDA and MPS queue work and return at once, so a clock read must wait
for the queue first, or it measures how fast work was queued instead of how fast it ran."""

from __future__ import annotations

import time

import torch


def synchronize(device: torch.device) -> None:
    """Wait for queued device work, so that a clock read afterwards measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


class Stopwatch:
    """Accumulates device-synchronised time over several start/stop segments."""

    def __init__(self, device: torch.device) -> None:
        self._device = device
        self._started: float | None = None
        self.total = 0.0

    def start(self) -> None:
        synchronize(self._device)
        self._started = time.perf_counter()

    def stop(self) -> None:
        if self._started is not None:
            synchronize(self._device)
            self.total += time.perf_counter() - self._started
            self._started = None
