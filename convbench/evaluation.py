"""Evaluation: the loss (and accuracy) of the model on every split, and when a run evaluates.

The training split is measured on a fixed subset (``Case.eval_train_samples``), the same for every
case, so that evaluating a large training set does not cost more than the training it measures.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from convbench.case import Case
from convbench.data import DatasetSplits, Split
from convbench.distributed import DistContext
from convbench.errors import CaseError
from convbench.recording import finite_or_none

#: Evaluations per run at most, by default (the first, before training, not counted).
MAX_EVALS = 50
#: Evaluations per run at least, by default, for runs of fewer epochs (a curve needs points). Was 10: the
#: benchmarks (`python -m benchmarks --only harness`) measured evaluation at 1-2.5x the training time of
#: 2-3-epoch runs on mnist-5k, where ten evaluations of val, test and a train subset outweigh the training.
MIN_EVALS = 4

Loss = Callable[..., torch.Tensor]  # (outputs, targets, *, reduction="mean") -> loss; reduction by keyword


def task_loss(task: str) -> Loss:
    """Cross-entropy for classification, mean squared error for regression: torch's own functions, called
    as ``loss(outputs, targets)`` or with ``reduction="sum"`` (no wrapper: the training step calls it)."""
    return F.cross_entropy if task == "classification" else F.mse_loss


def eval_steps(eval_every: int | None, steps_per_epoch: int, total: int) -> frozenset[int]:
    """Once per epoch by default, at least ~`MIN_EVALS` and at most `MAX_EVALS` times, and always at the end."""
    if eval_every is None:
        eval_every = max(min(steps_per_epoch, math.ceil(total / MIN_EVALS)), math.ceil(total / MAX_EVALS))
    return frozenset(range(eval_every, total + 1, eval_every)) | {total}


def target_split(case: Case, data: DatasetSplits) -> str:
    """The split the case's target is measured on: ``auto`` is val, else test, else train."""
    present = data.splits()
    if case.target_split == "auto":
        return next(s for s in ("val", "test", "train") if s in present)
    if case.target_split not in present:
        raise CaseError(
            f"invalid target_split={case.target_split!r}: dataset {case.dataset!r} has no such split; "
            f"valid choices: auto, {', '.join(present)}"
        )
    return case.target_split


class Evaluator:
    """Measures ``module`` on every split, in eval mode, without augmentation, in batches of
    ``batch_size``; metrics that are not finite (a diverged model) are None."""

    def __init__(self, module: torch.nn.Module, data: DatasetSplits, *, eval_train_samples: int | None,
                 batch_size: int, device: torch.device, dist: DistContext) -> None:
        self.module = module  # every rank holds the same weights; no need to go through DDP
        self.classification = data.task == "classification"
        self.loss = task_loss(data.task)
        self.batch_size = batch_size
        self.device = device
        self.dist = dist
        train_x, train_y = data.train
        n_eval = min(eval_train_samples or train_x.shape[0], train_x.shape[0])
        subset = torch.randperm(train_x.shape[0], generator=torch.Generator().manual_seed(0))[:n_eval]
        subset = subset.to(device)
        self.eval_sets: dict[str, Split] = {"train": (train_x[subset], train_y[subset])}
        self.eval_sets.update({k: v for k, v in data.splits().items() if k != "train"})

    def __call__(self) -> dict[str, float | None]:
        """``{split}_loss`` and ``{split}_accuracy`` (None for regression) of every split."""
        model = self.module
        if self.dist.distributed:
            # Buffers (BatchNorm statistics) were last updated by each rank's own slice of the batch.
            # Take rank 0's, as DDP does at every training forward, so every rank measures one model
            # and a stop-at-target decision made on any rank holds for rank 0's numbers too.
            for buffer in model.buffers():
                torch.distributed.broadcast(buffer, src=0)
        was_training = model.training
        model.eval()
        metrics: dict[str, float | None] = {}
        with torch.no_grad():
            for split, (inputs, targets) in self.eval_sets.items():
                metrics[f"{split}_loss"], metrics[f"{split}_accuracy"] = self._measure(inputs, targets)
        model.train(was_training)
        return metrics

    def _measure(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[float | None, float | None]:
        """Mean loss (per element for regression) and accuracy of one split: two reads from the device."""
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        correct = torch.zeros((), device=self.device, dtype=torch.int64)
        size = self.batch_size
        for start in range(0, inputs.shape[0], size):
            x, y = inputs[start:start + size], targets[start:start + size]
            outputs = self.module(x)
            loss_sum += self.loss(outputs, y, reduction="sum").double()
            if self.classification:
                correct += (outputs.argmax(dim=1) == y).sum()
        denominator = targets.shape[0] if self.classification else targets.numel()
        loss = finite_or_none(loss_sum.item() / denominator)
        return loss, correct.item() / targets.shape[0] if self.classification else None
