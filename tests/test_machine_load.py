"""Machine load: scripted psutil readings and a stand-in NVML decide `busy`; a real run records it."""

from __future__ import annotations

import json
from collections import namedtuple
from types import SimpleNamespace

import psutil
import pynvml
import pytest
from fake_nvml import FakeNvml, script

from convbench import Case
from convbench.engine import RunSettings, run_in_this_process
from convbench.machine_load import (
    BUSY_CPU_SHARE,
    LoadMeter,
    combine,
    cpu_share_resolution,
    machine_cpu_seconds,
)
from convbench.result import MachineLoad, ResultSchemaError, RunResult
from convbench.telemetry import NvmlDevice

#: psutil's Linux fields; guest time is also inside user time, as the kernel counts it.
CpuTimes = namedtuple("CpuTimes", "user nice system idle iowait irq softirq steal guest guest_nice")


def cpu_times(busy: float, idle: float, guest: float = 0.0) -> CpuTimes:
    """A machine-wide reading with `busy` core-seconds of user time (guest included) and `idle` idle."""
    return CpuTimes(user=busy, nice=0.0, system=0.0, idle=idle, iowait=0.0, irq=0.0, softirq=0.0, steal=0.0,
                    guest=guest, guest_nice=0.0)


class FakeProcess:
    """A process whose CPU seconds are scripted per reading; its children likewise."""

    def __init__(self, pid: int, seconds: list[float | BaseException], children: tuple[FakeProcess, ...] = (),
                 parents: tuple[int, ...] = ()):
        self.pid, self._seconds, self._children, self._reads = pid, seconds, children, 0
        self._parents = [SimpleNamespace(pid=parent) for parent in parents]

    def parents(self) -> list[SimpleNamespace]:
        return self._parents

    def cpu_times(self) -> SimpleNamespace:
        value = self._seconds[min(self._reads, len(self._seconds) - 1)]
        self._reads += 1
        if isinstance(value, BaseException):
            raise value
        return SimpleNamespace(user=value, system=0.0, children_user=0.0, children_system=0.0)

    def children(self, recursive: bool = False) -> list[FakeProcess]:
        assert recursive  # a worker's own children are the run's too
        return list(self._children)


def measure(monkeypatch, machine: list[CpuTimes], process: FakeProcess, seconds: float = 10.0, cores: int = 4,
            **meter) -> dict:
    """One rank's reading over `seconds` with psutil's machine-wide readings scripted."""
    readings = iter(machine)
    monkeypatch.setattr(psutil, "cpu_times", lambda: next(readings))
    monkeypatch.setattr(psutil, "cpu_count", lambda: cores)
    clock = iter([100.0, 100.0 + seconds])
    meter.setdefault("whole_machine", True)
    return LoadMeter(process=process, clock=lambda: next(clock), **meter).start().stop()


# ------------------------------------------------------------------------------ the CPU
def test_cpu_time_taken_by_other_processes_makes_a_run_busy(monkeypatch):
    # 10 s on 4 cores: 40 core-seconds. The machine was busy 20 of them, the run 8: others took 12, 30 %.
    reading = measure(monkeypatch, [cpu_times(busy=100, idle=900), cpu_times(busy=120, idle=920)],
                      FakeProcess(1, [5.0, 13.0]))
    load = combine([reading])

    assert load.other_cpu_share == pytest.approx(0.3) and load.own_cpu_share == pytest.approx(0.2)
    assert load.busy is True
    assert load.reason == f"other processes used 30% of the 4 cores' time (more than {BUSY_CPU_SHARE:.0%})"
    assert load.duration_s == 10.0 and load.other_gpu_processes is None
    assert load.hosts[0]["cores"] == 4


def test_a_machine_the_run_has_to_itself_is_not_busy(monkeypatch):
    # guest time is inside user time: counted twice it would add 10 core-seconds of "others"
    reading = measure(monkeypatch, [cpu_times(busy=100, idle=900), cpu_times(busy=120, idle=920, guest=10)],
                      FakeProcess(1, [5.0, 24.0]))
    load = combine([reading])
    assert load.other_cpu_share == pytest.approx(1 / 40)
    assert (load.busy, load.reason) == (False, None)


def test_machine_cpu_seconds_leaves_idle_iowait_and_guest_out_of_busy(monkeypatch):
    times = CpuTimes(user=50, nice=1, system=9, idle=30, iowait=4, irq=1, softirq=1, steal=4, guest=7, guest_nice=0)
    monkeypatch.setattr(psutil, "cpu_times", lambda: times)
    busy, total = machine_cpu_seconds()
    assert (busy, total) == (66, 100)  # 107 - guest 7 in all; idle and I/O wait are not busy; steal is


