"""The throughput fixture: warm-up, then pytest-benchmark rounds of synchronised training steps."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest
import torch
from fake_nvml import FakeNvml, script

from convbench import launch, throughput
from convbench.case import Case
from convbench.machine_load import LoadMeter
from convbench.pool import free_port
from convbench.result import MachineLoad, RoundTimes
from convbench.telemetry import NvmlDevice
from convbench.throughput import RoundsLoad, measure

pytest_plugins = ["pytester"]

SUITE = '''
import pytest
from convbench import Case

CASE = Case(model="softmax", dataset="mnist-5k", optimizer="sgd", lr=0.1, batch_size=100, steps=1)

@pytest.mark.parametrize("case", [CASE.param()])
def test_speed(throughput, case):
    info = throughput(case, steps=50, rounds=4, warmup_steps=3)
    assert info["samples_per_s"] > 0
'''


CPU_CASE = Case(model="softmax", dataset="mnist-5k", optimizer="sgd", lr=0.1, batch_size=100, steps=1)


def read_benchmarks(path):
    return json.loads(path.read_text())["benchmarks"]


@pytest.fixture(autouse=True)
def fresh_pools():
    launch.close_pools()
    yield
    launch.close_pools()


@pytest.mark.slow
def test_throughput_rounds_are_pytest_benchmark_rounds_and_results_file_lines(pytester, tmp_path, capsys):
    import csv

    from convbench.cli import main

    pytester.makeini("[pytest]\n")
    pytester.makepyfile(test_speed=SUITE)
    pytester.runpytest_subprocess("--benchmark-json", "out.json", "--convbench-results", "results.jsonl"
                                  ).assert_outcomes(passed=1)
    (bench,) = read_benchmarks(pytester.path / "out.json")
    info = bench["extra_info"]["convbench_throughput"]
    assert bench["stats"]["rounds"] == info["rounds"] == 4
    assert info["samples_per_round"] == 50 * 100 and info["steps_per_round"] == 50
    assert info["samples_per_s"] == pytest.approx(info["samples_per_round"] / info["round_s"]["mean"])
    assert info["samples_per_s_per_device"] == info["samples_per_s"]  # one device
    # pytest-benchmark's wall time per round includes the synchronised steps convbench timed inside it
    assert bench["stats"]["min"] >= info["round_s"]["min"]
    assert info["round_s"]["min"] <= info["round_s"]["median"] <= info["round_s"]["max"]
    assert info["round_s"]["min"] <= info["round_s"]["mean"] <= info["round_s"]["max"]
    assert info["round_s"]["std"] <= info["round_s"]["max"] - info["round_s"]["min"]
    # the machine's load over the four rounds: at least as long as they took
    assert info["machine_load"]["duration_s"] >= 4 * info["round_s"]["min"]
    assert (info["outcome"], info["error"], info["scale"]) == ("passed", None, "quick")
    # the same result, with its outcome, is in the results file as the test ends
    (line,) = [json.loads(text) for text in (pytester.path / "results.jsonl").read_text().splitlines()]
    assert line["fullname"] == bench["fullname"]
    assert line["extra_info"]["convbench_throughput"] == info
    # which `convbench report` tabulates, with the rounds' spread
    capsys.readouterr()
    assert main(["report", str(pytester.path / "results.jsonl"), "-o", str(tmp_path / "report")]) == 0
    assert "## throughput" in capsys.readouterr().out
    with open(tmp_path / "report" / "tables" / "throughput.csv", newline="") as stream:
        (row,) = csv.DictReader(stream)
    assert float(row["samples_per_s"]) == pytest.approx(info["samples_per_s"])
    assert float(row["round_std_s"]) == pytest.approx(info["round_s"]["std"])
    assert float(row["round_cv"]) == pytest.approx(info["round_s"]["std"] / info["round_s"]["mean"])
    busy = info["machine_load"]["busy"]
    assert row["machine_busy"] == ("" if busy is None else str(busy))  # as the results file says


@pytest.mark.slow
def test_throughput_on_two_processes(pytester):
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(test_speed=SUITE)
    pytester.runpytest_subprocess("--benchmark-json", "out.json", "--convbench-world-sizes", "2"
                                  ).assert_outcomes(passed=1)
    (bench,) = read_benchmarks(pytester.path / "out.json")
    info = bench["extra_info"]["convbench_throughput"]
    assert info["world_size"] == 2 and info["case_id"].endswith("-w2")
    assert info["samples_per_round"] == 50 * 100  # strong scaling: the global batch stays 100
    assert info["samples_per_s_per_device"] == pytest.approx(info["samples_per_s"] / 2)
    assert info["startup_s"] > 0
    # read from the session's process, whose children the workers are
    assert info["machine_load"]["duration_s"] >= 4 * info["round_s"]["min"]
    assert [host["host"] for host in info["machine_load"]["hosts"]] == [platform.node()]


def test_session_rounds_continue_through_epochs():
    case = Case(model="softmax", dataset="mnist-5k", optimizer="sgd", lr=0.1, batch_size=500, steps=1)
    with launch.prepare(case) as prepared:
        prepared.time_steps(1)  # warm-up
        seconds = [prepared.time_steps(10) for _ in range(2)]  # 20 steps: almost 3 epochs of 7 batches
        assert all(s > 0 for s in seconds)
        assert prepared.prepared._steps_timed == 21
        assert prepared.global_batch == 500


class ScriptedRounds:
    """A prepared case whose steps take no time: it logs each call, and the load meter's readings, in order."""

    def __init__(self, events: list[str], case: Case = CPU_CASE, fail_at_round: int | None = None) -> None:
        self.case, self.global_batch, self.startup_s = case, 100, 0.0
        self.events, self.fail_at_round, self.rounds = events, fail_at_round, -1  # the first call warms up

    def time_steps(self, steps: int) -> float:
        if self.rounds < 0:
            self.rounds = 0
            self.events.append("warm-up")
            return 1.0
        self.rounds += 1
        if self.rounds == self.fail_at_round:
            raise RuntimeError("a rank failed")
        self.events.append(f"round {self.rounds}")
        return self.rounds / 10


