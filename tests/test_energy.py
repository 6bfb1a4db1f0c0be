"""Energy: RAPL through a stand-in sysfs folder, NVML through the stand-in module, and a real run's target.

Counters are read at moments the test chooses (`EnergyMeter.joules`); the polling thread is tested
with a counter that signals through an Event once it has been read enough, never with sleeps.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import psutil
import pynvml
import pytest
import torch
from fake_nvml import FakeNvml, script

import convbench.energy
from convbench import Case
from convbench.distributed import DistContext
from convbench.energy import (
    MAX_POLL_S,
    MIN_POLL_S,
    POWERCAP_ROOT_ENV,
    EnergyMeter,
    EnergyUnavailable,
    RaplCounter,
    combine,
    poll_interval_s,
)
from convbench.engine import RunSettings, run_in_this_process
from convbench.recording import RunRecorder
from convbench.result import Energy, ResultSchemaError, RunResult
from convbench.run_telemetry import RunTelemetry


def set_energy(zone: Path, microjoules: int) -> None:
    """Write a counter as the kernel shows it: a whole new value at once, never a half-written file."""
    staged = zone / "energy_uj.new"
    staged.write_text(f"{microjoules}\n")
    os.replace(staged, zone / "energy_uj")


def rapl_zone(root: Path, name: str, index: str, microjoules: int = 0, wraps_at: int = 1_000_000) -> Path:
    zone = root / f"intel-rapl:{index}"
    zone.mkdir(parents=True)
    (zone / "name").write_text(f"{name}\n")
    (zone / "max_energy_range_uj").write_text(f"{wraps_at}\n")
    set_energy(zone, microjoules)
    return zone


# ------------------------------------------------------------------------------ RAPL
def test_rapl_counts_every_package_once_across_a_wrap_around(tmp_path):
    package0 = rapl_zone(tmp_path, "package-0", "0", 900_000)
    package1 = rapl_zone(tmp_path, "package-1", "1", 100_000)
    rapl_zone(tmp_path, "core", "0:0", 500_000)  # a part of package 0: not counted again
    meter = EnergyMeter(RaplCounter.find(tmp_path), poll_s=0).start()

    set_energy(package0, 200_000)  # wrapped at 1 J: 0.1 J to the wrap, then 0.2 J
    set_energy(package1, 350_000)
    assert meter.joules() == pytest.approx(0.3 + 0.25)
    set_energy(package0, 250_000)
    assert meter.stop() == pytest.approx(0.55 + 0.05)
    assert meter.error is None and meter.counter.label == "RAPL package-0, package-1"


def test_psys_overlaps_the_packages_and_is_read_only_without_them(tmp_path):
    rapl_zone(tmp_path / "both", "package-0", "0")
    rapl_zone(tmp_path / "both", "psys", "1")
    rapl_zone(tmp_path / "alone", "psys", "0")
    assert RaplCounter.find(tmp_path / "both").label == "RAPL package-0"
    assert RaplCounter.find(tmp_path / "alone").label == "RAPL psys"


def test_the_powercap_root_comes_from_the_environment(tmp_path, monkeypatch):
    rapl_zone(tmp_path, "package-0", "0")
    monkeypatch.setenv(POWERCAP_ROOT_ENV, str(tmp_path))
    assert RaplCounter.find().zones == [tmp_path / "intel-rapl:0"]


def test_no_rapl_is_a_reason_not_zero(tmp_path):
    with pytest.raises(EnergyUnavailable, match=r"^no RAPL counters: .*missing cannot be listed"):
        RaplCounter.find(tmp_path / "missing")
    with pytest.raises(EnergyUnavailable, match=r"^no RAPL counters: .* has no intel-rapl:N zone$"):
        RaplCounter.find(tmp_path)


def test_root_only_rapl_files_are_found_out_before_the_run(tmp_path, monkeypatch):
    rapl_zone(tmp_path, "package-0", "0")
    read_text = Path.read_text

    def guarded(path: Path, *args, **kwargs) -> str:
        if path.name == "energy_uj":  # as since Linux 5.10 for anyone but root
            raise PermissionError(13, "Permission denied", str(path))
        return read_text(path, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", guarded)
    denied = r"^RAPL counters are not readable here: .*energy_uj: Permission denied$"
    with pytest.raises(EnergyUnavailable, match=denied):
        RaplCounter.find(tmp_path)


def test_a_counter_that_stops_answering_makes_the_energy_unknown(tmp_path):
    zone = rapl_zone(tmp_path, "package-0", "0", 10)
    meter = EnergyMeter(RaplCounter.find(tmp_path), poll_s=0).start()
    (zone / "energy_uj").write_text("garbage\n")
    assert meter.joules() is None and meter.stop() is None
    assert meter.error.startswith("RAPL package-0's energy counter: reading it failed: ValueError")


class ScriptedCounter:
    """A wrapping counter answering from a script; `enough` is set once it has been read `reads_wanted` times."""

    source, label, unit_j, wraps = "rapl", "scripted", 1e-6, (1_000_000,)

    def __init__(self, values: list[int], reads_wanted: int) -> None:
        self.values, self.reads, self.reads_wanted = values, 0, reads_wanted
        self.enough = threading.Event()

    def read(self) -> list[int]:
        value = self.values[min(self.reads, len(self.values) - 1)]
        self.reads += 1
        if self.reads >= self.reads_wanted:
            self.enough.set()
        return [value]


def test_polling_keeps_count_of_a_counter_that_wraps_twice_between_the_callers_readings():
    counter = ScriptedCounter([0, 900_000, 300_000, 800_000, 200_000], reads_wanted=5)
    meter = EnergyMeter(counter, poll_s=0.001).start()
    assert counter.enough.wait(timeout=30)
    # 0.9 + 0.4 (wrap) + 0.5 + 0.4 (wrap); two readings alone would say 0.2 J
    assert meter.stop() == pytest.approx(2.2)


def test_wrapping_counters_are_polled_before_they_could_wrap_and_others_are_not():
    big, small = ScriptedCounter([0], 1), ScriptedCounter([0], 1)
    big.wraps, small.wraps = (262_143_328_850,), (4_000_000_000,)  # 262 kJ and 4 kJ
    assert poll_interval_s(big) == MAX_POLL_S  # 262 s to wrap at 1 kW: a minute is plenty
    assert poll_interval_s(small) == 2.0 and MIN_POLL_S <= 2.0  # 4 s to wrap at 1 kW
    small.wraps = (None,)
    assert poll_interval_s(small) is None


# ------------------------------------------------------------------------------ NVML, through RunTelemetry
def test_gpu_energy_for_the_run_and_up_to_the_target(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    # millijoules: read once to see that the counter exists, then at the start, the target and the end
    fake = FakeNvml({0: script(energy=[999_999, 1_000_000, 1_004_000, 1_010_000, 1_999_999])})
    with RunTelemetry(torch.device("cuda", 0), DistContext(), None, nvml=fake) as telemetry:
        telemetry.mark_target()
        telemetry.mark_target()  # only the first time counts
    assert telemetry.energy == Energy(source="nvml", run_j=10.0, to_target_j=4.0, counters=[
        {"rank": 0, "host": telemetry.energy.counters[0]["host"], "counter": "GPU 0", "run_j": 10.0,
         "to_target_j": 4.0}])
    assert fake.calls["init"] == fake.calls["shutdown"] == 1


@pytest.mark.parametrize(("energy", "why"), [
    (pynvml.NVMLError_NotSupported(), "GPU 0 has no energy counter: not given by this board or driver "
                                      "(NVMLError_NotSupported)"),
    (pynvml.NVMLError_GpuIsLost(), "GPU 0's energy counter cannot be read: NVMLError_GpuIsLost: "),
])
def test_a_gpu_without_an_energy_counter_says_so(monkeypatch, energy, why):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    fake = FakeNvml({0: script(energy=[energy])})
    with RunTelemetry(torch.device("cuda", 0), DistContext(), None, nvml=fake) as telemetry:
        telemetry.mark_target()
    assert (telemetry.energy.source, telemetry.energy.run_j, telemetry.energy.to_target_j) == (None, None, None)
    assert telemetry.energy.reason.startswith("no energy counter readable: " + why)


def test_a_gpu_run_without_nvml_is_never_measured_with_rapl(monkeypatch, tmp_path):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    rapl_zone(tmp_path, "package-0", "0")
    fake = FakeNvml(init_error=pynvml.NVMLError_DriverNotLoaded())
    with RunTelemetry(torch.device("cuda", 0), DistContext(), None, nvml=fake, powercap_root=tmp_path) as telemetry:
        pass
    assert telemetry.energy.source is None
    assert telemetry.energy.reason.startswith("no energy counter readable: no GPU energy counter: NVML is unavailable")
    assert telemetry.machine_load.hosts[0]["gpus"] == [{"gpu": "cuda:0", "other_processes": None, "other_pids": None}]
    assert "the processes on cuda:0 were not checked: NVML is unavailable" in telemetry.machine_load.reason


def test_a_reading_that_fails_mid_run_leaves_the_run_energy_unknown(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    fake = FakeNvml({0: script(energy=[5_000, 6_000, pynvml.NVMLError_GpuIsLost()])})  # probe, start, end
    with RunTelemetry(torch.device("cuda", 0), DistContext(), None, nvml=fake) as telemetry:
        pass
    assert (telemetry.energy.source, telemetry.energy.run_j) == ("nvml", None)
    assert telemetry.energy.reason.startswith("GPU 0's energy counter: reading it failed: NVMLError_GpuIsLost")


def test_a_time_limit_while_stopping_still_stops_the_energy_meter(monkeypatch, tmp_path):
    import convbench.telemetry
    from convbench.errors import CaseTimeoutError

    class TimedOut:
        def start(self):
            return self

        def stop(self):
            raise CaseTimeoutError("case ran past its 1 s limit")

    monkeypatch.setattr(convbench.telemetry, "make_sampler", lambda device, interval: TimedOut())
    rapl_zone(tmp_path, "package-0", "0")  # wraps at 1 J: polled on a thread
    with pytest.raises(CaseTimeoutError), RunTelemetry(torch.device("cpu"), DistContext(), 0.2,
                                                       powercap_root=tmp_path) as telemetry:
        assert telemetry._meter._thread.is_alive()
    assert not telemetry._meter._thread.is_alive()


def test_a_failure_while_starting_leaves_no_sampler_running(monkeypatch):
    import convbench.machine_load
    import convbench.telemetry

    stopped = []

    class Sampler:
        def start(self):
            return self

        def stop(self):
            stopped.append(True)

    def broken(self):
        raise psutil.AccessDenied(1)

    monkeypatch.setattr(convbench.telemetry, "make_sampler", lambda device, interval: Sampler())
    monkeypatch.setattr(convbench.machine_load.LoadMeter, "start", broken)
    with pytest.raises(psutil.AccessDenied), RunTelemetry(torch.device("cpu"), DistContext(), 0.2):
        pass
    assert stopped == [True]


# ------------------------------------------------------------------------------ several ranks
def reading(rank: int, run_j: float | None, to_target_j: float | None = None, source: str | None = "nvml",
            host: str = "node-a", reason: str | None = None) -> dict:
    return {"rank": rank, "host": host, "source": source, "counter": f"GPU {rank}", "run_j": run_j,
            "to_target_j": to_target_j, "reason": reason}


def test_the_ranks_gpus_are_summed():
    energy = combine([reading(0, 10.0, 4.0), reading(1, 12.0, 5.0)])
    assert (energy.source, energy.run_j, energy.to_target_j, energy.reason) == ("nvml", 22.0, 9.0, None)
    assert [counter["counter"] for counter in energy.counters] == ["GPU 0", "GPU 1"]


def test_rapl_is_read_once_per_machine():
    energy = combine([reading(0, 50.0, source="rapl"), None, reading(2, 70.0, source="rapl", host="node-b"), None])
    assert (energy.source, energy.run_j, energy.to_target_j) == ("rapl", 120.0, None)


def test_one_unreadable_rank_makes_the_total_unknown_not_partial():
    failed = reading(1, None, reason="GPU 1's energy counter: reading it failed: NVMLError_GpuIsLost")
    energy = combine([reading(0, 10.0, 4.0), failed])
    assert (energy.source, energy.run_j, energy.to_target_j) == ("nvml", None, None)
    assert energy.reason == "rank 1: GPU 1's energy counter: reading it failed: NVMLError_GpuIsLost"
    missing = combine([reading(0, None, source=None, reason="no GPU energy counter: x"), reading(1, 3.0)])
    assert missing == Energy(source=None, reason="no energy counter readable: rank 0: no GPU energy counter: x")


# ------------------------------------------------------------------------------ a real run, and JSON
TARGETED = Case(model="softmax", dataset="blobs", optimizer="sgd", lr=0.1, batch_size=20, epochs=3,
                eval_every=2, target_accuracy=0.9)


def test_energy_to_target_is_read_at_the_evaluation_that_first_reached_it(registry, tmp_path, monkeypatch):
    zone = rapl_zone(tmp_path, "package-0", "0", 0, wraps_at=10**15)
    monkeypatch.setenv(POWERCAP_ROOT_ENV, str(tmp_path))
    add_eval = RunRecorder.add_eval

    def joule_per_evaluation(self, step, lr, metrics):  # the k-th evaluation brings the counter to k J
        set_energy(zone, (len(self.evals["step"]) + 1) * 1_000_000)
        return add_eval(self, step, lr, metrics)

    monkeypatch.setattr(RunRecorder, "add_eval", joule_per_evaluation)
    result = run_in_this_process(TARGETED, RunSettings(registry=registry, telemetry_interval_s=None))

    evaluation_steps = result.curves["eval"]["step"]
    assert result.target.reached and 0 < result.target.step < evaluation_steps[-1]
    assert result.energy.source == "rapl" and result.energy.reason is None
    assert result.energy.to_target_j == pytest.approx(evaluation_steps.index(result.target.step) + 1)
    assert result.energy.run_j == pytest.approx(len(evaluation_steps))
    assert RunResult.from_dict(result.to_dict()).energy == result.energy


def test_a_run_without_an_energy_counter_says_so(registry, tmp_path, monkeypatch):
    monkeypatch.setenv(POWERCAP_ROOT_ENV, str(tmp_path))
    result = run_in_this_process(TARGETED, RunSettings(registry=registry, telemetry_interval_s=None))
    assert result.energy.source is None and result.energy.run_j is None and result.energy.to_target_j is None
    assert result.energy.reason.startswith("no energy counter readable: no RAPL counters:")
    assert result.to_dict()["energy"]["run_j"] is None


def test_older_results_without_energy_or_load_read_as_none_and_bad_fields_are_named(registry, tmp_path, monkeypatch):
    monkeypatch.setattr(convbench.energy, "POWERCAP_ROOT", tmp_path)
    data = run_in_this_process(TARGETED, RunSettings(registry=registry, telemetry_interval_s=None)).to_dict()
    older = {key: value for key, value in data.items() if key not in ("energy", "machine_load")}
    back = RunResult.from_dict(older)
    assert (back.energy, back.machine_load) == (None, None)
    with pytest.raises(ResultSchemaError, match=r"field 'energy\.run_j': expected a number or null"):
        RunResult.from_dict({**data, "energy": {**data["energy"], "run_j": "12 J"}})
    with pytest.raises(ResultSchemaError, match=r"field 'energy\.counters\[0\]': expected an object"):
        Energy.from_dict({"source": "nvml", "counters": [3]})