def test_the_runs_children_are_its_own_and_one_that_ended_is_skipped(monkeypatch):
    ended = FakeProcess(3, [psutil.NoSuchProcess(3)])
    worker = FakeProcess(2, [1.0, 9.0])
    reading = measure(monkeypatch, [cpu_times(busy=0, idle=40), cpu_times(busy=10, idle=70)],
                      FakeProcess(1, [0.0, 2.0], children=(worker, ended)))
    assert reading["own_cpu_s"] == 10.0 and reading["pids"] == [1, 2]
    assert combine([reading]).busy is False  # the worker's 8 s are the run's, not others'


def test_a_short_run_near_the_threshold_is_not_judged_and_a_clearly_busy_one_is(monkeypatch):
    # 0.1 s on 4 cores: 0.4 core-seconds, against ticks of 10 ms on each core and the process
    near = measure(monkeypatch, [cpu_times(busy=0, idle=0), cpu_times(busy=0.16, idle=0.24)],
                   FakeProcess(1, [0.0, 0.12]), seconds=0.1)
    load = combine([near])
    assert load.busy is None and load.other_cpu_share == pytest.approx(0.1)
    assert load.hosts[0]["cpu_share_resolution"] == pytest.approx(cpu_share_resolution(0.4, 4, 1))
    assert "give or take 30% in a 0.10 s run: too close to 10% to judge" in load.reason
    clear = measure(monkeypatch, [cpu_times(busy=0, idle=0), cpu_times(busy=0.5, idle=0)],
                    FakeProcess(1, [0.0, 0.1]), seconds=0.25, cores=2)
    assert combine([clear]).busy is True  # 80 % give or take 16 %


def test_ranks_of_a_pool_each_count_their_own_process_and_the_first_reads_the_machine(monkeypatch):
    first = measure(monkeypatch, [cpu_times(busy=0, idle=100), cpu_times(busy=30, idle=110)],
                    FakeProcess(10, [0.0, 14.0]))
    second = measure(monkeypatch, [], FakeProcess(11, [0.0, 14.0]), whole_machine=False)
    assert second["machine_busy_s"] is None
    load = combine([first, second])
    assert load.other_cpu_share == pytest.approx(0.05) and load.busy is False  # 30 - 14 - 14 of 40
    assert load.own_cpu_share == pytest.approx(0.7)


def test_several_machines_are_judged_each_and_named(monkeypatch):
    quiet = measure(monkeypatch, [cpu_times(busy=0, idle=0), cpu_times(busy=20, idle=20)], FakeProcess(1, [0, 19]))
    shared = measure(monkeypatch, [cpu_times(busy=0, idle=0), cpu_times(busy=30, idle=10)], FakeProcess(1, [0, 10]))
    load = combine([{**quiet, "host": "node-a"}, None, {**shared, "host": "node-b"}, None])
    assert [(h["host"], h["other_cpu_share"]) for h in load.hosts] == [("node-a", 0.025), ("node-b", 0.5)]
    assert load.other_cpu_share == 0.5 and load.busy is True
    assert load.reason.startswith("other processes used 50% of the 4 cores' time on node-b")


def test_without_any_reading_nothing_is_made_up():
    load = combine([None])
    assert (load.busy, load.other_cpu_share, load.hosts) == (None, None, [])


# ------------------------------------------------------------------------------ the GPU
def gpu_reading(monkeypatch, processes, pid: int = 4242, parents: tuple[int, ...] = ()) -> dict:
    """One GPU rank's reading through the stand-in NVML; its GPU lists `processes` at start and end."""
    nvml = FakeNvml({0: script(processes=processes)})
    gpu = NvmlDevice(0, nvml=nvml)
    reading = measure(monkeypatch, [cpu_times(busy=0, idle=40), cpu_times(busy=1, idle=79)],
                      FakeProcess(pid, [0.0, 1.0], parents=parents), gpu=gpu)
    gpu.close()
    assert nvml.calls["init"] == nvml.calls["shutdown"] == 1
    return reading


def test_a_foreign_process_on_the_gpu_makes_a_run_busy(monkeypatch):
    load = combine([gpu_reading(monkeypatch, [[4242], [4242, 777]])])  # 777 arrived during the run
    assert load.busy is True and load.other_gpu_processes == 1
    assert load.reason == "1 other process on GPU 0 (pids 777)"
    assert load.hosts[0]["gpus"] == [{"gpu": "GPU 0", "other_processes": 1, "other_pids": [777]}]


def test_the_runs_own_process_on_its_gpu_is_not_foreign(monkeypatch):
    load = combine([gpu_reading(monkeypatch, [[4242]])])
    assert (load.busy, load.other_gpu_processes, load.reason) == (False, 0, None)


