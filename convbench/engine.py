"""The training loop for one case (one rank): build fresh components, train, evaluate, time.

Lean like airbench: data sits on the device, a batch is an index slice, and the hot path holds only
the forward pass, the backward pass, the optimizer step and one write of the loss into a device
buffer. Everything that needs the host (divergence checks, curves, evaluation) happens at intervals,
outside the timed training segments or after a device synchronisation.
"""

from __future__ import annotations

import itertools
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from convbench.case import Case
from convbench.clock import synchronize
from convbench.data import DatasetSplits, EpochBatches, compose, default_data_root, load_cached
from convbench.distributed import DistContext
from convbench.errors import CaseError, ConvbenchError
from convbench.recording import RunRecorder, finite_or_none
from convbench.registry import Registry, get_registry
from convbench.result import RunResult
from convbench.schedule import LRControl

MAX_EVALS = 50
DIVERGENCE_CHECK_EVERY = 10


@dataclass(frozen=True)
class Progress:
    """Sent to `RunSettings.progress` after every evaluation."""

    case_id: str
    step: int
    total_steps: int
    epoch: float
    train_time_s: float
    metrics: dict[str, float | None]


@dataclass(frozen=True)
class RunSettings:
    """Session-wide settings that are not part of a case (they do not change what is measured)."""

    data_root: Path | None = None
    download: bool = False
    scale: str = "full"
    progress: Callable[[Progress], None] | None = None
    registry: Registry | None = None
    #: Per-case limit. None: 30 minutes for multi-process cases (convbench.launch), none in this process.
    timeout_s: float | None = None
    telemetry_interval_s: float | None = 0.2  # device/CPU sampling during the run; None: off


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA, then MPS, then the CPU; an explicit device must exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CaseError(f"invalid device={name!r}: CUDA is not available here; use 'auto' or 'cpu'")
    if device.type == "cuda" and device.index is None:  # this rank's GPU (set by the launcher), named
        return torch.device("cuda", torch.cuda.current_device())
    if device.type == "cuda" and device.index >= torch.cuda.device_count():
        raise CaseError(f"invalid device={name!r}: {torch.cuda.device_count()} GPU(s) visible; valid choices: "
                        + ", ".join(f"'cuda:{i}'" for i in range(torch.cuda.device_count())) + ", 'auto'")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise CaseError(f"invalid device={name!r}: MPS is not available here; use 'auto' or 'cpu'")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def load_dataset(case: Case, registry: Registry, settings: RunSettings) -> DatasetSplits:
    component = registry.get("dataset", case.dataset)
    root = Path(settings.data_root) if settings.data_root else default_data_root()
    return load_cached(
        {"name": case.dataset, "plugin": component.plugin, "kwargs": dict(case.dataset_kwargs),
         "root": str(root), "download": settings.download},
        lambda: component.build(case.dataset_kwargs, optional_context={"root": root, "download": settings.download}),
    )