@pytest.fixture
def meter_events(monkeypatch) -> list[str]:
    events: list[str] = []
    start, stop = LoadMeter.start, LoadMeter.stop

    def logged_start(meter):
        events.append("load start")
        return start(meter)

    def logged_stop(meter):
        events.append("load stop")
        return stop(meter)

    monkeypatch.setattr(LoadMeter, "start", logged_start)
    monkeypatch.setattr(LoadMeter, "stop", logged_stop)
    return events


def test_machine_load_is_read_over_the_timed_rounds_not_the_warm_up(meter_events):
    result = measure(ScriptedRounds(meter_events), steps=2, rounds=3, warmup_steps=5)
    assert meter_events == ["warm-up", "load start", "round 1", "round 2", "round 3", "load stop"]
    assert isinstance(result.machine_load, MachineLoad)
    assert [host["host"] for host in result.machine_load.hosts] == [platform.node()]
    assert result.machine_load.other_gpu_processes is None  # on the CPU: no GPU to check
    assert result.round_s == RoundTimes.of([0.1, 0.2, 0.3]) and result.samples_per_round == 200


def test_rounds_that_fail_record_no_load_and_close_nvml(meter_events, monkeypatch):
    nvml = gpu_here(monkeypatch, processes=[[os.getpid()]])
    rounds = ScriptedRounds(meter_events, fail_at_round=2)
    rounds.time_steps(1)  # the warm-up
    with pytest.raises(RuntimeError, match="a rank failed"), RoundsLoad(CPU_CASE, nvml=nvml) as load:
        _repeat(rounds, 3)
    assert meter_events == ["warm-up", "load start", "round 1", "load stop"]
    assert load.result is None
    assert nvml.calls["init"] == nvml.calls["shutdown"] == 1


def _repeat(rounds: ScriptedRounds, times: int) -> None:
    for _ in range(times):
        rounds.time_steps(1)


def gpu_here(monkeypatch, processes: list[list[int]]) -> FakeNvml:
    """Cases resolve to GPU 0, which a stand-in NVML answers for (this machine has no GPU)."""
    nvml = FakeNvml({0: script(processes=processes)})
    monkeypatch.setattr(throughput, "resolve_device", lambda name: torch.device("cuda", 0))
    monkeypatch.setattr(NvmlDevice, "open", classmethod(lambda cls, device, nvml=None: cls(0, nvml=nvml)))
    return nvml


def test_a_foreign_process_on_the_gpu_during_the_rounds_makes_them_busy(monkeypatch):
    nvml = gpu_here(monkeypatch, processes=[[os.getpid()], [os.getpid(), 777]])  # 777 arrives mid-rounds
    with RoundsLoad(CPU_CASE, nvml=nvml) as load:
        pass
    assert load.result.busy is True and load.result.other_gpu_processes == 1
    assert "1 other process on GPU 0 (pids 777)" in load.result.reason
    assert nvml.calls["init"] == nvml.calls["shutdown"] == 1


