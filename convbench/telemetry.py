"""Device telemetry while a training run is timed: utilisation, memory, power and energy over time.

A sampler reads counters on a background thread at a fixed interval, so the training loop pays for
nothing but the thread's share of the CPU. GPUs are read through NVML (`pynvml`, from nvidia-ml-py);
anything else, or a machine where NVML cannot start, gets the CPU and this process's memory through
psutil. Either way the result is one plain-JSON dict (`Sampler.stop`), and it says which sampler ran
and why NVML did not.

Telemetry must never cost a measurement: an error while sampling (a lost GPU, a counter that stops
answering) ends sampling, is recorded as one line, and keeps what was measured until then.

Typical use::

    with make_sampler(device) as sampler:
        result = prepared.run()
    telemetry = sampler.stop()   # stop is idempotent: the same dict again
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import threading
import time
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import psutil

from convbench.errors import CaseTimeoutError, ConvbenchError

if TYPE_CHECKING:
    import torch

DEFAULT_INTERVAL_S = 0.2
#: Sampling faster than this only takes CPU time from the run being measured.
MIN_INTERVAL_S = 0.05
#: NVML refreshes utilisation no faster than this (it is averaged over 1/6 s to 1 s depending on the
#: board, power over up to 1 s): sampling faster would only re-read the same values.
NVML_MIN_INTERVAL_S = 1 / 6
#: The timeline keeps at most this many points; summaries always cover every sample.
MAX_TIMELINE_POINTS = 500
#: NVML errors that mean a board or driver does not give a reading (vGPUs and old drivers answer
#: NoPermission or FunctionNotFound where others say NotSupported): that field is None, sampling goes on.
_ABSENT_FIELD_ERRORS = ("NVMLError_NotSupported", "NVMLError_NoPermission", "NVMLError_FunctionNotFound")
#: How long `stop` waits for a sampling thread stuck inside a driver call before giving up on it.
JOIN_TIMEOUT_S = 5.0

Sample = dict[str, "float | int | None"]
_Built = TypeVar("_Built")


class _Stat:
    """Running count, sum and maximum of one metric, so summaries cover samples the timeline dropped."""

    __slots__ = ("count", "max", "total")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.max: float | None = None

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        self.max = value if self.max is None or value > self.max else self.max

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None


class Sampler:
    """Samples counters every `interval` seconds on a thread, between `start` and `stop`.

    Subclasses implement `_read` (one sample: metric name -> value or None) and may hook `_begin`
    (on `start`, before the thread runs), `_prime` (first thing on the sampling thread), `_end` (on
    `stop`, after the thread has ended), `_close` (release resources, always on `stop`) and
    `_summaries` (the result's "devices" list).

    `sample_once` is what the thread calls each interval; it is public so that a sample can be taken
    deterministically (tests, or a caller that wants one at a precise moment).

    The timeline is bounded: once it holds `max_points` points, every other point is dropped and only
    every second sample from then on is kept, so the points stay evenly spaced over the whole run
    (the spacing doubles each time). Means and maxima are kept separately over every sample.
    """

    kind: ClassVar[str] = ""
    #: Shorter intervals are raised to this: no sampler reads faster than its counters change.
    min_interval_s: ClassVar[float] = MIN_INTERVAL_S

    def __init__(self, interval: float = DEFAULT_INTERVAL_S, *, max_points: int = MAX_TIMELINE_POINTS,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        if not isinstance(interval, (int, float)) or not math.isfinite(interval) or interval <= 0:
            raise ConvbenchError(f"invalid telemetry interval={interval!r}: a positive number of seconds")
        self.interval = max(self.min_interval_s, float(interval))
        #: Why this sampler ran instead of a better one (set by `make_sampler`), or None.
        self.reason: str | None = None
        #: The first error met while sampling, one line, or None.
        self.error: str | None = None
        self._max_points = max(2, int(max_points))
        self._clock = clock
        self._t0 = clock()
        self._duration: float | None = None
        self._timeline: dict[str, list[Any]] = {"t_s": []}
        self._stats: dict[str, _Stat] = {}
        self._samples = 0
        self._stride = 1
        self._halted = False
        self._lock = threading.Lock()  # guards the recorded data: the thread writes, stop/result read
        self._stop_lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = False
        self._result: dict[str, Any] | None = None

    # -------------------------------------------------------------------------------- lifecycle
    def start(self) -> Sampler:
        """Read the start counters and launch the sampling thread. A sampler runs once."""
        if self._started:
            raise ConvbenchError("a telemetry sampler runs once; make another one for another run")
        self._started = True
        self._t0 = self._clock()
        try:
            self._begin()
        except Exception as exc:
            self._fail(exc)
            return self
        self._thread = threading.Thread(target=self._loop, name="convbench-telemetry", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> dict[str, Any]:
        """End sampling, join the thread (within one interval) and return the result; idempotent."""
        with self._stop_lock:
            if self._result is not None:
                return self._result
            with self._lock:
                self._halted = True
            self._wake.set()
            if self._thread is not None:
                self._thread.join(JOIN_TIMEOUT_S)
                if self._thread.is_alive():
                    self._note_error(f"the sampling thread did not stop within {JOIN_TIMEOUT_S:g} s; abandoned")
            if self._started:
                self._duration = self._clock() - self._t0
            try:
                if self._started:
                    self._end()
            except CaseTimeoutError:  # the run's time limit, not a sampling error
                raise
            except Exception as exc:
                self._note_error(one_line(exc))
            finally:
                try:
                    self._close()
                except Exception as exc:
                    self._note_error(one_line(exc))
            self._result = self.result()
            return self._result

    def __enter__(self) -> Sampler:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """Whether the sampling thread is alive (it ends on `stop` or after an error)."""
        return self._thread is not None and self._thread.is_alive()

    def _loop(self) -> None:
        try:
            self._prime()
        except Exception as exc:
            self._fail(exc)
            return
        # Event.wait, not sleep: stop() wakes the thread at once instead of after a full interval.
        while not self._wake.wait(self.interval):
            if self.sample_once() is None:
                return

    # -------------------------------------------------------------------------------- sampling
    def sample_once(self) -> Sample | None:
        """Take one sample and record it; None once sampling has stopped (after `stop` or an error)."""
        if self._halted:
            return None
        t = self._clock() - self._t0
        try:
            values = self._read()
            with self._lock:
                if self._halted:  # stop() ran while this sample was being read
                    return None
                self._record(t, values)
        except Exception as exc:
            self._fail(exc, t)
            return None
        return values

    def _record(self, t: float, values: Sample) -> None:
        clean = {key: _finite(value) for key, value in values.items()}
        for key, value in clean.items():
            if value is not None:
                self._stats.setdefault(key, _Stat()).add(value)
        keep = self._samples % self._stride == 0
        self._samples += 1
        if not keep:
            return
        timeline = self._timeline
        length = len(timeline["t_s"])
        timeline["t_s"].append(t)
        for key, value in clean.items():
            timeline.setdefault(key, [None] * length).append(value)
        for series in timeline.values():  # a metric missing from this sample
            if len(series) == length:
                series.append(None)
        if length + 1 >= self._max_points:
            for series in timeline.values():
                del series[1::2]
            self._stride *= 2

    def _fail(self, exc: BaseException, t: float | None = None) -> None:
        when = t if t is not None else self._clock() - self._t0
        with self._lock:
            self._halted = True
        self._note_error(f"sampling stopped at {when:.2f} s: {one_line(exc)}")

    def _note_error(self, message: str) -> None:
        with self._lock:
            if self.error is None:
                self.error = message

    # -------------------------------------------------------------------------------- result
    def result(self) -> dict[str, Any]:
        """The plain-JSON result: final after `stop`, a snapshot before."""
        if self._result is not None:
            return self._result
        with self._lock:  # the thread may be recording while a snapshot is taken
            return {
                "sampler": self.kind,
                "host": platform.node(),
                "interval_s": self.interval,
                "reason": self.reason,
                "error": self.error,
                "samples": self._samples,
                "duration_s": self._duration,
                "devices": self._summaries(),
                "timeline": {key: list(series) for key, series in self._timeline.items()},
            }

    def _stat(self, key: str) -> _Stat:
        return self._stats.get(key) or _Stat()

    # -------------------------------------------------------------------------------- hooks
    def _begin(self) -> None:
        pass

    def _prime(self) -> None:
        pass

    def _read(self) -> Sample:
        raise NotImplementedError

    def _end(self) -> None:
        pass

    def _close(self) -> None:
        pass

    def _summaries(self) -> list[dict[str, Any]]:
        return []


class NvmlSampler(Sampler):
    """GPU utilisation, memory, power and energy of NVML `devices` (NVML indices, or UUIDs 'GPU-...').

    NVML is initialised once, here, and shut down by `stop` (call `stop` even if the sampler was never
    started). Device handles are looked up once. A field a board or driver does not report
    (`NVMLError_NotSupported`, `NoPermission` or `FunctionNotFound`, e.g. power on some boards, energy on
    vGPUs) is None for that device and is not asked again; any other NVML error while sampling (e.g.
    `NVMLError_GpuIsLost`) ends sampling.

    Energy is the difference of NVML's total-energy counter between `start` and `stop`, so it covers
    the whole run exactly, not just the sampled instants. `nvml` replaces the `pynvml` module (tests).
    """

    kind = "nvml"
    min_interval_s = NVML_MIN_INTERVAL_S

    def __init__(self, devices: Sequence[int | str], interval: float = DEFAULT_INTERVAL_S, *,
                 nvml: ModuleType | Any | None = None, max_points: int = MAX_TIMELINE_POINTS,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        super().__init__(interval, max_points=max_points, clock=clock)
        wanted = list(dict.fromkeys(devices))
        if not wanted:
            raise ConvbenchError("NvmlSampler needs at least one device (an NVML index or a UUID)")
        if nvml is None:
            import pynvml as nvml
        self._nvml = nvml
        # Errors that mean "this board or this driver does not give that reading": the field is skipped.
        self._absent = tuple(getattr(nvml, name) for name in _ABSENT_FIELD_ERRORS if hasattr(nvml, name))
        self._unsupported: set[tuple[int, str]] = set()
        self._energy_start: dict[int, int | None] = {}
        nvml.nvmlInit()
        self._initialised = True
        try:
            self._handles = dict(self._lookup(device) for device in wanted)
            self._names = {index: self._optional(index, "name", nvml.nvmlDeviceGetName, handle)
                           for index, handle in self._handles.items()}
        except BaseException:
            self._close()
            raise
        self._energy_j: dict[int, float | None] = dict.fromkeys(self._handles)

    def _lookup(self, device: int | str) -> tuple[int, Any]:
        """(NVML index, handle) of an NVML index, or of a UUID ('GPU-...'), which names one board for sure."""
        if isinstance(device, str):
            handle = self._nvml.nvmlDeviceGetHandleByUUID(device)
            return int(self._nvml.nvmlDeviceGetIndex(handle)), handle
        return int(device), self._nvml.nvmlDeviceGetHandleByIndex(int(device))

    def _optional(self, index: int, field: str, read: Callable[[Any], Any], handle: Any) -> Any:
        """`read(handle)`, or None for good if the device or driver does not give it."""
        if (index, field) in self._unsupported:
            return None
        try:
            return read(handle)
        except self._absent:
            self._unsupported.add((index, field))
            return None

    def _begin(self) -> None:
        read = self._nvml.nvmlDeviceGetTotalEnergyConsumption
        for index, handle in self._handles.items():
            self._energy_start[index] = self._optional(index, "energy", read, handle)

    def _read(self) -> Sample:
        nvml, values = self._nvml, {}
        for index, handle in self._handles.items():
            rates = self._optional(index, "utilization", nvml.nvmlDeviceGetUtilizationRates, handle)
            memory = self._optional(index, "memory", nvml.nvmlDeviceGetMemoryInfo, handle)
            milliwatts = self._optional(index, "power", nvml.nvmlDeviceGetPowerUsage, handle)
            prefix = f"gpu{index}_"
            values[prefix + "utilization"] = rates.gpu if rates is not None else None
            values[prefix + "memory_utilization"] = rates.memory if rates is not None else None
            values[prefix + "memory_used_bytes"] = memory.used if memory is not None else None
            values[prefix + "power_w"] = milliwatts / 1000 if milliwatts is not None else None
        return values

    def _end(self) -> None:
        read = self._nvml.nvmlDeviceGetTotalEnergyConsumption
        for index, handle in self._handles.items():
            start = self._energy_start.get(index)
            if start is None:
                continue
            end = self._optional(index, "energy", read, handle)
            # A counter that went backwards was reset (driver reload): no honest difference.
            self._energy_j[index] = (end - start) / 1000 if end is not None and end >= start else None

    def _close(self) -> None:
        if self._initialised:
            self._initialised = False
            with contextlib.suppress(self._nvml.NVMLError):
                self._nvml.nvmlShutdown()

    def _summaries(self) -> list[dict[str, Any]]:
        devices = []
        for index in self._handles:
            stat = {name: self._stat(f"gpu{index}_{name}")
                    for name in ("utilization", "memory_utilization", "memory_used_bytes", "power_w")}
            memory = stat["memory_used_bytes"]
            devices.append({
                "index": index,
                "name": _text(self._names[index]),
                "utilization_mean": stat["utilization"].mean,
                "utilization_max": stat["utilization"].max,
                "memory_utilization_mean": stat["memory_utilization"].mean,
                "memory_utilization_max": stat["memory_utilization"].max,
                "memory_used_mean_bytes": _int_or_none(memory.mean),
                "memory_used_max_bytes": _int_or_none(memory.max),
                "power_mean_w": stat["power_w"].mean,
                "power_max_w": stat["power_w"].max,
                "energy_j": self._energy_j.get(index),
            })
        return devices


class CpuSampler(Sampler):
    """System CPU utilisation and the resident memory of this process and its children.

    Children count because multi-device runs train in worker processes. CPU percent is system-wide
    (0-100, all cores), from `psutil.cpu_percent(interval=None)`: psutil measures it since the previous
    call *on the same thread*, so the sampling thread primes it before its first interval. `per_core`
    adds one series per core. `process` replaces this process (tests).
    """

    kind = "psutil"

    def __init__(self, interval: float = DEFAULT_INTERVAL_S, *, per_core: bool = False,
                 process: psutil.Process | None = None, max_points: int = MAX_TIMELINE_POINTS,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        super().__init__(interval, max_points=max_points, clock=clock)
        self.per_core = per_core
        self._process = process or psutil.Process()
        self._cores = psutil.cpu_count() or 1

    def _prime(self) -> None:
        psutil.cpu_percent(interval=None)
        if self.per_core:
            psutil.cpu_percent(interval=None, percpu=True)

    def _read(self) -> Sample:
        values: Sample = {"cpu_percent": psutil.cpu_percent(interval=None), "rss_bytes": self._rss()}
        if self.per_core:
            for core, percent in enumerate(psutil.cpu_percent(interval=None, percpu=True)):
                values[f"cpu{core}_percent"] = percent
        return values

    def _rss(self) -> int:
        rss = self._process.memory_info().rss
        for child in self._process.children(recursive=True):
            with contextlib.suppress(psutil.Error):  # a worker that exited between the listing and the read
                rss += child.memory_info().rss
        return rss

    def _summaries(self) -> list[dict[str, Any]]:
        cpu, rss = self._stat("cpu_percent"), self._stat("rss_bytes")
        summary: dict[str, Any] = {
            "index": None,
            "name": "cpu",
            "cores": self._cores,
            "cpu_percent_mean": cpu.mean,
            "cpu_percent_max": cpu.max,
            "rss_mean_bytes": _int_or_none(rss.mean),
            "rss_max_bytes": _int_or_none(rss.max),
        }
        if self.per_core:
            cores = sorted((int(key[3:-8]), stat) for key, stat in self._stats.items()
                           if key.startswith("cpu") and key.endswith("_percent") and key[3:-8].isdigit())
            summary["per_core_percent_mean"] = [stat.mean for _, stat in cores]
            summary["per_core_percent_max"] = [stat.max for _, stat in cores]
        return [summary]


def make_sampler(device: torch.device | str, interval: float = DEFAULT_INTERVAL_S, *,
                 nvml: ModuleType | Any | None = None) -> Sampler:
    """NVML for a CUDA device when `pynvml` imports and NVML starts, else the CPU sampler.

    The CPU sampler's `reason` says in one line why NVML was not used. The GPU is found by the UUID
    CUDA reports for it; without one, a CUDA index is mapped to NVML's through `CUDA_VISIBLE_DEVICES`
    (NVML numbers devices in PCI bus order, as CUDA does with `CUDA_DEVICE_ORDER=PCI_BUS_ID`). `nvml`
    replaces the `pynvml` module (tests).
    """
    opened = _first_nvml_device(device, nvml, lambda candidate, module: NvmlSampler([candidate], interval,
                                                                                     nvml=module))
    if isinstance(opened, str):
        return _fallback(interval, opened)
    return opened


class NvmlDevice:
    """One GPU through NVML, for readings taken once or twice rather than sampled: its energy counter
    and the processes on it (`convbench.energy`, `convbench.machine_load`).

    It initialises NVML itself (NVML counts initialisations, so a sampler may be open beside it) and
    `close` shuts its own down. `open` finds the GPU as `make_sampler` does.
    """

    def __init__(self, device: int | str, *, nvml: ModuleType | Any) -> None:
        self._nvml = nvml
        nvml.nvmlInit()
        self._open = True
        try:
            handle = nvml.nvmlDeviceGetHandleByUUID(device) if isinstance(device, str) else \
                nvml.nvmlDeviceGetHandleByIndex(int(device))
            self.index = int(nvml.nvmlDeviceGetIndex(handle)) if isinstance(device, str) else int(device)
        except BaseException:
            self.close()
            raise
        self._handle = handle
        #: Errors that mean this board or driver does not give a reading (as for the sampler's fields).
        self.absent_errors = tuple(getattr(nvml, name) for name in _ABSENT_FIELD_ERRORS if hasattr(nvml, name))

    @classmethod
    def open(cls, device: torch.device | str, *, nvml: ModuleType | Any | None = None) -> NvmlDevice:
        """The GPU of CUDA device `device`; `ConvbenchError` saying in one line why NVML cannot read it."""
        opened = _first_nvml_device(device, nvml, lambda candidate, module: cls(candidate, nvml=module))
        if isinstance(opened, str):
            raise ConvbenchError(opened)
        return opened

    @classmethod
    def open_or_why_not(cls, device: torch.device | str, *,
                        nvml: ModuleType | Any | None = None) -> tuple[NvmlDevice | None, str | None]:
        """(the GPU, None), or (None, why NVML cannot read it): without NVML a run still trains, its GPU's
        energy and other processes are then unknown, and the result says why."""
        try:
            return cls.open(device, nvml=nvml), None
        except Exception as exc:
            return None, str(exc) or one_line(exc)

    @property
    def label(self) -> str:
        return f"GPU {self.index}"

    def total_energy_mj(self) -> int:
        """Millijoules since the driver loaded (NVML's counter; Volta and later)."""
        return int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle))

    def compute_pids(self) -> list[int]:
        """The process ids of every compute context on this GPU, the run's own included."""
        return sorted({int(process.pid) for process in self._nvml.nvmlDeviceGetComputeRunningProcesses(self._handle)})

    def close(self) -> None:
        if self._open:
            self._open = False
            with contextlib.suppress(self._nvml.NVMLError):
                self._nvml.nvmlShutdown()


