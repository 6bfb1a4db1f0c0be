"""Telemetry samplers: NVML through a scripted stand-in (this machine has no GPU), psutil for real.

Samples are taken with `sample_once` so that every value is known; the thread is tested on its own
with a stand-in sampler that signals through Events, never with sleeps.
"""

from __future__ import annotations

import itertools
import json
import sys
import threading
import time
from types import SimpleNamespace
from typing import Any

import psutil
import pynvml
import pytest
import torch
from fake_nvml import FakeNvml, script

from convbench.errors import ConvbenchError
from convbench.telemetry import (
    DEFAULT_INTERVAL_S,
    MIN_INTERVAL_S,
    CpuSampler,
    NvmlSampler,
    Sampler,
    make_sampler,
)

LONG = 60.0  # an interval the sampling thread never reaches in a test: only sample_once samples


# ------------------------------------------------------------------------------ stand-ins
class StandIn(Sampler):
    """Counts reads, notes their threads, sets `enough` at the `signal_at`-th read, fails at `fail_at`."""

    kind = "stand-in"

    def __init__(self, interval: float, signal_at: int = 1, fail_at: int | None = None) -> None:
        super().__init__(interval)
        self.reads = 0
        self.signal_at, self.fail_at = signal_at, fail_at
        self.enough = threading.Event()
        self.primed_on: int | None = None
        self.read_on: set[int] = set()

    def _prime(self) -> None:
        self.primed_on = threading.get_ident()

    def _read(self) -> dict[str, float]:
        self.reads += 1
        self.read_on.add(threading.get_ident())
        if self.reads == self.fail_at:
            raise RuntimeError("sensor\nexploded")
        if self.reads >= self.signal_at:
            self.enough.set()
        return {"value": float(self.reads)}


def counting_clock():
    """0, 1, 2, ...: the sampler reads it at construction, start, every sample and stop."""
    return itertools.count().__next__


# ------------------------------------------------------------------------------ NVML
def test_nvml_summaries_are_the_scripted_values():
    fake = FakeNvml({
        0: script(name=b"GPU A", utilization=[(10, 5), (50, 7), (30, 6)], memory=[100, 300, 200],
                  power=[100_000, 150_000, 200_000], energy=[1_000_000, 1_250_500]),
        2: script(name="GPU B", utilization=[(90, 1)], memory=[7], power=[50_000], energy=[10, 20]),
    })
    sampler = NvmlSampler([0, 2], LONG, nvml=fake)
    with sampler:
        samples = [sampler.sample_once() for _ in range(3)]
    result = sampler.stop()

    assert samples[1]["gpu0_power_w"] == 150.0
    assert (result["sampler"], result["reason"], result["error"], result["samples"]) == ("nvml", None, None, 3)
    gpu0, gpu2 = result["devices"]
    assert gpu0 == {
        "index": 0, "name": "GPU A",
        "utilization_mean": 30, "utilization_max": 50,
        "memory_utilization_mean": 6, "memory_utilization_max": 7,
        "memory_used_mean_bytes": 200, "memory_used_max_bytes": 300,
        "power_mean_w": 150.0, "power_max_w": 200.0,   # milliwatts -> watts
        "energy_j": 250.5,                             # (1_250_500 - 1_000_000) mJ
    }
    assert (gpu2["index"], gpu2["name"], gpu2["utilization_mean"], gpu2["energy_j"]) == (2, "GPU B", 90, 0.01)
    assert result["timeline"]["gpu0_power_w"] == [100.0, 150.0, 200.0]
    assert result["timeline"]["gpu2_memory_used_bytes"] == [7, 7, 7]


def test_nvml_initialises_once_caches_handles_and_shuts_down_once():
    fake = FakeNvml({0: script(), 1: script()})
    sampler = NvmlSampler([0, 1], LONG, nvml=fake)
    with sampler:
        for _ in range(10):
            sampler.sample_once()
    first = sampler.stop()

    assert sampler.stop() is first  # idempotent
    assert (fake.calls["init"], fake.calls["shutdown"]) == (1, 1)
    assert (fake.calls["handle", 0], fake.calls["handle", 1]) == (1, 1)
    assert fake.calls["utilization", 0] == fake.calls["utilization", 1] == 10
    assert first["samples"] == 10