def test_the_process_that_started_the_run_is_not_foreign_on_its_gpu(monkeypatch):
    # a pool's parent keeps the context of a GPU case it ran itself before
    load = combine([gpu_reading(monkeypatch, [[4242, 100]], parents=(100, 1))])
    assert (load.busy, load.other_gpu_processes) == (False, 0)


def test_pids_from_a_containers_other_namespace_are_counted_not_matched(monkeypatch):
    # NVML gives the host's pids: none is the run's 4242, so the run's own context is one of the three
    load = combine([gpu_reading(monkeypatch, [[90001, 90002, 90003]])])
    assert load.other_gpu_processes == 2 and load.busy is True
    assert load.reason == "2 other processes on GPU 0"


@pytest.mark.parametrize(("processes", "why"), [
    ([[]], "NVML lists no process on GPU 0, not even this run's"),
    ([pynvml.NVMLError_NotSupported()], "NVML does not list the processes on GPU 0: NVMLError_NotSupported"),
])
def test_a_gpu_whose_processes_cannot_be_seen_is_unknown_not_quiet(monkeypatch, processes, why):
    load = combine([gpu_reading(monkeypatch, processes)])
    assert load.other_gpu_processes is None
    assert load.busy is False  # the CPU was judged quiet; the GPU could not be
    assert why in load.reason


# ------------------------------------------------------------------------------ a real run, and JSON
BLOBS = Case(model="softmax", dataset="blobs", optimizer="sgd", lr=0.1, batch_size=20, epochs=3)


def test_a_real_run_records_the_machine_load_even_with_sampling_off(registry):
    # long enough (a few tenths of a second) for this process's CPU time to advance by whole 10 ms ticks
    result = run_in_this_process(BLOBS.replace(epochs=60), RunSettings(registry=registry, telemetry_interval_s=None))
    load = result.machine_load
    assert result.telemetry is None and load is not None
    (host,) = load.hosts
    assert host["cores"] == psutil.cpu_count() and host["gpus"] == []
    assert 0 <= load.other_cpu_share <= 1 and 0 < load.own_cpu_share <= 1
    assert load.duration_s > 0 and load.other_gpu_processes is None
    error = host["cpu_share_resolution"]
    if abs(load.other_cpu_share - BUSY_CPU_SHARE) < error:
        assert load.busy is None and "too close to 10% to judge" in load.reason
    else:
        assert load.busy is (load.other_cpu_share > BUSY_CPU_SHARE)
    back = RunResult.from_dict(json.loads(json.dumps(result.to_dict(), allow_nan=False)))
    assert back.machine_load == load


def test_machine_load_reads_back_and_a_bad_field_is_named():
    load = MachineLoad(busy=True, other_cpu_share=0.5, reason="x", hosts=[{"host": "a", "gpus": []}])
    assert MachineLoad.from_dict(load.to_dict()) == load
    with pytest.raises(ResultSchemaError, match=r"field 'machine_load\.busy': expected true or false"):
        MachineLoad.from_dict({**load.to_dict(), "busy": "yes"})
    with pytest.raises(ResultSchemaError, match=r"field 'machine_load\.hosts\[0\]': expected an object"):
        MachineLoad.from_dict({**load.to_dict(), "hosts": ["a"]})


@pytest.mark.slow
def test_a_pool_of_two_ranks_reads_the_machine_and_its_energy_once(tmp_path, monkeypatch):
    from convbench import launch
    from convbench.energy import POWERCAP_ROOT_ENV

    zone = tmp_path / "intel-rapl:0"
    zone.mkdir()
    for name, text in (("name", "package-0"), ("energy_uj", "5000000"), ("max_energy_range_uj", "10000000")):
        (zone / name).write_text(text + "\n")
    monkeypatch.setenv(POWERCAP_ROOT_ENV, str(tmp_path))  # the workers the pool starts inherit it
    launch.close_pools()
    try:
        result = launch.run_case(Case(model="softmax", dataset="mnist-5k", optimizer="sgd", lr=0.5, batch_size=100,
                                      steps=10, eval_every=5, eval_train_samples=500, world_size=2),
                                 RunSettings(telemetry_interval_s=None))
    finally:
        launch.close_pools()
    (host,) = result.machine_load.hosts  # both ranks on this machine: one reading of it
    assert 0 < host["own_cpu_share"] <= 1 and host["other_cpu_share"] is not None
    assert result.energy.source == "rapl" and result.energy.run_j == 0.0  # the stand-in counter stood still
    assert [counter["rank"] for counter in result.energy.counters] == [0]  # RAPL once per machine
