"""One throughput measurement: warm-up steps, then timed rounds of training steps, and the machine's
load over the timed rounds.

The rounds are what pytest-benchmark times (the `throughput` fixture passes its ``pedantic`` as
``repeat``), so its statistics and convbench's are over the same rounds. The machine's load is read
around all of the rounds at once, as `convbench.machine_load` reads it around a training run: two
readings, nothing between rounds to slow them. Who reads it depends on where the case trains
(`convbench.launch.prepare` chooses):

- in this process: this process, and the processes on its GPU;
- on the session's worker pool: this process with its children, the workers, whose CPU time is the
  measurement's own; the processes on the workers' GPUs are not checked from here (it says so);
- under torchrun: every rank its own, the first rank of each machine the machine, gathered over the
  ranks as a training run's readings are.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from convbench import machine_load
from convbench.device import resolve_device
from convbench.distributed import context_from_process_group, launched_by_torchrun
from convbench.result import MachineLoad, RoundTimes, ThroughputResult
from convbench.telemetry import NvmlDevice

if TYPE_CHECKING:
    from convbench.case import Case
    from convbench.launch import PreparedCase

#: ``repeat(one_round, rounds)`` calls ``one_round`` ``rounds`` times (pytest-benchmark's ``pedantic`` times each).
Repeat = Callable[[Callable[[], None], int], Any]


def _repeat_plainly(one_round: Callable[[], None], rounds: int) -> None:
    for _ in range(rounds):
        one_round()


def measure(prepared: PreparedCase, *, steps: int, rounds: int, warmup_steps: int,
            repeat: Repeat = _repeat_plainly) -> ThroughputResult:
    """``warmup_steps`` untimed steps (allocator, kernels, DDP buckets), then ``rounds`` rounds of ``steps``
    synchronised steps each; their times and the machine's load over them."""
    prepared.time_steps(warmup_steps)
    round_times: list[float] = []
    with RoundsLoad(prepared.case) as load:
        repeat(lambda: round_times.append(prepared.time_steps(steps)), rounds)
    case = prepared.case
    return ThroughputResult(
        case_id=case.id, case=case.to_dict(), world_size=case.world_size, steps_per_round=steps,
        rounds=len(round_times), samples_per_round=steps * prepared.global_batch,
        round_s=RoundTimes.of(round_times), startup_s=prepared.startup_s, machine_load=load.result)


class RoundsLoad:
    """``with RoundsLoad(case) as load: <the rounds>``, then ``load.result``, the `MachineLoad` over them.

    ``result`` stays None when the block raises: under torchrun the other ranks may not be there to
    gather with. NVML is closed either way. ``nvml`` replaces the `pynvml` module (tests).
    """

    def __init__(self, case: Case, *, nvml: Any | None = None) -> None:
        self.case = case
        self.result: MachineLoad | None = None
        self._nvml = nvml
        self._torchrun = launched_by_torchrun()
        self._gpu: NvmlDevice | None = None
        self._meter: machine_load.LoadMeter | None = None

    def __enter__(self) -> RoundsLoad:
        device = resolve_device(self.case.device)
        in_this_process = self._torchrun or self.case.world_size == 1
        gpu_reason = None
        if device.type == "cuda":
            if in_this_process:
                self._gpu, gpu_reason = NvmlDevice.open_or_why_not(device, nvml=self._nvml)
            else:
                gpu_reason = "a worker pool's GPUs are not checked from the session's process"
        first_on_machine = context_from_process_group().local_rank == 0 if self._torchrun else True
        try:
            self._meter = machine_load.LoadMeter(whole_machine=first_on_machine, gpu=self._gpu,
                                                 gpu_reason=gpu_reason, gpu_label=str(device)).start()
        except BaseException:
            self._close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        try:
            reading = self._meter.stop() if self._meter is not None else None
        finally:
            self._close()
        if exc_type is None:
            self.result = machine_load.combine(self._gathered(reading))

    def _gathered(self, reading: dict[str, Any] | None) -> list[dict[str, Any] | None]:
        if not self._torchrun:
            return [reading]
        import torch.distributed as dist

        readings: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(readings, reading)
        return readings

    def _close(self) -> None:
        if self._gpu is not None:
            self._gpu.close()
            self._gpu = None