def _first_nvml_device(device: torch.device | str, nvml: ModuleType | Any | None,
                       build: Callable[[int | str, Any], _Built]) -> _Built | str:
    """`build(candidate, nvml)` for the first NVML name of CUDA `device` that works, or why none did."""
    name = str(device)
    kind, _, index_text = name.partition(":")
    if kind != "cuda":
        return f"device {name!r} is not a CUDA device"
    cuda_index = int(index_text) if index_text else _current_cuda_index()
    # CUDA and NVML may number the GPUs differently (CUDA puts the fastest first by default, and NVML
    # ignores CUDA_VISIBLE_DEVICES): the UUID CUDA reports names the board for sure; the index is
    # the fallback where there is none (or NVML does not know it, as for some MIG set-ups).
    uuid = _cuda_uuid(cuda_index)
    index, why = _nvml_index(cuda_index)
    candidates = [device for device in (uuid, index) if device is not None]
    if not candidates:
        return why or f"no NVML device for {name!r}"
    if nvml is None:
        try:
            import pynvml as nvml
        except ImportError as exc:
            return f"pynvml is not importable: {one_line(exc)}"
    problems = []
    for candidate in candidates:
        try:
            return build(candidate, nvml)
        except Exception as exc:  # NVML missing, no driver, no such device: telemetry degrades, training goes on
            problems.append(one_line(exc))
    return f"NVML is unavailable: {'; '.join(dict.fromkeys(problems))}"


