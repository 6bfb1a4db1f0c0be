"""The training loop for one case (one rank): train, evaluate at intervals, stop for one reason, time.

Lean like airbench: data sits on the device, a batch is an index gather, and the hot path holds only
the forward pass, the backward pass, the optimizer step and a list append of the loss. Everything
that needs the host (divergence checks, curves, evaluation) happens at intervals, outside the timed
training segments or after a device synchronisation.

What a run is made of lives beside it: its components (`convbench.components`), its rank's share of
the batch (`convbench.rank_share`), its data (`convbench.loading`), its evaluation
(`convbench.evaluation`), its records (`convbench.recording`) and its telemetry
(`convbench.run_telemetry`).
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path

import torch

from convbench.case import Case
from convbench.clock import synchronize
from convbench.components import CaseComponents
from convbench.components import seed_everything as seed_everything  # public here since before the split
from convbench.data import EpochBatches, identity
from convbench.device import resolve_device
from convbench.distributed import DistContext
from convbench.errors import ConvbenchError
from convbench.evaluation import Evaluator, eval_steps, target_split, task_loss
from convbench.isolation import CaseIsolation
from convbench.loading import load_dataset as load_dataset  # public here since before the split
from convbench.loading import load_in_turns
from convbench.rank_share import RankShare
from convbench.recording import RunRecorder
from convbench.registry import Registry, get_registry
from convbench.result import RunResult
from convbench.run_telemetry import RunTelemetry
from convbench.speed import Speed, eval_batches, warm_up
from convbench.stall import ChanceLevel

#: Steps between divergence checks (each reads the device once); also checked at every evaluation.
DIVERGENCE_CHECK_EVERY = 10
#: Seconds between progress reports when evaluations are further apart (`PreparedRun._heartbeat`).
HEARTBEAT_S = 5.0


class StopReason(str, Enum):
    """Why a run stopped: recorded as ``RunResult.stop_reason``.

    ``TIME_LIMIT`` names what `convbench.time_limit` does: it interrupts the run with
    `CaseTimeoutError`, so the run fails and leaves no result to record it in (today nothing records
    it). ``STALLED`` replaces ``BUDGET`` for a run that took every step and ended at chance level
    (`convbench.stall`): it says why the run ended no better than a guess, not that it stopped early.
    """

    BUDGET = "budget"  # every planned step was taken
    TARGET = "target"  # the target was reached and the case has stop_at_target
    DIVERGED = "diverged"  # the loss went non-finite or blew up (RunResult.divergence says how)
    TIME_LIMIT = "time_limit"
    STALLED = "stalled"  # every planned step was taken and the run ended at chance level (RunResult.stall)


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
    #: Limit of a case's preparation, and then of its run (or of each throughput round), each on its own.
    #: None: 30 minutes on a worker pool (convbench.pool), no limit in this process (convbench.time_limit).
    timeout_s: float | None = None
    telemetry_interval_s: float | None = 0.2  # device/CPU sampling during the run; None: off


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
        components = CaseComponents(case, registry)  # an unknown name fails here, before any download
        self.device = resolve_device(case.device)
        self.speed = Speed(case, self.device)  # a precision this device lacks fails here, before any download
        # a private copy: what the case does to its data must not reach the cache, and so later cases
        data = load_in_turns(case, registry, self.settings, dist, self.device).copy_to(self.device)
        self.data = data = self.speed.data(data)  # in the case's memory format
        self._layout = self.speed.inputs()
        self.target_split = target_split(case, data)
        num_samples = data.train[0].shape[0]
        self.share = RankShare.of(case, num_samples, dist.rank, dist.world_size)
        self._rank_rows = slice(self.share.start, self.share.stop) if dist.distributed else None
        self.batches = EpochBatches(num_samples, self.share.global_batch, case.seed, self.device, case.shuffle)
        spe = self.batches.steps_per_epoch
        self.total_steps = case.steps if case.steps is not None else max(1, round(case.epochs * spe))
        self.eval_steps = eval_steps(case.eval_every, spe, self.total_steps)
        self._eval_order = sorted(self.eval_steps)
        self.speed.set_global_precision()
        built = components.build(data, self.device, dist, spe, self.total_steps, self.speed)
        self.module, self.model, self.optimizer = built.module, built.model, built.optimizer
        self.lr_control, self.augment = built.lr_control, built.augment
        self._step_by_step = (self.lr_control.steps_every_step
                              or getattr(self.module, "convbench_trajectory", None) is not None)
        self.loss = task_loss(data.task)
        self.eval_model = self.module if built.eval_model is None else built.eval_model  # compiled, or the module
        self.evaluator = Evaluator(self.eval_model, data, eval_train_samples=case.eval_train_samples,
                                   batch_size=case.eval_batch_size, device=self.device, dist=dist)
        synchronize(self.device)
        self.setup_s = time.perf_counter() - started
        #: Seconds torch.compile took before training (None: not compiled); `Timing.compile_s`.
        self.compile_s: float | None = self._compile() if self.speed.compile_mode else None
        self._ran = False
        self._last_progress = time.perf_counter()
        self._stream: Iterator[torch.Tensor] | None = None  # endless batches for throughput rounds
        self._steps_timed = 0
        self._first_step_s: float | None = None

    def evaluate(self) -> dict[str, float | None]:
        """Loss (and accuracy) on every split, in eval mode, without augmentation, at the case's precision."""
        with self.speed.autocast():
            return self.evaluator()

    def _compile(self) -> float:
        """Compile the model on one training batch's shape and every evaluation batch's shape before the
        clocks start (`convbench.speed.warm_up`); the seconds, the slowest rank's."""
        inputs, targets = self.data.train
        index = torch.arange(self.share.start, self.share.stop, device=self.device)
        batch = inputs[index] if self._layout is None else self._layout(inputs[index])
        seconds = warm_up(self.speed, train_model=self.model, eval_model=self.eval_model,
                          module=self.module, train_inputs=batch, train_targets=targets[index], loss=self.loss,
                          eval_shapes=eval_batches(self.evaluator.eval_sets, self.case.eval_batch_size),
                          device=self.device)
        return self.dist.max(seconds, self.device)

    def train_step(self, index: torch.Tensor, step: int) -> torch.Tensor:
        """One optimizer step on this rank's share of the global batch ``index``; returns the loss.

        Everything the hot path does is here and nothing else: no host syncs, no Python bookkeeping,
        and what a case does not use is skipped rather than called as a no-op (an identity augmentation,
        a null context: together 1.5-2% of the softmax model's step, `python -m benchmarks --only harness`).
        """
        if self._rank_rows is not None:
            index = index[self._rank_rows]
        inputs, targets = self.data.train
        # index_select, not inputs[index]: the same rows, but advanced indexing cost 15 us per batch of
        # 100 MNIST images on a CPU against 4.6 us (a 4% of the softmax model's step)
        batch = inputs.index_select(0, index)
        if self.augment is not identity:
            batch = self.augment(batch)
        if self._layout is not None:  # channels_last: an augmentation may have returned NCHW
            batch = self._layout(batch)
        if self.speed.autocast is contextlib.nullcontext:  # fp32 and tf32
            loss = self.loss(self.model(batch), targets.index_select(0, index))
        else:
            with self.speed.autocast():
                loss = self.loss(self.model(batch), targets.index_select(0, index))
        if self.share.loss_weight != 1.0:
            loss = loss * self.share.loss_weight
        self.optimizer.zero_grad(set_to_none=True)
        self.speed.backward(loss)
        self.lr_control.optimizer_step(step)
        return loss.detach()

    def time_steps(self, steps: int) -> float:
        """Seconds for ``steps`` training steps, synchronised, the slowest rank's: a throughput round.

        Batches continue where the previous round stopped; the scheduler and evaluation stay out of
        it, so rounds measure the training step alone (pytest-benchmark repeats them for statistics).
        """
        if self._stream is None:
            self._stream = self._endless_batches()
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
        with RunTelemetry(self.device, self.dist, self.settings.telemetry_interval_s) as telemetry:
            record.on_target = telemetry.mark_target
            steps, stop = self._train(record)
        stall = record.stall_verdict(ChanceLevel.of(self.data), steps) if stop is StopReason.BUDGET else None
        if stall is not None:
            stop = StopReason.STALLED
        result = record.result(steps, scale=self.settings.scale, setup_s=self.setup_s,
                               batch_size=self.batches.batch_size, telemetry=telemetry.result,
                               stop_reason=stop.value, machine_load=telemetry.machine_load, energy=telemetry.energy,
                               stall=stall)
        if self.compile_s is None:
            return result
        first_step_s = self.dist.max(self._first_step_s or 0.0, self.device)
        return replace(result, timing=replace(result.timing, compile_s=self.compile_s, first_step_s=first_step_s))

    def _train(self, record: RunRecorder) -> tuple[int, StopReason]:
        """The loop: stretches of steps until the first stop reason; the steps taken, and why.

        Inside a stretch nothing runs but training steps and a list append of each loss; whatever else
        is due (a divergence check, an evaluation, an epoch's end, a scheduler step, a trajectory
        point) ends the stretch and runs after its last step (`_stretch_end`). The per-step
        bookkeeping this replaced cost 2-3% of a small model's step on a CPU. The training clock runs
        only while steps are taken. The scheduler advances after every step and at every epoch boundary
        that training goes on past (`LRControl` says which it heeds).
        """
        lr_control, steps_per_epoch = self.lr_control, self.batches.steps_per_epoch
        batches = self._endless_batches()
        self.model.train()
        record.record_trajectory(0)
        step = 0
        self._evaluate(record, step, lr_control.effective_lr(0))  # a target met before training stops nothing
        stop: StopReason | None = None
        train_step, add_loss = self.train_step, record.add_loss
        record.train_clock.start()
        first_started = time.perf_counter()
        while stop is None:
            end = self._stretch_end(step)
            for number in range(step, end):
                add_loss(train_step(next(batches), number))
            if step == 0 and self.compile_s is not None:  # compiled: the first step's time apart (one sync)
                synchronize(self.device)
                self._first_step_s = time.perf_counter() - first_started
            record.after_steps(step, end, lr_control.effective_lr)
            lr = lr_control.effective_lr(end - 1)  # the last step's: the scheduler has not moved since
            step = end
            lr_control.after_step()
            stop = self._checks_after(record, step, lr)
            if stop is None and step % steps_per_epoch == 0:
                lr_control.after_epoch()
        record.train_clock.stop()
        if record.last_eval_step != step:  # stopped by a divergence check: the final state is evaluated too
            self._evaluate(record, step, lr)
        return step, stop

    def _stretch_end(self, step: int) -> int:
        """The first step after ``step`` after which more than training is due: the next divergence
        check, evaluation, epoch end or the last step; the next step when something is due after every
        one (a scheduler stepped per step, a model's trajectory, a compiled model's first step)."""
        if self._step_by_step or (step == 0 and self.compile_s is not None):
            return step + 1
        next_eval = self._eval_order[bisect.bisect_right(self._eval_order, step)]  # the last step is one
        every = DIVERGENCE_CHECK_EVERY
        spe = self.batches.steps_per_epoch
        return min(next_eval, (step // every + 1) * every, (step // spe + 1) * spe)

    def _checks_after(self, record: RunRecorder, step: int, lr: float) -> StopReason | None:
        """What is due after ``step``, in order: the divergence check, the evaluation, the budget.

        An evaluation stops the training clock while it runs; it stays stopped if the run ends.
        """
        at_eval = step in self.eval_steps
        last = step == self.total_steps
        checked = at_eval or last or step % DIVERGENCE_CHECK_EVERY == 0
        if checked and record.diverged(step):
            return StopReason.DIVERGED
        if checked and not (at_eval or last):
            self._heartbeat(record, step)
        if at_eval:
            record.train_clock.stop()
            if self._evaluate(record, step, lr) and self.case.stop_at_target:
                return StopReason.TARGET
        if last:
            return StopReason.BUDGET
        if at_eval:
            record.train_clock.start()
        return None

    def _heartbeat(self, record: RunRecorder, step: int) -> None:
        """Between evaluations far apart, a `Progress` with the recent train loss every `HEARTBEAT_S`
        seconds, so a slow case is seen to move. Sent right after a divergence check (which has just read
        the losses back, on every rank), with the training clock stopped while it is sent."""
        if self.settings.progress is None or not self.dist.is_main:
            return
        if time.perf_counter() - self._last_progress < HEARTBEAT_S:
            return
        record.train_clock.stop()
        metrics = {"train_loss": record.recent_loss(step)}
        self.settings.progress(Progress(self.case.id, step, self.total_steps, step / self.batches.steps_per_epoch,
                                        record.train_clock.total, metrics))
        self._last_progress = time.perf_counter()
        record.train_clock.start()

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
            self._last_progress = time.perf_counter()
        return self.dist.any(reached, self.device)

    def _endless_batches(self) -> Iterator[torch.Tensor]:
        """Global batches, epoch after epoch; each epoch is shuffled when its first batch is drawn."""
        return itertools.chain.from_iterable(self.batches.epoch() for _ in itertools.count())


def prepare_in_this_process(case: Case, settings: RunSettings | None = None,
                            dist: DistContext | None = None) -> PreparedRun:
    """Prepare one rank's part of a case in this process, as rank ``dist`` of its process group (default:
    alone). `convbench.launch.prepare` chooses the processes for a whole case and calls this on each."""
    return PreparedRun(case, settings, dist)


def run_in_this_process(case: Case, settings: RunSettings | None = None) -> RunResult:
    """Prepare and train a one-process case here, with no time limit (`convbench.run_case` runs any case).

    The global torch state it changes is put back afterwards, as `convbench.launch` does for every case.
    """
    isolation = CaseIsolation(f"case {case.id!r}")
    try:
        return PreparedRun(case, settings).run()
    finally:
        isolation.end_in_this_process()