def test_not_supported_power_and_energy_are_none_and_not_asked_again():
    fake = FakeNvml({0: script(utilization=[(40, 2), (60, 4)], power=[pynvml.NVMLError_NotSupported()],
                               energy=[pynvml.NVMLError_NotSupported()])})
    sampler = NvmlSampler([0], LONG, nvml=fake)
    with sampler:
        for _ in range(4):
            sampler.sample_once()
    result = sampler.stop()

    device = result["devices"][0]
    assert (device["power_mean_w"], device["power_max_w"], device["energy_j"]) == (None, None, None)
    assert (device["utilization_mean"], device["utilization_max"]) == (55, 60)
    assert result["error"] is None
    assert result["timeline"]["gpu0_power_w"] == [None] * 4
    assert (fake.calls["power", 0], fake.calls["energy", 0]) == (1, 1)


def test_gpu_lost_mid_run_stops_sampling_and_keeps_earlier_samples():
    lost = pynvml.NVMLError_GpuIsLost()
    fake = FakeNvml({0: script(utilization=[(10, 1), (20, 2), lost], energy=[5_000, lost])})
    sampler = NvmlSampler([0], LONG, nvml=fake, clock=counting_clock())
    with sampler:
        taken = [sampler.sample_once() for _ in range(4)]
    result = sampler.stop()

    assert [sample is not None for sample in taken] == [True, True, False, False]
    assert fake.calls["utilization", 0] == 3  # nothing asked once the GPU was lost
    assert "NVMLError_GpuIsLost" in result["error"] and "\n" not in result["error"]
    assert result["samples"] == 2
    assert result["devices"][0]["utilization_mean"] == 15
    assert result["devices"][0]["energy_j"] is None  # the end counter could not be read
    assert result["timeline"]["t_s"] == [1, 2]
    assert fake.calls["shutdown"] == 1


def test_an_nvml_error_at_start_is_recorded_and_does_not_raise():
    fake = FakeNvml({0: script(energy=[pynvml.NVMLError_GpuIsLost()])})
    sampler = NvmlSampler([0], LONG, nvml=fake)

    sampler.start()  # training would go on
    assert not sampler.running
    assert sampler.sample_once() is None
    result = sampler.stop()
    assert "NVMLError_GpuIsLost" in result["error"]
    assert result["samples"] == 0 and fake.calls["shutdown"] == 1


# ------------------------------------------------------------------------------ make_sampler
@pytest.mark.parametrize("error", [pynvml.NVMLError_LibraryNotFound, pynvml.NVMLError_DriverNotLoaded])
def test_make_sampler_falls_back_to_psutil_when_nvml_does_not_start(monkeypatch, error):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    fake = FakeNvml(init_error=error())
    sampler = make_sampler("cuda:0", 0.1, nvml=fake)
    result = sampler.stop()

    assert isinstance(sampler, CpuSampler)
    assert result["sampler"] == "psutil" and result["interval_s"] == 0.1
    assert result["reason"].startswith("NVML is unavailable: " + error.__name__)
    assert fake.calls["shutdown"] == 0


