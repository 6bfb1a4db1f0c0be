"""Energy a run used, read from hardware counters: NVML's on GPUs, Linux RAPL's on CPUs.

A counter is read at the start of the run, when the target is first reached and at the end, so the
energy covers the run exactly, not sampled instants. Where no counter can be read (no RAPL, its
files readable only by root, a GPU older than Volta) the energy is None with a one-line reason:
never 0, which would read as a measurement.

RAPL counters wrap around at ``max_energy_range_uj``; a difference of two readings is right across
one wrap. So that a long run cannot wrap twice between readings, a meter on a wrapping counter also
reads it on a background thread, often enough that even an implausibly power-hungry package could
not go round once in between (`poll_interval_s`).

The sysfs root is ``/sys/class/powercap``, or ``$CONVBENCH_POWERCAP_ROOT`` (tests point it at a
stand-in folder).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from convbench.errors import ConvbenchError
from convbench.result import Energy
from convbench.telemetry import one_line

POWERCAP_ROOT = Path("/sys/class/powercap")
POWERCAP_ROOT_ENV = "CONVBENCH_POWERCAP_ROOT"
#: More than any CPU package draws: wrapping counters are polled so that even this could not wrap them twice.
MAX_PACKAGE_POWER_W = 1000.0
#: Polls of a wrapping counter are at least this far apart, and at most `MAX_POLL_S`.
MIN_POLL_S, MAX_POLL_S = 1.0, 60.0
#: A top-level RAPL zone: ``intel-rapl:0`` (its sub-zones, ``intel-rapl:0:1``, are parts of it).
_TOP_ZONE = re.compile(r"^intel-rapl:\d+$")


class EnergyUnavailable(ConvbenchError):
    """No energy counter can be read here; the message says why, in one line."""


class Counter(Protocol):
    """Cumulative energy counters read together (one per zone or device)."""

    source: str  # "nvml" or "rapl": what the result names
    label: str  # what was read, e.g. "GPU 0" or "RAPL package-0, package-1"
    unit_j: float  # joules per count
    #: Per zone, the value at which it wraps to 0; None: it does not wrap (it went backwards: a reset).
    wraps: Sequence[int | None]

    def read(self) -> list[int]: ...


class NvmlCounter:
    """NVML's total energy of one GPU, in millijoules since the driver loaded (64 bits: no wrap)."""

    source = "nvml"
    unit_j = 1e-3
    wraps = (None,)

    def __init__(self, device: Any) -> None:
        self.device = device  # a convbench.telemetry.NvmlDevice
        self.label = device.label
        try:
            self.read()  # boards before Volta, and vGPUs, have no counter: find out now, not mid-run
        except EnergyUnavailable as exc:
            raise EnergyUnavailable(f"{self.label} has no energy counter: {exc}") from exc
        except Exception as exc:
            raise EnergyUnavailable(f"{self.label}'s energy counter cannot be read: {one_line(exc)}") from exc

    def read(self) -> list[int]:
        try:
            return [self.device.total_energy_mj()]
        except self.device.absent_errors as exc:
            raise EnergyUnavailable(f"not given by this board or driver ({type(exc).__name__})") from exc


class RaplCounter:
    """The CPU packages' RAPL counters of this machine (``intel-rapl:N/energy_uj``, microjoules).

    Only top-level zones count: sub-zones are parts of their package. A ``psys`` zone (the whole
    platform, on some laptops) overlaps the packages, so it is read only where there is no package.
    """

    source = "rapl"
    unit_j = 1e-6

    def __init__(self, zones: Sequence[Path]) -> None:
        self.zones = list(zones)
        self.wraps = [int(_read_text(zone / "max_energy_range_uj")) for zone in self.zones]
        names = [_zone_name(zone) for zone in self.zones]
        self.label = "RAPL " + ", ".join(names)
        self.read()  # energy_uj is often root-only (since Linux 5.10): find out now, not mid-run

    @classmethod
    def find(cls, root: Path | str | None = None) -> RaplCounter:
        """This machine's packages; `EnergyUnavailable` saying why there are none to read."""
        root = Path(root or os.environ.get(POWERCAP_ROOT_ENV) or POWERCAP_ROOT)
        try:
            zones = sorted((path for path in root.iterdir() if _TOP_ZONE.match(path.name)),
                           key=lambda path: int(path.name.rpartition(":")[2]))
        except OSError as exc:
            raise EnergyUnavailable(f"no RAPL counters: {root} cannot be listed ({_os_error(exc)})") from exc
        if not zones:
            raise EnergyUnavailable(f"no RAPL counters: {root} has no intel-rapl:N zone")
        packages = [zone for zone in zones if _zone_name(zone) != "psys"]
        try:
            return cls(packages or zones)
        except OSError as exc:
            raise EnergyUnavailable(f"RAPL counters are not readable here: {_os_error(exc)}") from exc
        except ValueError as exc:
            raise EnergyUnavailable(f"RAPL counters read as no number: {exc}") from exc

    def read(self) -> list[int]:
        return [int(_read_text(zone / "energy_uj")) for zone in self.zones]


