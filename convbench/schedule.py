"""Learning-rate control during a run: the case's scheduler at its interval, and linear warmup.

Schedulers differ in when they advance: per batch (one-cycle, cyclic, TF-style decay), per epoch
(step, multistep) or per evaluation on a metric (reduce-on-plateau). The plugin says which when it
registers (``interval``), and `LRControl` calls it at the right moments, so a case names a
scheduler without knowing the difference.

Warmup is a multiplier on the learning rate the optimizer sees during the first ``warmup_steps``
steps, rising linearly from ``warmup_start_factor`` to 1. The scheduler never sees it (the learning
rate is restored right after each warmup step), so "linear warmup, then any scheduler" composes with
every scheduler without special cases.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

#: When a scheduler advances: after every optimizer step, at the end of every epoch, or after every
#: evaluation, called with the dict of evaluation metrics (e.g. ``{"val_loss": 0.31, ...}``).
INTERVALS = ("epoch", "step", "eval")


class LRControl:
    """Steps the scheduler at its interval and applies warmup around optimizer steps."""

    def __init__(self, optimizer: torch.optim.Optimizer, scheduler: Any | None, interval: str = "epoch",
                 warmup_steps: int = 0, warmup_start_factor: float = 0.0) -> None:
        if interval not in INTERVALS:
            raise ValueError(f"scheduler interval {interval!r} is invalid; valid choices: {', '.join(INTERVALS)}")
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.interval = interval
        self.warmup_steps = warmup_steps
        self.warmup_start_factor = warmup_start_factor

    def warmup_factor(self, step: int) -> float:
        """Multiplier for the 0-based ``step``: linear from the start factor to 1, then 1."""
        if step >= self.warmup_steps:
            return 1.0
        start = self.warmup_start_factor
        return start + (1.0 - start) * step / self.warmup_steps

    def effective_lr(self, step: int) -> float:
        """The learning rate (of the first parameter group) that optimizer step ``step`` uses."""
        return self.optimizer.param_groups[0]["lr"] * self.warmup_factor(step)

    def optimizer_step(self, step: int) -> None:
        """``optimizer.step()`` with the warmup factor of ``step`` applied to every group's lr."""
        if step >= self.warmup_steps:
            self.optimizer.step()
            return
        factor = self.warmup_factor(step)
        scheduled = [group["lr"] for group in self.optimizer.param_groups]
        for group in self.optimizer.param_groups:
            group["lr"] = group["lr"] * factor
        try:
            self.optimizer.step()
        finally:
            for group, lr in zip(self.optimizer.param_groups, scheduled, strict=True):
                group["lr"] = lr

    @property
    def steps_every_step(self) -> bool:
        """Whether the learning rate may change after any step (a scheduler stepped per step)."""
        return self.scheduler is not None and self.interval == "step"

    def after_step(self) -> None:
        if self.steps_every_step:
            self.scheduler.step()

    def after_epoch(self) -> None:
        if self.scheduler is not None and self.interval == "epoch":
            self.scheduler.step()

    def after_eval(self, metrics: dict[str, float | None]) -> None:
        if self.scheduler is not None and self.interval == "eval":
            self.scheduler.step(metrics)
