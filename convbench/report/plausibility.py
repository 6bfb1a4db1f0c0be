"""Can a scaling row's numbers be taken at face value? Flags, each with the reason, for those that cannot.

On a machine shared with other work, scaling numbers can come out impossible: a 3.7x speedup on
2 cores, a negative overhead, more "ideal compute" than the time measured. They are not bugs in the
arithmetic; they say that the world-size-1 baseline was slowed by something that is not the case's
work. The likely causes, in the order these checks name them:

* a busy machine: other processes took cores (or a GPU) during the run (`RunResult.machine_load`);
  a multi-threaded baseline suffers most, as each of its threads waits for the slowest;
* oversubscription: the run's ranks (and their threads) outnumber the cores they share, so they
  take turns instead of working in parallel;
* a cold start: the run was the first to train in its process, and its time holds one-time costs
  (kernels loaded on first use, the allocator growing, thread pools starting): ``timing.first_in_process``.

A speedup above the world size is the same finding as a measured time below the ideal one (a
negative overhead): both say ``train_s < baseline / N``; it is one flag, ``superlinear``. A speedup
is only as good as both of its times, so a row also carries its baseline's flags.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from convbench.report.identity import Record

#: A speedup more than this fraction above the world size is flagged; less is within timing noise.
SUPERLINEAR_TOLERANCE = 0.02

SUPERLINEAR, OVERSUBSCRIBED, BUSY = "superlinear", "oversubscribed", "busy machine"


@dataclass(frozen=True)
class Flag:
    """Why a row's speedup cannot be trusted: a short ``name`` for tables and figures, and the ``reason``."""

    name: str
    reason: str

    def __str__(self) -> str:
        return f"{self.name}: {self.reason}"


def _host_entries(record: Record) -> list[dict[str, Any]]:
    load = record.get("machine_load")
    hosts = load.get("hosts") if isinstance(load, dict) else None
    return [host for host in hosts or [] if isinstance(host, dict)]


def _whole(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def busy(record: Record) -> str | None:
    """Why the run's machine was busy (its recorded reason), or None when it was not or nobody could tell."""
    load = record.get("machine_load")
    if not isinstance(load, dict) or load.get("busy") is not True:
        return None
    return str(load.get("reason") or "other work shared the machine during the run")


def oversubscribed(record: Record) -> str | None:
    """On CPUs, how the run's ranks (and threads) outnumbered the cores they shared; None if they did not.

    The cores are what the run recorded (its machine load, else its CPU telemetry), never this
    machine's: a report is often made elsewhere. Where the threads were not recorded, each rank
    counts as one.
    """
    if not str(record.get("device", "")).startswith("cpu"):
        return None
    hosts = _host_entries(record)
    if not hosts:  # older results: the CPU telemetry has the cores
        devices = (record.get("telemetry") or {}).get("devices") or []
        hosts = [{"cores": d.get("cores")} for d in devices if isinstance(d, dict) and d.get("name") == "cpu"][:1]
    several = len(hosts) > 1
    for host in hosts:
        cores = _whole(host.get("cores"))
        if cores is None:
            continue
        ranks = _whole(host.get("ranks")) or math.ceil(record["world_size"] / len(hosts))
        threads = _whole(host.get("threads"))
        if max(ranks, threads or 0) > cores:
            what = f"{ranks} rank{'s' if ranks > 1 else ''}" + (f" ({threads} threads)" if threads else "")
            where = f" on {host.get('host')}" if several else ""
            return f"{what} share{'' if ranks > 1 else 's'} {cores} core{'s' if cores > 1 else ''}{where}"
    return None


def cold(record: Record) -> bool:
    """Whether the run was the first to train in its process (None, unrecorded, counts as not)."""
    return (record.get("timing") or {}).get("first_in_process") is True


def run_flags(record: Record) -> list[Flag]:
    """What is wrong with one run's time on its own: a busy machine, oversubscribed cores."""
    found = [(BUSY, busy(record)), (OVERSUBSCRIBED, oversubscribed(record))]
    return [Flag(name, reason) for name, reason in found if reason is not None]


def _threads(record: Record) -> int | None:
    """The run's threads on its busiest host, where every host recorded them."""
    threads = [_whole(host.get("threads")) for host in _host_entries(record)]
    known = [t for t in threads if t is not None]
    return max(known) if known and len(known) == len(threads) else None


def slow_baseline_causes(baseline: Record) -> list[str]:
    """What likely slowed the world-size-1 run, most telling first; a general answer if nothing was recorded."""
    causes = []
    if cold(baseline):
        causes.append("it was the first run to train in its process (cold start: one-time costs in its time)")
    threads = _threads(baseline)
    waits = ""
    if threads is not None and threads > 1:
        waits = f"; its {threads} threads each wait for the slowest, so other work slows it most"
    load = baseline.get("machine_load")
    if (reason := busy(baseline)) is not None:
        causes.append(f"the machine was busy during it ({reason}){waits}")
    elif isinstance(load, dict) and load.get("busy") is None and load.get("reason"):
        causes.append(f"the machine's load during it could not be judged ({load['reason']}){waits}")
    if (reason := oversubscribed(baseline)) is not None:
        causes.append(f"its threads outnumbered the cores ({reason})")
    if not causes:
        causes.append("a busy machine or a cold start are the usual causes; on GPUs, a per-device share "
                      "that now fits in cache can be truly faster")
    return causes


def superlinear(speedup: float | None, world_size: int, train_s: float, ideal_s: float,
                baseline: Record) -> Flag | None:
    """A flag when ``speedup`` is more than the world size allows (beyond `SUPERLINEAR_TOLERANCE`); a NaN
    speedup (a time recorded as NaN) says nothing either way."""
    if speedup is None or world_size == 1 or not speedup > world_size * (1 + SUPERLINEAR_TOLERANCE):
        return None
    return Flag(SUPERLINEAR, (
        f"speedup {speedup:.2f} on {world_size} ranks is more than {world_size}: the measured "
        f"{train_s:.3g} s is faster than the ideal {ideal_s:.3g} s (overhead {train_s - ideal_s:+.3g} s); "
        f"the world-size-1 run was likely slowed: {'; '.join(slow_baseline_causes(baseline))}"))


def merge(flags: Iterable[Flag]) -> list[Flag]:
    """One flag per name, its reasons joined, in first-seen order."""
    reasons: dict[str, list[str]] = {}
    for flag in flags:
        reasons.setdefault(flag.name, []).append(flag.reason)
    return [Flag(name, "; ".join(dict.fromkeys(texts))) for name, texts in reasons.items()]


def row_flags(record: Record, baseline: Record, speedup: float | None, train_s: float, ideal_s: float) -> list[Flag]:
    """Everything that makes the row's speedup untrustworthy: its own run's flags, its baseline's, and a
    speedup above the world size."""
    own = run_flags(record)
    inherited = [] if record is baseline else [
        Flag(flag.name, f"the world-size-1 run it is measured against: {flag.reason}") for flag in run_flags(baseline)]
    jump = superlinear(speedup, record["world_size"], train_s, ideal_s, baseline)
    return merge([*([jump] if jump else []), *own, *inherited])


def throughput_flags(speedup: float | None, world_size: int) -> list[Flag]:
    """Throughput rounds come after warm-up rounds: a speedup above the world size points at a busy machine."""
    if speedup is None or world_size == 1 or not speedup > world_size * (1 + SUPERLINEAR_TOLERANCE):
        return []
    return [Flag(SUPERLINEAR, f"throughput {speedup:.2f} times world size 1's on {world_size} ranks: the "
                              "world-size-1 rounds were likely slowed (a busy machine)")]