class EnergyMeter:
    """Joules a counter counted since `start`, read at the moments the caller chooses.

    Every reading adds the difference to the previous one, zone by zone, modulo the zone's wrap;
    a counter without a wrap that goes backwards was reset, and the energy is unknown from then on.
    A reading that fails makes the energy unknown too, with `error` saying why. `poll_s` (default:
    `poll_interval_s` for wrapping counters, none otherwise) reads on a thread between the caller's.
    """

    def __init__(self, counter: Counter, *, poll_s: float | None = None) -> None:
        self.counter = counter
        self.poll_s = poll_s if poll_s is not None else poll_interval_s(counter)
        self.error: str | None = None
        self._last: list[int] | None = None
        self._counts = 0
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> EnergyMeter:
        with self._lock:
            self._last = self._read()
        if self.poll_s and self._last is not None:
            self._thread = threading.Thread(target=self._poll, name="convbench-energy", daemon=True)
            self._thread.start()
        return self

    def joules(self) -> float | None:
        """Joules since `start`, reading the counter now; None once a reading failed."""
        with self._lock:
            self._advance()
            return None if self._last is None else self._counts * self.counter.unit_j

    def stop(self) -> float | None:
        """End polling and give the joules of the whole run."""
        self._halt.set()
        if self._thread is not None:
            self._thread.join()
        return self.joules()

    def _poll(self) -> None:
        assert self.poll_s is not None
        while not self._halt.wait(self.poll_s):
            with self._lock:
                self._advance()
            if self._last is None:
                return

    def _advance(self) -> None:
        if self._last is None:
            return
        now = self._read()
        if now is None:
            self._last = None
            return
        for before, after, wrap in zip(self._last, now, self.counter.wraps, strict=True):
            if after >= before:
                self._counts += after - before
            elif wrap is not None:
                self._counts += after + wrap - before
            else:
                self.error = f"{self.counter.label}: the energy counter went backwards (a driver reset?)"
                self._last = None
                return
        self._last = now

    def _read(self) -> list[int] | None:
        try:
            return self.counter.read()
        except Exception as exc:  # a counter that stops answering costs the energy, never the run
            if self.error is None:
                why = str(exc) if isinstance(exc, EnergyUnavailable) else f"reading it failed: {one_line(exc)}"
                self.error = f"{self.counter.label}'s energy counter: {why}"
            return None


def poll_interval_s(counter: Counter) -> float | None:
    """How often to read a wrapping counter so that it cannot wrap twice in between; None: no wrap."""
    wraps = [wrap for wrap in counter.wraps if wrap is not None]
    if not wraps:
        return None
    seconds_to_wrap = min(wraps) * counter.unit_j / MAX_PACKAGE_POWER_W
    return max(MIN_POLL_S, min(MAX_POLL_S, seconds_to_wrap / 2))


def find_counter(device: Any, *, nvml_device: Any | None = None, nvml_reason: str | None = None,
                 powercap_root: Path | str | None = None) -> Counter:
    """The counter that measures a run on `device`: its GPU's (given opened as `nvml_device`, or None
    with `nvml_reason`) or this machine's RAPL packages; `EnergyUnavailable` says why there is none.

    A GPU run is never measured with RAPL: the CPU packages are not where its energy goes.
    """
    if getattr(device, "type", str(device).partition(":")[0]) == "cuda":
        if nvml_device is None:
            raise EnergyUnavailable(f"no GPU energy counter: {nvml_reason or 'NVML is not open'}")
        return NvmlCounter(nvml_device)
    return RaplCounter.find(powercap_root)


# ------------------------------------------------------------------------------------ helpers
def _read_text(path: Path) -> str:
    return path.read_text(encoding="ascii").strip()


def _zone_name(zone: Path) -> str:
    try:
        return _read_text(zone / "name")
    except OSError:
        return zone.name


def _os_error(exc: OSError) -> str:
    return f"{exc.filename}: {exc.strerror}" if exc.filename and exc.strerror else one_line(exc)



def combine(readings: Sequence[dict[str, Any] | None]) -> Energy:
    """The run's `Energy` from every rank's reading (None where a rank reads no counter: on CPUs, all
    but the first of each machine). Totals are None, never partial, unless every counter was read.

    A reading is ``{"rank", "host", "source", "counter", "run_j", "to_target_j", "reason"}``.
    """
    present = [reading for reading in readings if reading is not None]
    several = len(readings) > 1
    reasons = [f"rank {r['rank']}: {r['reason']}" if several else r["reason"] for r in present if r["reason"]]
    sources = {r["source"] for r in present}
    if not present or None in sources:
        return Energy(source=None, reason="no energy counter readable: " + ("; ".join(reasons) or "none was read"))
    counters = [{key: r[key] for key in ("rank", "host", "counter", "run_j", "to_target_j")} for r in present]
    return Energy(source=" + ".join(sorted(sources)), run_j=_sum(r["run_j"] for r in present),
                  to_target_j=_sum(r["to_target_j"] for r in present), reason="; ".join(reasons) or None,
                  counters=counters)


def _sum(values: Iterable[float | None]) -> float | None:
    values = list(values)
    return None if any(value is None for value in values) else sum(values)  # type: ignore[arg-type]
