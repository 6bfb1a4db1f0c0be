"""The case's components for one run, built fresh and seeded: model (wrapped in DDP across ranks),
optimizer, learning-rate control and augmentations.

Lookup and building are separate steps: names are looked up before any data is loaded, so that a
misspelled optimizer fails in one line instead of after a download, while the model can only be
built once the data says its input shape and number of outputs.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from convbench.case import Case
from convbench.data import DatasetSplits, compose
from convbench.distributed import DistContext
from convbench.errors import CaseError
from convbench.registry import Component, Registry
from convbench.schedule import LRControl

#: Added (times the rank) to the case's seed on every rank but 0, so that ranks draw different dropout
#: masks and augmentations while rank 0's draws are those of a one-process run.
RANK_SEED_STRIDE = 1_000_003


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


@dataclass
class Trainable:
    """What a training step uses. ``model`` is ``module`` itself, or ``module`` wrapped in DDP."""

    module: torch.nn.Module
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    lr_control: LRControl
    augment: Callable[[torch.Tensor], torch.Tensor]


class CaseComponents:
    """The case's registered components, looked up (augmentations built) before its data is loaded."""

    def __init__(self, case: Case, registry: Registry) -> None:
        self.case = case
        self.model = registry.get("model", case.model)
        self.optimizer = registry.get("optimizer", case.optimizer)
        registry.get("dataset", case.dataset)  # known before loading starts; `convbench.loading` builds it
        self.scheduler: Component | None = registry.get("scheduler", case.scheduler) if case.scheduler else None
        self.augmentations = [registry.get("augmentation", name).build(kwargs) for name, kwargs in case.augmentations]

    def build(self, data: DatasetSplits, device: torch.device, dist: DistContext, steps_per_epoch: int,
              total_steps: int) -> Trainable:
        """Fresh components: the initial weights depend on the case's seed alone, on every rank."""
        case = self.case
        seed_everything(case.seed)
        module = self.model.build(
            case.model_kwargs, context={"input_shape": data.input_shape, "num_outputs": data.num_outputs}
        ).to(device)
        model = module
        if dist.distributed:
            from torch.nn.parallel import DistributedDataParallel

            model = DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)
            if dist.rank:
                seed_everything(case.seed + RANK_SEED_STRIDE * dist.rank)
        optimizer = self.optimizer.build(case.optimizer_kwargs, context={"params": model.parameters(), "lr": case.lr})
        scheduler, interval = None, "epoch"
        if self.scheduler is not None:
            scheduler = self.scheduler.build(
                case.scheduler_kwargs,
                context={"optimizer": optimizer},
                optional_context={"steps_per_epoch": steps_per_epoch, "total_steps": total_steps,
                                  "epochs": math.ceil(total_steps / steps_per_epoch)},
            )
            interval = self.scheduler.options["interval"]
            _check_monitor(case, scheduler, data)
        lr_control = LRControl(optimizer, scheduler, interval, case.warmup_steps, case.warmup_start_factor)
        return Trainable(module, model, optimizer, lr_control, compose(self.augmentations))


def _check_monitor(case: Case, scheduler: object, data: DatasetSplits) -> None:
    """A scheduler stepped on a metric (reduce-on-plateau) needs the split it monitors to be evaluated."""
    monitor = getattr(scheduler, "monitor", None)
    splits = data.splits()
    if monitor is not None and monitor.split("_")[0] not in splits:
        raise CaseError(
            f"scheduler {case.scheduler!r} monitors {monitor!r}, but dataset {case.dataset!r} has no "
            f"{monitor.split('_')[0]} split; valid choices: " + ", ".join(f"{split}_loss" for split in splits)
        )