def merge_ranks(gathered: Sequence[dict[str, Any] | None]) -> dict[str, Any] | None:
    """One result for a process group from each rank's (None where a rank did not sample).

    ``devices`` lists every sampled device, tagged with its rank and host, so the report can show each
    GPU, and each machine of a multi-node run, on its own; ``ranks`` keeps every rank's whole result
    (with its timeline). The other fields are those of the lowest sampling rank, and ``error`` names
    the rank of each error met.
    """
    present = [(rank, telemetry) for rank, telemetry in enumerate(gathered) if telemetry is not None]
    if not present:
        return None
    errors = [f"rank {rank}: {telemetry['error']}" for rank, telemetry in present if telemetry.get("error")]
    return {
        **present[0][1],
        "error": "; ".join(errors) or None,
        "devices": [{**device, "rank": rank, "host": telemetry.get("host")}
                    for rank, telemetry in present for device in telemetry.get("devices") or []],
        "ranks": list(gathered),
    }


# ------------------------------------------------------------------------------------ helpers
def _fallback(interval: float, reason: str | None) -> CpuSampler:
    sampler = CpuSampler(interval)
    sampler.reason = reason
    return sampler


def _cuda_uuid(cuda_index: int) -> str | None:
    """NVML's name ('GPU-<uuid>', or 'MIG-<uuid>') of CUDA device ``cuda_index``, if CUDA tells it."""
    import torch

    if not torch.cuda.is_available():
        return None
    try:
        uuid = str(torch.cuda.get_device_properties(cuda_index).uuid)
    except Exception:  # an older torch without `uuid`, or an index CUDA does not have
        return None
    return uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"


