"""Was the machine busy with other work while a run was measured? Two readings tell, no sampling.

On a shared machine the same case can take four times as long from one run to the next. A result
that says so can be trusted, or set aside: at the start and the end of the run this reads the CPU
time the whole machine spent busy (`psutil.cpu_times`, all cores) and the CPU time of the run's own
processes (this process and its children; in a process group every rank reads its own, and the
first rank of each machine reads the machine). What the machine spent beyond the run's processes,
other processes took. On GPUs it also lists the processes NVML sees on the run's GPU.

A run is **busy** when other processes took more than `BUSY_CPU_SHARE` of all the cores' time
during it, or when any process not the run's had a compute context on one of its GPUs. The kernel
counts CPU time in clock ticks (10 ms), per core and per process, so a share from two readings is
only good to a few ticks over the run's core-seconds (`cpu_share_resolution`): a short run whose
share is within that of the threshold is not judged on its CPU time.
"""

from __future__ import annotations

import contextlib
import os
import platform
import time
from collections.abc import Callable, Sequence
from typing import Any

import psutil

from convbench.result import MachineLoad
from convbench.telemetry import NvmlDevice, one_line

#: Others taking more than this fraction of all the cores' time make a run busy.
BUSY_CPU_SHARE = 0.10


def clock_tick_s() -> float:
    """The unit the kernel counts CPU time in (1/100 s on Linux)."""
    with contextlib.suppress(AttributeError, ValueError, OSError):
        return 1.0 / os.sysconf("SC_CLK_TCK")
    return 0.01