class PreparedRun:
    """A case with its data on the device and fresh, seeded components, ready to `run` once.

    Preparation is separate from `run` so that pytest-benchmark times the training run alone, not
    data loading (see `convbench.pytest_plugin`).
    """

    def __init__(self, case: Case, settings: RunSettings | None = None, dist: DistContext | None = None) -> None:
        started = time.perf_counter()
        dist = dist or DistContext()
        if case.world_size != dist.world_size:
            raise ConvbenchError(
                f"world_size={case.world_size} but this process group has {dist.world_size} rank(s); run "
                "multi-device cases through convbench.launch.run_case (the convergence fixture does)"
            )
        self.dist = dist
        self.case = case
        self.settings = settings or RunSettings()
        registry = self.settings.registry or get_registry()
        components = {
            "model": registry.get("model", case.model),
            "optimizer": registry.get("optimizer", case.optimizer),
            "dataset": registry.get("dataset", case.dataset),
        }
        scheduler_component = registry.get("scheduler", case.scheduler) if case.scheduler else None
        augmentations = [registry.get("augmentation", name).build(kwargs) for name, kwargs in case.augmentations]
        self.device = resolve_device(case.device)

        data = self._load_in_turns(case, registry).to(self.device)
        self.data = data
        self.classification = data.task == "classification"
        self.target_split = _target_split(case, data)
        global_batch = _global_batch(case, data.train[0].shape[0], dist.world_size)
        # Rank r trains on [start, stop) of each global batch. When the batch does not split evenly the
        # shares differ by one sample, and each rank's loss is weighted by its share, so that DDP's mean
        # of the ranks' gradients is exactly the gradient of the global batch's mean loss.
        self.rank_start = dist.rank * global_batch // dist.world_size
        self.rank_stop = (dist.rank + 1) * global_batch // dist.world_size
        self.loss_weight = (self.rank_stop - self.rank_start) * dist.world_size / global_batch
        # Every rank draws the same global permutation and takes its own slice of each global batch:
        # equal step counts on every rank (uneven shards hang DDP) and the same data as one process.
        self.batches = EpochBatches(data.train[0].shape[0], global_batch, case.seed, self.device)
        spe = self.batches.steps_per_epoch
        self.total_steps = case.steps if case.steps is not None else max(1, round(case.epochs * spe))
        self.eval_steps = _eval_steps(case.eval_every, spe, self.total_steps)

        seed_everything(case.seed)  # the model's initial weights depend on the seed alone
        self.module = components["model"].build(
            case.model_kwargs, context={"input_shape": data.input_shape, "num_outputs": data.num_outputs}
        ).to(self.device)
        self.model = self.module
        if dist.distributed:
            from torch.nn.parallel import DistributedDataParallel

            self.model = DistributedDataParallel(
                self.module, device_ids=[self.device.index] if self.device.type == "cuda" else None)
            if dist.rank:  # dropout and augmentation draws must differ between ranks; rank 0 keeps the seed
                seed_everything(case.seed + 1_000_003 * dist.rank)
        self.optimizer = components["optimizer"].build(
            case.optimizer_kwargs, context={"params": self.model.parameters(), "lr": case.lr}
        )
        scheduler, interval = None, "epoch"
        if scheduler_component is not None:
            scheduler = scheduler_component.build(
                case.scheduler_kwargs,
                context={"optimizer": self.optimizer},
                optional_context={"steps_per_epoch": spe, "total_steps": self.total_steps,
                                  "epochs": math.ceil(self.total_steps / spe)},
            )
            interval = scheduler_component.options["interval"]
        self.lr_control = LRControl(self.optimizer, scheduler, interval, case.warmup_steps, case.warmup_start_factor)
        self.augment = compose(augmentations)
        train_x = data.train[0]
        n_eval = min(case.eval_train_samples or train_x.shape[0], train_x.shape[0])
        subset = torch.randperm(train_x.shape[0], generator=torch.Generator().manual_seed(0))[:n_eval]
        subset = subset.to(self.device)
        self.eval_sets = {"train": (train_x[subset], data.train[1][subset])}
        self.eval_sets.update({k: v for k, v in data.splits().items() if k != "train"})
        monitor = getattr(scheduler, "monitor", None)
        if monitor is not None and monitor.split("_")[0] not in self.eval_sets:
            raise CaseError(
                f"scheduler {case.scheduler!r} monitors {monitor!r}, but dataset {case.dataset!r} has no "
                f"{monitor.split('_')[0]} split; valid choices: "
                + ", ".join(f"{split}_loss" for split in self.eval_sets)
            )
        synchronize(self.device)
        self.setup_s = time.perf_counter() - started
        self._ran = False
        self._stream: Iterator[torch.Tensor] | None = None  # endless batches for throughput rounds
        self._steps_timed = 0

    def _load_in_turns(self, case: Case, registry: Registry) -> DatasetSplits:
        """Load the data set; when it may be downloaded, ranks take turns so that no two write one folder.

        Rank 0 goes first (on a shared file system the others then find its files), then the first
        rank of every other machine, then the rest, which read what is on disk by then. A rank whose
        turn fails still joins the remaining barriers, so a failure never leaves the others waiting.
        """
        dist = self.dist
        if not (dist.distributed and self.settings.download):
            return load_dataset(case, registry, self.settings)
        my_turn = 0 if dist.rank == 0 else 1 if dist.local_rank == 0 else 2
        loaded: DatasetSplits | None = None
        failure: BaseException | None = None
        for turn in range(3):
            if turn == my_turn:
                try:
                    loaded = load_dataset(case, registry, self.settings)
                except BaseException as exc:
                    failure = exc
            dist.barrier()
        if failure is not None:
            dist.any(True, self.device)  # tell the others, who must not go on into training alone
            raise failure
        if dist.any(False, self.device):
            raise ConvbenchError(f"dataset {case.dataset!r} failed to load on another rank")
        assert loaded is not None
        return loaded

    # ------------------------------------------------------------------------------------------
    def loss(self, outputs: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        if self.classification:
            return F.cross_entropy(outputs, targets, reduction=reduction)
        return F.mse_loss(outputs, targets, reduction=reduction)

    def evaluate(self) -> dict[str, float | None]:
        """Loss (and accuracy) on every split, in eval mode, without augmentation."""
        model = self.module  # every rank holds the same weights; no need to go through DDP
        if self.dist.distributed:
            # Buffers (BatchNorm statistics) were last updated by each rank's own slice of the batch.
            # Take rank 0's, as DDP does at every training forward, so every rank measures one model
            # and a stop-at-target decision made on any rank holds for rank 0's numbers too.
            for buffer in model.buffers():
                torch.distributed.broadcast(buffer, src=0)
        was_training = model.training
        model.eval()
        metrics: dict[str, float | None] = {}
        size = self.case.eval_batch_size
        with torch.no_grad():
            for split, (inputs, targets) in self.eval_sets.items():
                loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
                correct = torch.zeros((), device=self.device, dtype=torch.int64)
                for start in range(0, inputs.shape[0], size):
                    x, y = inputs[start:start + size], targets[start:start + size]
                    outputs = model(x)
                    loss_sum += self.loss(outputs, y, reduction="sum").double()
                    if self.classification:
                        correct += (outputs.argmax(dim=1) == y).sum()
                denominator = targets.numel() if not self.classification else targets.shape[0]
                metrics[f"{split}_loss"] = finite_or_none(loss_sum.item() / denominator)
                metrics[f"{split}_accuracy"] = correct.item() / targets.shape[0] if self.classification else None
        model.train(was_training)
        return metrics

    def train_step(self, index: torch.Tensor, step: int) -> torch.Tensor:
        """One optimizer step on this rank's slice of the global batch ``index``; returns the loss.

        Everything the hot path does is here and nothing else: no host syncs, no Python bookkeeping.
        """
        if self.dist.distributed:
            index = index[self.rank_start:self.rank_stop]
        inputs, targets = self.data.train
        loss = self.loss(self.model(self.augment(inputs[index])), targets[index])
        if self.loss_weight != 1.0:
            loss = loss * self.loss_weight
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.lr_control.optimizer_step(step)
        return loss.detach()

    def time_steps(self, steps: int) -> float:
        """Seconds for ``steps`` training steps, synchronised, the slowest rank's: a throughput round.

        Batches continue where the previous round stopped; the scheduler and evaluation stay out of
        it, so rounds measure the training step alone (pytest-benchmark repeats them for statistics).
        """
        if self._stream is None:
            self._stream = (index for _ in itertools.count() for index in self.batches.epoch())
        self.dist.barrier()
        synchronize(self.device)
        started = time.perf_counter()
        for _ in range(steps):
            self.train_step(next(self._stream), self._steps_timed)
            self._steps_timed += 1
        synchronize(self.device)
        return self.dist.max(time.perf_counter() - started, self.device)

    def run(self) -> RunResult:
        """Train the case once, evaluating at its evaluation steps; the measurements as a `RunResult`."""
        if self._ran:
            raise ConvbenchError("a PreparedRun trains once; prepare the case again for another run")
        self._ran = True
        record = RunRecorder(self.case, self.total_steps, self.batches.steps_per_epoch, self.target_split,
                             self.device, self.dist, getattr(self.module, "convbench_trajectory", None))
        sampler = self._start_sampler()
        try:
            steps = self._train(record)
        except BaseException:
            if sampler is not None:  # a failed or interrupted run must not leave its sampling thread behind
                sampler.stop()
            raise
        telemetry = self._stop_sampler(sampler)
        return record.result(steps, scale=self.settings.scale, setup_s=self.setup_s,
                             batch_size=self.batches.batch_size, telemetry=telemetry)

    def _train(self, record: RunRecorder) -> int:
        """The loop: steps, with divergence checks and evaluations at their steps; returns the steps taken.

        It stops early when the loss diverges or, with ``stop_at_target``, when the target is reached.
        The training clock runs only while steps are taken.
        """
        case, total, lr_control = self.case, self.total_steps, self.lr_control
        self.model.train()
        record.record_trajectory(0)
        step, lr = 0, lr_control.effective_lr(0)
        self._evaluate(record, step, lr)
        stop = False
        while not stop and step < total:
            record.train_clock.start()
            for index in self.batches.epoch():
                lr = lr_control.effective_lr(step)
                loss = self.train_step(index, step)
                step += 1
                record.add_step(step, loss, lr)
                lr_control.after_step()
                at_eval = step in self.eval_steps
                check_due = at_eval or step % DIVERGENCE_CHECK_EVERY == 0 or step == total
                if check_due and record.diverged(step):
                    stop = True
                    break
                if at_eval:
                    record.train_clock.stop()
                    if self._evaluate(record, step, lr) and case.stop_at_target:
                        stop = True
                        break
                    if step >= total:
                        break
                    record.train_clock.start()
                if step >= total:
                    break
            else:
                lr_control.after_epoch()
            record.train_clock.stop()
        if record.divergence is not None or record.last_eval_step != step:
            self._evaluate(record, step, lr)  # the final state is always evaluated
        return step

    def _evaluate(self, record: RunRecorder, step: int, lr: float) -> bool:
        """Evaluate and record at ``step``; True on every rank if the target was reached on any."""
        record.eval_clock.start()
        metrics = self.evaluate()
        record.eval_clock.stop()
        reached = record.add_eval(step, lr, metrics)
        if step > 0:
            self.lr_control.after_eval(metrics)
        if self.settings.progress is not None and self.dist.is_main:
            self.settings.progress(Progress(self.case.id, step, self.total_steps,
                                            step / self.batches.steps_per_epoch, record.train_clock.total, metrics))
        return self.dist.any(reached, self.device)

    def _start_sampler(self) -> Any:
        """Each GPU rank samples its own GPU; on CPUs the first rank of each machine samples that machine."""
        interval = self.settings.telemetry_interval_s
        if not interval or not (self.device.type == "cuda" or self.dist.local_rank == 0):
            return None
        from convbench.telemetry import make_sampler

        return make_sampler(self.device, interval).start()

    def _stop_sampler(self, sampler: Any) -> dict[str, Any] | None:
        """This rank's telemetry; on rank 0 of a process group, every rank's, merged (all machines)."""
        telemetry = sampler.stop() if sampler is not None else None
        if not self.dist.distributed:
            return telemetry
        import torch.distributed

        from convbench.telemetry import merge_ranks

        gathered: list[Any] = [None] * self.dist.world_size
        torch.distributed.all_gather_object(gathered, telemetry)
        return merge_ranks(gathered)


def prepare_in_this_process(case: Case, settings: RunSettings | None = None,
                            dist: DistContext | None = None) -> PreparedRun:
    """Prepare one rank's part of a case in this process, as rank ``dist`` of its process group (default:
    alone). `convbench.launch.prepare` chooses the processes for a whole case and calls this on each."""
    return PreparedRun(case, settings, dist)


def run_in_this_process(case: Case, settings: RunSettings | None = None) -> RunResult:
    """Prepare and train a one-process case here, with no time limit (`convbench.run_case` runs any case)."""
    return PreparedRun(case, settings).run()


# --------------------------------------------------------------------------------- helpers
def _eval_steps(eval_every: int | None, steps_per_epoch: int, total: int) -> frozenset[int]:
    """Once per epoch by default, at least ~10 and at most `MAX_EVALS` times, and always at the end."""
    if eval_every is None:
        eval_every = max(min(steps_per_epoch, math.ceil(total / 10)), math.ceil(total / MAX_EVALS))
    return frozenset(range(eval_every, total + 1, eval_every)) | {total}


def _global_batch(case: Case, num_samples: int, world_size: int) -> int:
    """Strong scaling keeps the case's batch as the global batch; weak scaling gives every rank the
    case's batch. Full-batch runs use the whole training set."""
    if case.batch_size is None:
        return num_samples
    if case.scaling == "weak":
        return case.batch_size * world_size
    if case.batch_size < world_size:
        raise CaseError(
            f"invalid batch_size={case.batch_size} for world_size={world_size} with strong scaling: every rank "
            "needs at least one sample; use a larger batch or scaling='weak'"
        )
    return case.batch_size


def _target_split(case: Case, data: DatasetSplits) -> str:
    present = data.splits()
    if case.target_split == "auto":
        return next(s for s in ("val", "test", "train") if s in present)
    if case.target_split not in present:
        raise CaseError(
            f"invalid target_split={case.target_split!r}: dataset {case.dataset!r} has no such split; "
            f"valid choices: auto, {', '.join(present)}"
        )
    return case.target_split
