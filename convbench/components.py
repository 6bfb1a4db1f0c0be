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
from convbench.rank_share import RankShare
from convbench.registry import Component, Registry
from convbench.schedule import LRControl
from convbench.speed import Speed

#: In a multi-process run rank r reseeds torch's default generator with the case's seed plus
#: ``RANK_SEED_STRIDE * (r + 1)`` once the model is built, so that ranks draw different dropout masks (and
#: whatever else the model draws), none of them from the augmentation stream (see `CaseComponents._random_streams`).
RANK_SEED_STRIDE = 1_000_003


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def copy_of_default_generator(device: torch.device) -> torch.Generator:
    """A new generator in the state ``device``'s default generator is in now: it draws what that would draw."""
    generator = torch.Generator(device=device)
    generator.set_state(torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.get_rng_state())
    return generator


@dataclass
class Trainable:
    """What a training step uses. ``model`` is ``module`` itself, or ``module`` wrapped in DDP."""

    module: torch.nn.Module
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    lr_control: LRControl
    augment: Callable[[torch.Tensor], torch.Tensor]
    #: What evaluation calls: ``module``, or with ``Case.compile`` the compiled module (`convbench.speed`).
    eval_model: torch.nn.Module | None = None


def check_components(case: Case, registry: Registry) -> None:
    """Every component the case names exists and accepts the case's keyword arguments (nothing is built
    but the augmentations, which are light); a one-line `ConvbenchError` otherwise."""
    CaseComponents(case, registry)


class CaseComponents:
    """The case's registered components, looked up (augmentations built) before its data is loaded."""

    def __init__(self, case: Case, registry: Registry) -> None:
        self.case = case
        self.model = registry.get("model", case.model)
        self.optimizer = registry.get("optimizer", case.optimizer)
        self.scheduler: Component | None = registry.get("scheduler", case.scheduler) if case.scheduler else None
        self.augmentations = [registry.get("augmentation", name).build(kwargs) for name, kwargs in case.augmentations]
        dataset = registry.get("dataset", case.dataset)
        for component, kwargs in ((self.model, case.model_kwargs), (self.optimizer, case.optimizer_kwargs),
                                  (dataset, case.dataset_kwargs), (self.scheduler, case.scheduler_kwargs)):
            if component is not None:
                component.check_kwargs(kwargs)

    def build(self, data: DatasetSplits, device: torch.device, dist: DistContext, steps_per_epoch: int,
              total_steps: int, speed: Speed | None = None) -> Trainable:
        """Fresh components: the initial weights depend on the case's seed alone, on every rank.

        ``speed`` applies the case's speed options: the memory format of the weights, torch.compile of the
        model (compiled lazily, on its first call), and fp16's gradient scaler around the optimizer step."""
        case = self.case
        seed_everything(case.seed)
        module = self.model.build(
            case.model_kwargs, context={"input_shape": data.input_shape, "num_outputs": data.num_outputs}
        ).to(device)
        if speed is not None:
            module = speed.module(module)
        model = module
        if dist.distributed:
            from torch.nn.parallel import DistributedDataParallel

            model = DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)
        augment = self._random_streams(data, device, dist)
        optimizer = self.optimizer.build(case.optimizer_kwargs, context={"params": model.parameters(), "lr": case.lr})
        eval_model = module
        if speed is not None and speed.compile_mode:
            # one process: one compiled model for both (eval mode is a recompile); DDP: the wrapper is compiled
            # for training, the module apart for evaluation, which never goes through DDP
            model = speed.compiled(model)
            eval_model = speed.compiled(module) if dist.distributed else model
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
        stepped = optimizer if speed is None else speed.optimizer_for_steps(optimizer)
        lr_control = LRControl(stepped, scheduler, interval, case.warmup_steps, case.warmup_start_factor)
        return Trainable(module, model, optimizer, lr_control, augment, eval_model)

    def _random_streams(self, data: DatasetSplits, device: torch.device,
                        dist: DistContext) -> Callable[[torch.Tensor], torch.Tensor]:
        """The augmentation, drawing from its stream; the model's draws (dropout) get theirs. Call it
        once the model is built: augmentation draws from the seed's stream as it stands then.

        One process draws both from torch's default generator, in turn, as it always has. N processes
        give every rank a copy of that stream, from which each draws the whole global batch's
        augmentation parameters and applies its share's rows (`convbench.data.compose`): with strong
        scaling, each sample is then augmented alike at every world size. Each rank then reseeds the
        default generator for the model's draws, so that ranks draw different dropout masks and none
        replays the augmentation's numbers; those masks, unlike everything else, depend on the world size.
        """
        if not dist.distributed:
            return compose(self.augmentations)
        share = RankShare.of(self.case, data.train[0].shape[0], dist.rank, dist.world_size)
        augment = compose(self.augmentations, copy_of_default_generator(device), share.global_batch, share.start)
        seed_everything(self.case.seed + RANK_SEED_STRIDE * (dist.rank + 1))
        return augment


def _check_monitor(case: Case, scheduler: object, data: DatasetSplits) -> None:
    """A scheduler stepped on a metric (reduce-on-plateau) needs the split it monitors to be evaluated."""
    monitor = getattr(scheduler, "monitor", None)
    splits = data.splits()
    if monitor is not None and monitor.split("_")[0] not in splits:
        raise CaseError(
            f"scheduler {case.scheduler!r} monitors {monitor!r}, but dataset {case.dataset!r} has no "
            f"{monitor.split('_')[0]} split; valid choices: " + ", ".join(f"{split}_loss" for split in splits)
        )