def test_a_worker_pools_gpus_are_said_to_be_unchecked(monkeypatch):
    nvml = gpu_here(monkeypatch, processes=[[777]])
    with RoundsLoad(CPU_CASE.replace(world_size=2), nvml=nvml) as load:
        pass
    assert load.result.other_gpu_processes is None
    assert "a worker pool's GPUs are not checked from the session's process" in load.result.reason
    assert nvml.calls["init"] == 0  # the session's process opens no GPU of the workers'


def test_a_real_measurement_records_its_rounds_spread_and_load():
    with launch.prepare(CPU_CASE) as prepared:
        result = measure(prepared, steps=40, rounds=3, warmup_steps=1)  # rounds long enough for CPU ticks
    assert result.rounds == 3 and result.round_s.std is not None and result.round_s.std >= 0
    assert result.round_s.min <= result.round_s.median <= result.round_s.max
    load = result.machine_load
    assert load.duration_s >= 3 * result.round_s.min  # the meter was running through every round
    assert load.own_cpu_share is not None and 0 <= load.own_cpu_share <= 1


@pytest.mark.slow
def test_under_torchrun_every_rank_reads_the_load_and_rank_zero_writes_it(tmp_path):
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_speed.py").write_text(SUITE.replace("steps=1)", "steps=1, world_size=2)"))
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    completed = subprocess.run(
        [torchrun, "--nproc-per-node", "2", "--master-port", str(free_port()), "-m", "pytest", "-q",
         "-p", "no:cacheprovider", "--convbench-results", "r.jsonl"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert completed.returncode == 0, (completed.stdout + completed.stderr)[-4000:]
    # both ranks measured (torchrun fails if one does not; the hosts below gathered both readings); only
    # rank 0 reports
    assert completed.stdout.count("1 passed") == 1
    (line,) = [json.loads(text) for text in (tmp_path / "r.jsonl").read_text().splitlines()]
    info = line["extra_info"]["convbench_throughput"]
    assert info["world_size"] == 2 and info["rounds"] == 4
    # the ranks gathered their readings: one machine, read by its first rank
    assert [host["host"] for host in info["machine_load"]["hosts"]] == [platform.node()]
    assert info["machine_load"]["duration_s"] >= 4 * info["round_s"]["min"]


@pytest.mark.slow
def test_weak_scaling_throughput_counts_every_rank_batch():
    case = Case(model="softmax", dataset="mnist-5k", optimizer="sgd", lr=0.1, batch_size=50, steps=1, world_size=2,
                scaling="weak")
    with launch.prepare(case) as prepared:
        prepared.time_steps(1)  # warm-up
        assert prepared.time_steps(5) > 0
        assert prepared.global_batch == 100


@pytest.mark.slow
def test_full_batch_throughput_counts_the_whole_training_set_on_any_world_size():
    case = Case(model="softmax", dataset="mnist-5k", optimizer="sgd", lr=0.1, batch_size=None, steps=1)
    sizes = []
    for world_size in (1, 2):
        with launch.prepare(case.replace(world_size=world_size)) as prepared:
            prepared.time_steps(1)  # warm-up
            sizes.append(prepared.global_batch)
    assert sizes[0] == sizes[1] > 1000  # every training image, not 0 (the case names no batch size)


def test_bad_round_settings_fail_in_one_line(pytester):
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(test_speed=SUITE.replace("steps=50", "steps=0"))
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*throughput steps=0: expected a positive integer*"])


@pytest.mark.slow
def test_report_tabulates_throughput_with_speedup_over_world_size_one(pytester, tmp_path, capsys):
    import csv

    from convbench.cli import main

    pytester.makeini("[pytest]\n")
    pytester.makepyfile(test_speed=SUITE.replace("rounds=4", "rounds=2"))
    pytester.runpytest_subprocess("--benchmark-json", "out.json", "--convbench-world-sizes", "1,2"
                                  ).assert_outcomes(passed=2)
    assert main(["report", str(pytester.path / "out.json"), "-o", str(tmp_path / "report")]) == 0
    assert "## throughput" in capsys.readouterr().out
    infos = {b["extra_info"]["convbench_throughput"]["world_size"]: b["extra_info"]["convbench_throughput"]
             for b in read_benchmarks(pytester.path / "out.json")}
    with open(tmp_path / "report" / "tables" / "throughput.csv", newline="") as stream:
        rows = {int(row["world_size"]): row for row in csv.DictReader(stream)}
    speedup = infos[2]["samples_per_s"] / infos[1]["samples_per_s"]
    assert float(rows[2]["speedup"]) == pytest.approx(speedup)
    assert float(rows[2]["efficiency"]) == pytest.approx(speedup / 2)
    assert float(rows[1]["samples_per_s"]) == pytest.approx(infos[1]["samples_per_s"])
