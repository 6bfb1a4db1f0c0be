"""A stand-in for the `pynvml` module (no GPU here): per-device scripts of successive answers."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace
from typing import Any

import pynvml


class FakeNvml:
    """The pynvml functions convbench uses, answering from per-device scripts of successive values.

    A script's last value repeats once it is used up; an exception in a script is raised (the real
    classes from the installed pynvml). `calls` counts calls per (function, device index).
    """

    NVMLError = pynvml.NVMLError
    NVMLError_NotSupported = pynvml.NVMLError_NotSupported
    NVMLError_NoPermission = pynvml.NVMLError_NoPermission
    NVMLError_FunctionNotFound = pynvml.NVMLError_FunctionNotFound

    def __init__(self, scripts: dict[int, dict[str, list[Any]]] | None = None,
                 init_error: BaseException | None = None, uuids: dict[str, int] | None = None) -> None:
        self.scripts = scripts if scripts is not None else {0: script()}
        self.init_error = init_error
        self.uuids = uuids or {}  # "GPU-..." -> NVML index
        self.calls: Counter = Counter()
        self._position: Counter = Counter()

    def _answer(self, function: str, handle: SimpleNamespace) -> Any:
        key = (function, handle.index)
        self.calls[key] += 1
        values = self.scripts[handle.index][function]
        value = values[min(self._position[key], len(values) - 1)]
        self._position[key] += 1
        if isinstance(value, BaseException):
            raise value
        return value

    def nvmlInit(self) -> None:
        self.calls["init"] += 1
        if self.init_error is not None:
            raise self.init_error

    def nvmlShutdown(self) -> None:
        self.calls["shutdown"] += 1

    def nvmlDeviceGetHandleByIndex(self, index: int) -> SimpleNamespace:
        self.calls["handle", index] += 1
        return SimpleNamespace(index=index)

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> SimpleNamespace:
        self.calls["uuid", uuid] += 1
        if uuid not in self.uuids:
            raise pynvml.NVMLError_NotFound()
        return SimpleNamespace(index=self.uuids[uuid])

    def nvmlDeviceGetIndex(self, handle: SimpleNamespace) -> int:
        return handle.index

    def nvmlDeviceGetName(self, handle):
        return self._answer("name", handle)

    def nvmlDeviceGetUtilizationRates(self, handle):
        gpu, memory = self._answer("utilization", handle)
        return SimpleNamespace(gpu=gpu, memory=memory)

    def nvmlDeviceGetMemoryInfo(self, handle):
        return SimpleNamespace(used=self._answer("memory", handle), total=80 * 2**30)

    def nvmlDeviceGetPowerUsage(self, handle):
        return self._answer("power", handle)

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        return self._answer("energy", handle)

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        return [SimpleNamespace(pid=pid, usedGpuMemory=2**20) for pid in self._answer("processes", handle)]


def script(name: Any = b"Fake GPU", utilization=((10, 5),), memory=(1000,), power=(100_000,),
           energy=(0,), processes=((),)) -> dict[str, list[Any]]:
    """One device's answers; `processes` holds the pids of its compute contexts at each call."""
    return {"name": [name], "utilization": list(utilization), "memory": list(memory), "power": list(power),
            "energy": list(energy), "processes": list(processes)}