def _current_cuda_index() -> int:
    import torch

    return torch.cuda.current_device() if torch.cuda.is_available() else 0


def _nvml_index(cuda_index: int) -> tuple[int | None, str | None]:
    """NVML ignores CUDA_VISIBLE_DEVICES: cuda:0 may be NVML device 3."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return cuda_index, None
    entries = [entry.strip() for entry in visible.split(",")]
    if cuda_index >= len(entries) or not entries[cuda_index]:
        return None, f"cuda:{cuda_index} is not in CUDA_VISIBLE_DEVICES={visible!r}"
    entry = entries[cuda_index]
    if not entry.isdigit():
        return None, f"CUDA_VISIBLE_DEVICES names {entry!r}, which cannot be mapped to an NVML index"
    return int(entry), None


def one_line(exc: BaseException) -> str:
    message = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _finite(value: Any) -> float | int | None:
    if value is None or isinstance(value, bool):
        return None
    return value if math.isfinite(value) else None


def _int_or_none(value: float | None) -> int | None:
    return None if value is None else round(value)


def _text(name: Any) -> str | None:
    """nvmlDeviceGetName returns bytes in older nvidia-ml-py releases, str in newer ones."""
    if isinstance(name, bytes):
        return name.decode("utf-8", "replace")
    return None if name is None else str(name)
