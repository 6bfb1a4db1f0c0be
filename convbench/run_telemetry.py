"""What is measured around one training run on one rank, and gathered over the ranks of a process group.

Three things, each read by the ranks that can read it:

- telemetry sampled over time (`convbench.telemetry`): each GPU rank samples its own GPU; on CPUs
  the first rank of each machine samples that machine (the others would only read the same counters
  again). Off when the interval is None or 0.
- the machine's load (`convbench.machine_load`): two readings, so it is there with sampling off too.
- energy (`convbench.energy`): each GPU rank reads its GPU's counter, the first rank of each machine
  its CPU packages'; at the start, when the target is first reached (`mark_target`) and at the end.

A run that fails or is interrupted still stops its sampler and closes what it opened, so no thread
outlives it; it gathers nothing, because the other ranks may not be there to gather with.
"""

from __future__ import annotations

import platform
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

import torch

from convbench import energy, machine_load
from convbench.distributed import DistContext
from convbench.result import Energy, MachineLoad
from convbench.telemetry import NvmlDevice


class RunTelemetry:
    """``with RunTelemetry(device, dist, interval) as telemetry: ...``, then ``telemetry.result``,
    ``telemetry.machine_load`` and ``telemetry.energy``.

    ``result`` is this rank's sampled telemetry; on every rank of a process group, every rank's,
    merged (`convbench.telemetry.merge_ranks`). None when sampling is off (``interval`` None or 0)
    or no rank sampled. ``machine_load`` and ``energy`` cover the whole group. All three are None
    until the block ends without an exception. `nvml` replaces the `pynvml` module and
    `powercap_root` the RAPL folder (tests).
    """

    def __init__(self, device: torch.device, dist: DistContext, interval: float | None, *,
                 nvml: ModuleType | Any | None = None, powercap_root: Path | str | None = None) -> None:
        self.device = device
        self.dist = dist
        self.interval = interval
        self.result: dict[str, Any] | None = None
        self.machine_load: MachineLoad | None = None
        self.energy: Energy | None = None
        self._nvml, self._powercap_root = nvml, powercap_root
        self._sampler: Any = None
        self._gpu: NvmlDevice | None = None
        self._gpu_reason: str | None = None
        self._load: machine_load.LoadMeter | None = None
        self._meter: energy.EnergyMeter | None = None
        self._energy_reason: str | None = None
        self._target_j: float | None = None
        self._target_marked = False

    @property
    def _first_on_machine(self) -> bool:
        return self.dist.local_rank == 0

    def __enter__(self) -> RunTelemetry:
        is_gpu = self.device.type == "cuda"
        try:
            if self.interval and (is_gpu or self._first_on_machine):
                from convbench.telemetry import make_sampler

                self._sampler = make_sampler(self.device, self.interval).start()
            if is_gpu:
                self._gpu, self._gpu_reason = NvmlDevice.open_or_why_not(self.device, nvml=self._nvml)
            self._load = machine_load.LoadMeter(whole_machine=self._first_on_machine, gpu=self._gpu,
                                                gpu_reason=self._gpu_reason, gpu_label=str(self.device)).start()
            if is_gpu or self._first_on_machine:
                self._meter = self._start_energy_meter()
        except BaseException:  # __exit__ will not run: leave no thread and no NVML handle behind
            self._stop_all()
            raise
        return self

    def _start_energy_meter(self) -> energy.EnergyMeter | None:
        try:
            counter = energy.find_counter(self.device, nvml_device=self._gpu, nvml_reason=self._gpu_reason,
                                          powercap_root=self._powercap_root)
        except energy.EnergyUnavailable as exc:
            self._energy_reason = str(exc)
            return None
        return energy.EnergyMeter(counter).start()

    def mark_target(self) -> None:
        """Read the energy now: the target was first reached (later calls change nothing)."""
        if not self._target_marked:
            self._target_marked = True
            self._target_j = self._meter.joules() if self._meter is not None else None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        telemetry, run_j, load = self._stop_all()
        if exc_type is None:
            self._gather(telemetry, load, self._energy_reading(run_j))

    def _stop_all(self) -> tuple[dict[str, Any] | None, float | None, dict[str, Any] | None]:
        """Stop the sampler and the meters and close NVML, whatever fails: (telemetry, joules, load)."""
        try:
            # the sampler re-raises the run's time limit (CaseTimeoutError): the rest is stopped all the same
            telemetry = self._sampler.stop() if self._sampler is not None else None
        finally:
            try:
                run_j = self._meter.stop() if self._meter is not None else None
                load = self._load.stop() if self._load is not None else None
            finally:
                if self._gpu is not None:
                    self._gpu.close()
        return telemetry, run_j, load

    def _energy_reading(self, run_j: float | None) -> dict[str, Any] | None:
        """This rank's energy for `energy.combine`; None where this rank reads no counter."""
        meter = self._meter
        if meter is None and self._energy_reason is None:
            return None
        return {"rank": self.dist.rank, "host": platform.node(),
                "source": None if meter is None else meter.counter.source,
                "counter": None if meter is None else meter.counter.label,
                "run_j": run_j, "to_target_j": self._target_j,
                "reason": self._energy_reason if meter is None else meter.error}

    def _gather(self, telemetry: dict[str, Any] | None, load: dict[str, Any] | None,
                reading: dict[str, Any] | None) -> None:
        mine = {"telemetry": telemetry, "load": load, "energy": reading}
        if self.dist.distributed:
            from convbench.telemetry import merge_ranks

            gathered: list[Any] = [None] * self.dist.world_size
            torch.distributed.all_gather_object(gathered, mine)
            self.result = merge_ranks([rank["telemetry"] for rank in gathered])
        else:
            gathered = [mine]
            self.result = telemetry
        self.machine_load = machine_load.combine([rank["load"] for rank in gathered])
        self.energy = energy.combine([rank["energy"] for rank in gathered])
