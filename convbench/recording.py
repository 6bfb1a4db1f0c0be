"""What a training run records as it goes, and the `RunResult` made of it.

The loss curve, the evaluations, the target, parameter trajectories, the divergence verdict and the
two clocks (training, evaluation) live here, so that the loop in `convbench.engine` shows only what
training does. `add_loss` is a list append; everything that reads the device back
(divergence checks, evaluations, the result) runs at intervals, outside the training clock or after
a synchronisation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from convbench.case import Case
from convbench.clock import Stopwatch
from convbench.distributed import DistContext
from convbench.result import SPLITS, Divergence, Energy, MachineLoad, RunResult, Stall, Target, Telemetry, Timing
from convbench.stall import ChanceLevel, final_accuracies, judge

#: Device types ("cpu", "cuda") a run has trained on in this process: the first run on each pays the
#: one-time costs (kernels loaded on first use, the allocator growing, thread pools starting) in its
#: training time. Recorded as ``Timing.first_in_process`` so that the scaling check can name a cold
#: start; warming up instead would have to train something untimed first, and nothing the case owns
#: may be touched for it without changing its results.
_TRAINED_HERE: set[str] = set()


def first_run_on(device: torch.device) -> bool:
    """Whether no run has trained on ``device``'s type in this process yet; counts this one as trained."""
    first = device.type not in _TRAINED_HERE
    _TRAINED_HERE.add(device.type)
    return first