def test_make_sampler_uses_nvml_for_cuda_when_it_starts(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    fake = FakeNvml({1: script()})
    monkeypatch.setitem(sys.modules, "pynvml", fake)  # what `import pynvml` gives

    sampler = make_sampler(torch.device("cuda", 1))
    result = sampler.stop()

    assert isinstance(sampler, NvmlSampler)
    assert (result["sampler"], result["reason"], result["interval_s"]) == ("nvml", None, DEFAULT_INTERVAL_S)
    assert fake.calls["handle", 1] == 1


def test_a_failure_after_nvml_init_shuts_nvml_down_and_falls_back(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    fake = FakeNvml({0: script(name=pynvml.NVMLError_GpuIsLost())})
    sampler = make_sampler("cuda:0", nvml=fake)
    assert sampler.kind == "psutil" and sampler.reason.startswith("NVML is unavailable: NVMLError_GpuIsLost")
    assert (fake.calls["init"], fake.calls["shutdown"]) == (1, 1)


def test_make_sampler_without_pynvml_gives_psutil_with_reason(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    sampler = make_sampler("cuda:0")
    assert sampler.kind == "psutil"
    assert sampler.reason.startswith("pynvml is not importable")


@pytest.mark.parametrize("device", ["cpu", torch.device("cpu"), "mps"])
def test_make_sampler_for_a_non_cuda_device_is_psutil(device):
    sampler = make_sampler(device)
    assert sampler.kind == "psutil"
    assert sampler.reason == f"device {str(device)!r} is not a CUDA device"


@pytest.mark.parametrize(("visible", "device", "nvml_index"), [("3,5", "cuda:1", 5), ("3,5", "cuda:0", 3)])
def test_cuda_visible_devices_maps_to_nvml_indices(monkeypatch, visible, device, nvml_index):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    fake = FakeNvml({nvml_index: script()})
    make_sampler(device, nvml=fake).stop()
    assert fake.calls["handle", nvml_index] == 1


@pytest.fixture
def cuda_uuids(monkeypatch):
    """Pretend CUDA is here and reports these UUIDs (CUDA index -> uuid, without NVML's 'GPU-')."""
    def report(uuids: dict[int, str]) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: SimpleNamespace(uuid=uuids[index]))

    return report


@pytest.mark.parametrize("visible", [None, "GPU-8a3f-77", "2,0"])
def test_the_gpu_is_found_by_its_uuid_whatever_the_numbering(monkeypatch, cuda_uuids, visible):
    # CUDA's cuda:1 is NVML's device 0 (CUDA puts the fastest GPU first unless told otherwise)
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    cuda_uuids({1: "8a3f-77"})
    fake = FakeNvml({0: script(utilization=[(64, 3)])}, uuids={"GPU-8a3f-77": 0})
    sampler = make_sampler("cuda:1", nvml=fake)
    sampler.start()
    sampler.sample_once()
    (device,) = sampler.stop()["devices"]
    assert (device["index"], device["utilization_mean"]) == (0, 64)
    assert not any(key[0] == "handle" for key in fake.calls)  # the index was never guessed


def test_a_uuid_nvml_does_not_know_falls_back_to_the_index(monkeypatch, cuda_uuids):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    cuda_uuids({1: "MIG-5c1e"})  # some MIG set-ups: NVML has no such device handle
    fake = FakeNvml({1: script()})
    sampler = make_sampler("cuda:1", nvml=fake)
    assert sampler.kind == "nvml" and sampler.stop()["devices"][0]["index"] == 1
    assert fake.calls["uuid", "MIG-5c1e"] == 1


def test_readings_a_driver_withholds_are_skipped_like_unsupported_ones():
    fake = FakeNvml({0: script(energy=[pynvml.NVMLError_NoPermission()],
                               power=[pynvml.NVMLError_FunctionNotFound()], utilization=[(70, 2)])})
    sampler = NvmlSampler([0], LONG, nvml=fake)
    sampler.start()
    sampler.sample_once()
    sampler.sample_once()
    result = sampler.stop()
    (device,) = result["devices"]
    assert result["error"] is None and result["samples"] == 2
    assert (device["utilization_mean"], device["power_mean_w"], device["energy_j"]) == (70, None, None)
    assert fake.calls["power", 0] == 1 and fake.calls["energy", 0] == 1  # asked once, then left alone


@pytest.mark.parametrize("visible", ["GPU-8a3f", "0", ""])
def test_unmappable_cuda_visible_devices_falls_back(monkeypatch, visible):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    fake = FakeNvml()
    sampler = make_sampler("cuda:1" if visible == "0" else "cuda:0", nvml=fake)
    assert sampler.kind == "psutil" and "CUDA_VISIBLE_DEVICES" in sampler.reason
    assert fake.calls["init"] == 0


# ------------------------------------------------------------------------------ timeline and JSON
def test_timeline_is_bounded_evenly_spaced_and_summaries_cover_every_sample():
    values = [(i * 37) % 101 for i in range(2000)]
    fake = FakeNvml({0: script(utilization=[(v, 0) for v in values])})
    sampler = NvmlSampler([0], LONG, nvml=fake, clock=counting_clock())
    for _ in values:
        sampler.sample_once()
    result = sampler.stop()

    timeline = result["timeline"]
    t = timeline["t_s"]
    assert 250 <= len(t) <= 500
    assert all(len(series) == len(t) for series in timeline.values())
    assert t[0] == 1 and len({b - a for a, b in itertools.pairwise(t)}) == 1  # increasing, evenly spaced
    assert timeline["gpu0_utilization"] == [values[int(s) - 1] for s in t]  # each point is its own sample
    assert result["samples"] == 2000
    assert result["devices"][0]["utilization_mean"] == pytest.approx(sum(values) / len(values))
    assert result["devices"][0]["utilization_max"] == max(values)


def test_downsampling_keeps_every_other_point():
    sampler = NvmlSampler([0], LONG, nvml=FakeNvml(), clock=counting_clock(), max_points=4)
    for _ in range(9):
        sampler.sample_once()
    assert sampler.stop()["timeline"]["t_s"] == [1, 5, 9]


def test_results_are_strict_json_even_with_a_nan_reading():
    fake = FakeNvml({0: script(power=[100_000, float("nan")])})
    sampler = NvmlSampler([0], LONG, nvml=fake)
    with sampler:
        sampler.sample_once()
        sampler.sample_once()
    nvml_result = sampler.stop()
    cpu = CpuSampler(LONG)
    with cpu:
        cpu.sample_once()

    for result in (nvml_result, cpu.stop()):
        assert json.loads(json.dumps(result, allow_nan=False)) == result
    assert nvml_result["devices"][0]["power_max_w"] == 100.0
    assert nvml_result["timeline"]["gpu0_power_w"] == [100.0, None]


# ------------------------------------------------------------------------------ the thread
def test_thread_samples_on_its_own_thread_and_stop_joins_it():
    sampler = StandIn(MIN_INTERVAL_S, signal_at=3)
    sampler.start()
    assert sampler.enough.wait(timeout=10)
    result = sampler.stop()

    assert not sampler.running
    reads = sampler.reads
    assert result["samples"] >= 3
    assert result["timeline"]["value"] == [float(i) for i in range(1, result["samples"] + 1)]
    assert sampler.read_on == {sampler.primed_on} and sampler.primed_on != threading.get_ident()
    assert sampler.stop() is result and sampler.reads == reads  # idempotent, nothing read after stop


def test_stop_returns_within_the_interval_not_after_it():
    sampler = StandIn(30.0)
    sampler.start()
    started = time.perf_counter()
    result = sampler.stop()

    assert time.perf_counter() - started < 5.0  # a sleeping thread would hold stop for 30 s
    assert not sampler.running
    assert (sampler.reads, result["samples"]) == (0, 0)


def test_an_error_while_sampling_ends_the_thread_and_is_recorded():
    sampler = StandIn(MIN_INTERVAL_S, fail_at=2)
    sampler.start()
    sampler._thread.join(timeout=10)  # ends by itself, before stop
    assert not sampler.running
    result = sampler.stop()

    assert sampler.reads == 2 and result["samples"] == 1
    assert result["error"].startswith("sampling stopped at ")
    assert result["error"].endswith("RuntimeError: sensor exploded")  # one line


def test_context_manager_stops_on_an_exception_and_a_sampler_runs_once():
    sampler = StandIn(LONG)
    with pytest.raises(ValueError, match="training failed"), sampler:
        raise ValueError("training failed")
    assert not sampler.running and sampler.result()["samples"] == 0
    with pytest.raises(ConvbenchError, match="runs once"):
        sampler.start()


@pytest.mark.parametrize("interval", [0, -1.0, float("nan"), float("inf")])
def test_interval_must_be_a_positive_number(interval):
    with pytest.raises(ConvbenchError, match="invalid telemetry interval"):
        CpuSampler(interval)


def test_interval_is_clamped_to_what_the_counters_can_resolve():
    assert CpuSampler(0.001).interval == MIN_INTERVAL_S
    assert CpuSampler().interval == DEFAULT_INTERVAL_S
    nvml = NvmlSampler([0], 0.05, nvml=FakeNvml())
    assert nvml.interval == pytest.approx(1 / 6)  # the fastest any board refreshes its utilisation
    assert nvml.stop()["interval_s"] == nvml.interval  # the result says what was used
    assert NvmlSampler([0], 0.5, nvml=FakeNvml()).stop()["interval_s"] == 0.5


# ------------------------------------------------------------------------------ psutil
def test_cpu_sampler_reads_real_cpu_percent_and_rss():
    sampler = CpuSampler(LONG, per_core=True)
    sample = sampler.sample_once()
    result = sampler.stop()

    assert 0 <= sample["cpu_percent"] <= 100
    assert sample["rss_bytes"] > 0
    cores = [value for key, value in sample.items() if key.startswith("cpu") and key != "cpu_percent"]
    assert cores and all(0 <= value <= 100 for value in cores)
    summary = result["devices"][0]
    assert summary["rss_max_bytes"] == sample["rss_bytes"] and summary["cores"] >= 1
    assert len(summary["per_core_percent_mean"]) == len(cores)


class FakeProcess:
    def __init__(self, rss: int | BaseException, children: tuple[FakeProcess, ...] = ()) -> None:
        self.rss, self._children = rss, children

    def memory_info(self) -> SimpleNamespace:
        if isinstance(self.rss, BaseException):
            raise self.rss
        return SimpleNamespace(rss=self.rss)

    def children(self, recursive: bool = False) -> list[FakeProcess]:
        assert recursive  # workers' own children count too
        return list(self._children)


def test_rss_counts_children_and_skips_ones_that_exited():
    process = FakeProcess(1000, (FakeProcess(200), FakeProcess(psutil.NoSuchProcess(12345)), FakeProcess(30)))
    sampler = CpuSampler(LONG, process=process)
    assert sampler.sample_once()["rss_bytes"] == 1230
    assert sampler.stop()["devices"][0]["rss_max_bytes"] == 1230


# ------------------------------------------------------------------- several ranks, several machines
def rank_telemetry(index: int, host: str, utilisation: list[int], error: Any = None) -> dict[str, Any]:
    """What one GPU rank's NVML sampler returns, read through the stand-in NVML."""
    scripts = {index: script(name="H100", utilization=[(u, 1) for u in utilisation])}
    scripts[index]["utilization"].append(error or scripts[index]["utilization"][-1])
    sampler = NvmlSampler([index], LONG, nvml=FakeNvml(scripts))
    sampler.start()
    for _ in range(len(utilisation) + (error is not None)):
        sampler.sample_once()
    telemetry = sampler.stop()
    return {**telemetry, "host": host}


def test_merged_ranks_list_every_gpu_with_its_rank_and_host():
    from convbench.report.figures.utilisation import utilisation_series
    from convbench.report.scaling import _device_utilisation
    from convbench.telemetry import merge_ranks

    gathered = [rank_telemetry(0, "node-a", [90, 100]), rank_telemetry(1, "node-a", [40, 60])]
    merged = merge_ranks(gathered)
    assert [(d["rank"], d["host"], d["index"], d["utilization_mean"]) for d in merged["devices"]] == [
        (0, "node-a", 0, 95.0), (1, "node-a", 1, 50.0)]
    assert merged["ranks"] == gathered and merged["error"] is None
    record = {"telemetry": json.loads(json.dumps(merged))}  # as the report reads it back
    assert _device_utilisation(record) == [("H100:0", 95.0), ("H100:1", 50.0)]
    assert {name: values for name, (_, values) in utilisation_series(record).items()} == {
        "gpu0": [90, 100], "gpu1": [40, 60]}  # every rank's timeline, not rank 0's alone


def test_merged_ranks_of_several_machines_name_the_host():
    from convbench.report.figures.utilisation import utilisation_series
    from convbench.report.scaling import _device_utilisation
    from convbench.telemetry import merge_ranks

    lost = pynvml.NVMLError_GpuIsLost()
    merged = merge_ranks([rank_telemetry(0, "node-a", [80]), None,
                          rank_telemetry(0, "node-b", [20], error=lost), None])  # two GPU per node, one sampled
    assert [(d["rank"], d["host"]) for d in merged["devices"]] == [(0, "node-a"), (2, "node-b")]
    assert merged["error"].startswith("rank 2: sampling stopped") and "GpuIsLost" in merged["error"]
    assert _device_utilisation({"telemetry": merged}) == [("node-a/H100:0", 80.0), ("node-b/H100:0", 20.0)]
    assert set(utilisation_series({"telemetry": merged})) == {"node-a/gpu0", "node-b/gpu0"}


def test_no_rank_sampled_gives_no_telemetry():
    from convbench.telemetry import merge_ranks

    assert merge_ranks([None, None]) is None


def test_results_name_the_host_they_were_sampled_on():
    import platform

    sampler = CpuSampler(LONG)
    sampler.start()
    assert sampler.stop()["host"] == platform.node()