def cpu_share_resolution(total_core_s: float, cores: int, processes: int) -> float:
    """How far a share of `total_core_s` read twice can be off: one tick per core and two per process
    (user and system time), at each end."""
    return 2 * clock_tick_s() * (cores + 2 * processes) / total_core_s


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, total) core-seconds of the whole machine since boot, as psutil's cpu_percent counts them.

    Idle and I/O wait are not busy; guest time is already inside user time on Linux, so it is left
    out of the total. Time stolen by a hypervisor is busy: other virtual machines took it.
    """
    times = psutil.cpu_times()
    total = sum(times) - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)
    return total - times.idle - getattr(times, "iowait", 0.0), total


def process_tree_seconds(process: psutil.Process) -> tuple[float, list[int]]:
    """CPU seconds of `process` and its live children, with the children it has reaped; their pids."""
    seconds, pids = _cpu_seconds(process), [process.pid]
    for child in process.children(recursive=True):
        with contextlib.suppress(psutil.Error):  # a child that ended between the listing and the read
            seconds += _cpu_seconds(child)
            pids.append(child.pid)
    return seconds, pids


def ancestor_pids(process: psutil.Process) -> list[int]:
    """The processes that started this one (a pool's parent, torchrun's agent, pytest): on a GPU they
    are the run's own, not other work (a pool's parent may hold a context from an earlier case)."""
    with contextlib.suppress(psutil.Error, AttributeError):
        return [parent.pid for parent in process.parents()]
    return []


def compute_threads() -> int:
    """The intra-op threads torch computes with in this process: with the cores, whether the run's ranks
    asked for more threads than the machine has (each then waits on the others, and a busy core slows
    every thread of a rank)."""
    import torch

    return torch.get_num_threads()


class LoadMeter:
    """This rank's two readings: `start` before the run, `stop` after it (a plain dict, to gather).

    `whole_machine` is True on the first rank of each machine (the others would read the same
    counters). `gpu` is the rank's GPU through NVML; on a GPU that NVML cannot open, None with
    `gpu_reason` saying why and `gpu_label` naming the device (both None off GPUs). `process`
    replaces this process (tests).
    """

    def __init__(self, *, whole_machine: bool, gpu: NvmlDevice | None = None, gpu_reason: str | None = None,
                 gpu_label: str | None = None, process: psutil.Process | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.whole_machine = whole_machine
        self.gpu = gpu
        self.gpu_label = gpu.label if gpu is not None else (gpu_label if gpu_reason is not None else None)
        self.gpu_reason = None if gpu_reason is None else f"the processes on {gpu_label} were not checked: {gpu_reason}"
        self._process = process or psutil.Process()
        self._clock = clock
        self._start: dict[str, Any] | None = None
        self._gpu_pids: set[int] = set()

    def start(self) -> LoadMeter:
        self._start = self._read()
        return self

    def stop(self) -> dict[str, Any]:
        if self._start is None:
            raise RuntimeError("LoadMeter.stop before start")
        start, end = self._start, self._read()
        own = set(start["pids"]) | set(end["pids"])
        machine = None if start["machine"] is None else [b - a for a, b in zip(start["machine"], end["machine"],
                                                                               strict=True)]
        return {
            "host": platform.node(),
            "duration_s": end["t"] - start["t"],
            "own_cpu_s": end["own_s"] - start["own_s"],
            "machine_busy_s": None if machine is None else machine[0],
            "machine_total_s": None if machine is None else machine[1],
            "cores": psutil.cpu_count() or 1,
            "threads": compute_threads(),
            "own_processes": len(own),
            "pids": sorted(own | set(ancestor_pids(self._process))),
            "gpu": self.gpu_label,
            "gpu_pids": None if self.gpu_reason is not None else sorted(self._gpu_pids),
            "gpu_reason": self.gpu_reason,
        }

    def _read(self) -> dict[str, Any]:
        self._read_gpu()
        own_s, pids = process_tree_seconds(self._process)
        return {"t": self._clock(), "own_s": own_s, "pids": pids,
                "machine": machine_cpu_seconds() if self.whole_machine else None}

    def _read_gpu(self) -> None:
        if self.gpu is None or self.gpu_reason is not None:
            return
        try:
            self._gpu_pids.update(self.gpu.compute_pids())
        except Exception as exc:  # never costs the run: the GPU's processes are then unknown
            self.gpu_reason = f"NVML does not list the processes on {self.gpu.label}: {one_line(exc)}"


def combine(readings: Sequence[dict[str, Any] | None]) -> MachineLoad:
    """The run's `MachineLoad` from every rank's `LoadMeter.stop` (None where a rank has none)."""
    present = [reading for reading in readings if reading is not None]
    hosts = list(dict.fromkeys(reading["host"] for reading in present))
    busy: list[str] = []
    unknown: list[str] = []
    summaries = []
    for host in hosts:
        on_host = [reading for reading in present if reading["host"] == host]
        label = f" on {host}" if len(hosts) > 1 else ""
        summary = _host_cpu(on_host, label, busy, unknown)
        summary["gpus"] = [_gpu(on_host, gpu, label, busy, unknown)
                           for gpu in dict.fromkeys(r["gpu"] for r in on_host if r["gpu"] is not None)]
        summaries.append({"host": host, **summary})
    shares = [s["other_cpu_share"] for s in summaries if s["other_cpu_share"] is not None]
    own = [s["own_cpu_share"] for s in summaries if s["own_cpu_share"] is not None]
    gpus = [gpu for s in summaries for gpu in s["gpus"]]
    judged = any(s["judged"] for s in summaries) or any(gpu["other_processes"] is not None for gpu in gpus)
    others_on_gpus = None if not gpus or any(g["other_processes"] is None for g in gpus) else sum(
        g["other_processes"] for g in gpus)
    durations = [s["duration_s"] for s in summaries if s["duration_s"] is not None]
    return MachineLoad(
        busy=True if busy else (False if judged else None),
        other_cpu_share=max(shares) if shares else None,
        own_cpu_share=max(own) if own else None,
        other_gpu_processes=others_on_gpus,
        duration_s=max(durations) if durations else None,
        reason="; ".join(busy + unknown) or None,
        hosts=[{k: v for k, v in s.items() if k != "judged"} for s in summaries],
    )


def _host_cpu(on_host: list[dict[str, Any]], label: str, busy: list[str], unknown: list[str]) -> dict[str, Any]:
    """One machine's CPU shares: its busy time beyond the run's processes there, over its core-seconds."""
    machine = next((r for r in on_host if r["machine_busy_s"] is not None), None)
    threads = [r.get("threads") for r in on_host]
    summary: dict[str, Any] = {"cores": on_host[0]["cores"], "ranks": len(on_host),
                               "threads": sum(threads) if None not in threads else None,
                               "duration_s": None, "other_cpu_share": None,
                               "own_cpu_share": None, "cpu_share_resolution": None, "judged": False}
    if machine is None:
        unknown.append(f"the CPU time{label} was not read")
        return summary
    summary["duration_s"] = machine["duration_s"]  # the wall clock is known even when no CPU tick fell in it
    if machine["machine_total_s"] <= 0:
        unknown.append(f"the CPU time{label} did not advance in a {machine['duration_s']:.3f} s run")
        return summary
    total = machine["machine_total_s"]
    own = sum(r["own_cpu_s"] for r in on_host)
    other = _clamp((machine["machine_busy_s"] - own) / total)
    error = cpu_share_resolution(total, summary["cores"], sum(r["own_processes"] for r in on_host))
    summary.update(other_cpu_share=other, own_cpu_share=_clamp(own / total),
                   cpu_share_resolution=error)
    used = f"other processes used {other:.0%} of the {summary['cores']} cores' time{label}"
    if other + error > BUSY_CPU_SHARE >= other - error:  # a short run: ticks could tip it either way
        unknown.append(f"{used}, give or take {error:.0%} in a {machine['duration_s']:.2f} s run: too close to "
                       f"{BUSY_CPU_SHARE:.0%} to judge")
        return summary
    summary["judged"] = True
    if other - error > BUSY_CPU_SHARE:
        busy.append(f"{used} (more than {BUSY_CPU_SHARE:.0%})")
    return summary


def _gpu(on_host: list[dict[str, Any]], gpu: str, label: str, busy: list[str], unknown: list[str]) -> dict[str, Any]:
    """The processes on one GPU that are none of the run's processes on its machine.

    In a container NVML gives the host's pids, which match none of the run's: then the run's own
    contexts are told apart by number (one per rank on this GPU) instead of by pid.
    """
    users = [r for r in on_host if r["gpu"] == gpu]
    reasons = [r["gpu_reason"] for r in users if r["gpu_reason"] is not None]
    if reasons:
        unknown.append(reasons[0])
        return {"gpu": gpu, "other_processes": None, "other_pids": None}
    seen = set().union(*(r["gpu_pids"] for r in users))
    ours = set().union(*(r["pids"] for r in on_host))
    if not seen:
        unknown.append(f"NVML lists no process on {gpu}{label}, not even this run's: it cannot see them here")
        return {"gpu": gpu, "other_processes": None, "other_pids": None}
    if seen & ours:
        others: list[int] | None = sorted(seen - ours)
        count = len(others)
    else:  # pids from another pid namespace
        others, count = None, max(0, len(seen) - len(users))
    if count:
        which = f" (pids {', '.join(map(str, others))})" if others else ""
        busy.append(f"{count} other process{'es' if count > 1 else ''} on {gpu}{label}{which}")
    return {"gpu": gpu, "other_processes": count, "other_pids": others}


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return (times.user + times.system + getattr(times, "children_user", 0.0)
            + getattr(times, "children_system", 0.0))


def _clamp(share: float) -> float:
    """Into [0, 1]: readings a tick apart can make a share a hair below 0 or above 1."""
    return min(1.0, max(0.0, share))