class RunRecorder:
    """The measurements of one run on one rank; collective where all ranks must agree."""

    def __init__(self, case: Case, total_steps: int, steps_per_epoch: int, target_split: str,
                 device: torch.device, dist: DistContext,
                 trajectory: Callable[[], dict[str, float]] | None = None) -> None:
        self.case = case
        self.total_steps = total_steps
        self.steps_per_epoch = steps_per_epoch
        self.target_split = target_split
        self.device = device
        self.dist = dist
        self.stride = max(1, math.ceil(total_steps / case.max_curve_points))
        # The step losses: the hot path only appends each to a list (`add_loss`); each divergence check
        # reads the steps since the last one into `_values`, averaged over the ranks. Writing each loss
        # into a device buffer as it came was a device op per step, and with the checks' own ops 5% of
        # the softmax model's step (`python -m benchmarks --only harness`).
        self._pending: list[torch.Tensor] = []
        #: The hot path's one call per step: keep the step's loss (no host sync, no device op).
        self.add_loss: Callable[[torch.Tensor], None] = self._pending.append
        self._values: list[float] = []  # the checked steps' losses, in the dtype the curve has always had
        self._loss_dtype = torch.get_default_dtype()
        # One process on the CPU: each loss is computed by the time it is appended, and reading ten of
        # them (6 us) cost less than stacking them into one tensor to read (17 us), which also slowed
        # the step after it by 8 us. On a GPU one stacked read is one sync instead of ten.
        self._read_each = device.type == "cpu" and not dist.distributed
        self._first_loss: float | None = None  # read once, at the first divergence check
        self.lr_at_stride: list[float] = []
        self.evals: dict[str, list[Any]] = {"step": [], "epoch": [], "time_s": [], "lr": []}
        self.target: dict[str, Any] = {
            "metric": _target_metric(case), "split": target_split,
            "value": case.target_accuracy if case.target_accuracy is not None else case.target_loss,
            "reached": False, "step": None, "epoch": None, "time_s": None}
        self.train_clock, self.eval_clock = Stopwatch(device), Stopwatch(device)
        self.divergence: dict[str, Any] | None = None
        self._checked = 0  # steps before this one have had their divergence check
        # Models may expose scalar parameters to follow (W and b of linear regression): recorded with
        # the loss curve. Reading them costs a device sync, so only models that ask pay for it.
        self._trajectory = trajectory
        self.params: dict[str, list[Any]] = {"step": []}
        #: Called once, at the evaluation that first reaches the target (energy is read then).
        self.on_target: Callable[[], None] | None = None
        self.first_in_process = first_run_on(device)

    # ----------------------------------------------------------------------------- during the run
    def record_trajectory(self, step: int) -> None:
        if self._trajectory is None:
            return
        self.params["step"].append(step)
        for key, value in self._trajectory().items():
            self.params.setdefault(key, []).append(float(value))

    def after_steps(self, first: int, end: int, lr_of: Callable[[int], float]) -> None:
        """Steps ``first + 1`` to ``end`` (counted from 1) have been taken: the learning rate (``lr_of``
        the 0-based step) and the trajectory at every curve point among them. The engine ends a stretch
        of steps at every step when the trajectory or the learning rate could change between them."""
        stride = self.stride
        for step in range((first // stride + 1) * stride, end + 1, stride):
            self.lr_at_stride.append(lr_of(step - 1))
            self.record_trajectory(step)

    def diverged(self, step: int) -> bool:
        """Check the steps since the last check (collective: the curve and the verdict cover all ranks)."""
        if not self._pending:
            return self.divergence is not None
        if self._read_each and self._pending[0].dtype == self._loss_dtype:
            window = [loss.item() for loss in self._pending]
        else:  # one device op, the mean over the ranks, one read
            window = self.dist.mean_(torch.stack(self._pending).to(self._loss_dtype)).tolist()
        self._pending.clear()
        self._values.extend(window)
        if self._first_loss is None:  # averaged over the ranks just now: step 1 is in the first window
            self._first_loss = window[0]
        self.divergence = _check_divergence(window, self._checked, self.case.divergence_factor, self._first_loss)
        self._checked = step
        return self.divergence is not None

    def losses(self, start: int = 0) -> torch.Tensor:
        """The losses of steps ``start + 1`` onwards, in order, on the CPU (those since the last check
        not yet averaged over the ranks); only those are copied, so a heartbeat late in a long run
        does not rebuild the whole curve."""
        # on the CPU whatever the default device
        checked = torch.tensor(self._values[start:], dtype=self._loss_dtype, device="cpu")
        pending = self._pending[max(0, start - len(self._values)):]
        if not pending:
            return checked
        return torch.cat([checked, torch.stack(pending).to(self._loss_dtype).cpu()])

    def recent_loss(self, step: int, window: int = 10) -> float | None:
        """The mean train loss of the last ``window`` steps up to ``step`` (read after a divergence check,
        which has averaged them over the ranks); None before the first step."""
        start = max(0, step - window)
        losses = self.losses(start)[:step - start]
        return finite_or_none(losses.double().mean().item()) if losses.numel() else None

    def add_eval(self, step: int, lr: float, metrics: dict[str, float | None]) -> bool:
        """Record an evaluation at ``step``; whether it meets the target on this rank."""
        epoch = step / self.steps_per_epoch
        for key, value in {"step": step, "epoch": epoch, "time_s": self.train_clock.total, "lr": lr,
                           **metrics}.items():
            self.evals.setdefault(key, []).append(value)
        reached = _reached(self.case, metrics, self.target_split)
        if reached and not self.target["reached"]:
            self.target.update(reached=True, step=step, epoch=epoch, time_s=self.train_clock.total)
            if self.on_target is not None:
                self.on_target()
        return reached

    @property
    def last_eval_step(self) -> int | None:
        return self.evals["step"][-1] if self.evals["step"] else None

    # ----------------------------------------------------------------------------- afterwards
    def stall_verdict(self, chance: ChanceLevel | None, steps: int) -> Stall | None:
        """Whether the run ended at chance level (`convbench.stall`): judged on the last evaluation's
        train loss, or where the train split was not evaluated, the mean loss of the last logged stretch."""
        final = self._final()
        train_loss = final.get("train_loss")
        if train_loss is None:  # at least ten steps: one minibatch's loss is noise
            train_loss = self.recent_loss(steps, window=max(self.stride, 10))
        return judge(chance, train_loss, final_accuracies(final), steps)

    def _final(self) -> dict[str, float | None]:
        return {key: values[-1] for key, values in self.evals.items() if _is_metric(key)}

    def result(self, steps: int, *, scale: str, setup_s: float, batch_size: int,
               telemetry: dict[str, Any] | None, stop_reason: str | None = None,
               machine_load: MachineLoad | None = None, energy: Energy | None = None,
               stall: Stall | None = None) -> RunResult:
        """The run's result (collective: times are the slowest rank's)."""
        case, dist = self.case, self.dist
        setup_s = dist.max(setup_s, self.device)
        train_s = dist.max(self.train_clock.total, self.device)
        eval_s = dist.max(self.eval_clock.total, self.device)
        first_in_process = dist.any(self.first_in_process, self.device)  # cold if any rank was
        samples = steps * batch_size
        curve_steps, curve_losses = _bucket_means(self.losses()[:steps], self.stride)
        return RunResult(
            case_id=case.id,
            case=case.to_dict(),
            scale=scale,
            device=str(self.device),
            world_size=case.world_size,
            steps=steps,
            steps_planned=self.total_steps,
            epochs=steps / self.steps_per_epoch,
            samples=samples,
            diverged=self.divergence is not None,
            divergence=None if self.divergence is None else Divergence(**self.divergence),
            timing=Timing(setup_s=setup_s, train_s=train_s, eval_s=eval_s,
                          train_per_step_s=train_s / steps if steps else None,
                          first_in_process=first_in_process),
            samples_per_s=samples / train_s if train_s > 0 else None,
            final=self._final(),
            best=_best(self.evals),
            target=Target(**self.target),
            curves={"train": {"step": curve_steps, "loss": curve_losses,
                              "lr": self.lr_at_stride[:len(curve_steps)]},
                    "eval": self.evals,
                    **({"params": self.params} if self._trajectory is not None else {})},
            telemetry=None if telemetry is None else Telemetry.from_dict(telemetry),
            stop_reason=stop_reason,
            machine_load=machine_load,
            energy=energy,
            stalled=stall is not None,
            stall=stall,
        )


def _target_metric(case: Case) -> str | None:
    if case.target_accuracy is not None:
        return "accuracy"
    if case.target_loss is not None:
        return "loss"
    return None


def _reached(case: Case, metrics: dict[str, float | None], split: str) -> bool:
    if case.target_accuracy is not None:
        accuracy = metrics.get(f"{split}_accuracy")
        return accuracy is not None and accuracy >= case.target_accuracy
    if case.target_loss is not None:
        loss = metrics.get(f"{split}_loss")
        return loss is not None and loss <= case.target_loss
    return False


def _check_divergence(window: list[float], start: int, factor: float, reference: float) -> dict[str, Any] | None:
    """NaN/Inf anywhere in ``window`` (the losses of the steps after step ``start``), or its mean above
    ``factor`` times the first loss (``reference``). A NaN or an infinity anywhere makes the mean
    non-finite, and only then is the window searched for one."""
    mean = sum(window) / len(window)
    first_bad = None if math.isfinite(mean) else next(
        (offset for offset, value in enumerate(window) if not math.isfinite(value)), None)
    if first_bad is not None:  # else every loss is finite and only their sum overflowed: a blow-up
        return {"step": start + first_bad + 1, "reason": f"non-finite loss ({window[first_bad]})"}
    stop = start + len(window)
    if mean > factor * reference:
        return {"step": stop, "reason": f"loss {mean:.4g} exceeded {factor:g} x the first loss {reference:.4g}"}
    return None


def _bucket_means(losses: torch.Tensor, stride: int) -> tuple[list[int], list[float | None]]:
    """Mean train loss per `stride` steps, labelled with the last step of each bucket."""
    n = losses.shape[0]
    if n == 0:
        return [], []
    values = losses.double().cpu()
    full = (n // stride) * stride
    means = values[:full].view(-1, stride).mean(dim=1).tolist() if full else []
    steps = list(range(stride, full + 1, stride))
    if full < n:
        means.append(values[full:].mean().item())
        steps.append(n)
    return steps, [finite_or_none(m) for m in means]


def _is_metric(key: str) -> bool:
    return key.split("_")[0] in SPLITS


def _best(evals: dict[str, list[Any]]) -> dict[str, float | None]:
    best: dict[str, float | None] = {}
    for key, values in evals.items():
        if not _is_metric(key):
            continue
        present = [v for v in values if v is not None]
        if not present:
            best[key] = None
        else:
            best[key] = max(present) if key.endswith("accuracy") else min(present)
    return best


def finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None
