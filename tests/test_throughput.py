"""The throughput fixture: warm-up, then pytest-benchmark rounds of synchronised training steps."""

from __future__ import annotations

import json

import pytest

from convbench import launch
from convbench.case import Case

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


def read_benchmarks(path):
    return json.loads(path.read_text())["benchmarks"]


@pytest.fixture(autouse=True)
def fresh_pools():
    launch.close_pools()
    yield
    launch.close_pools()


@pytest.mark.slow
def test_throughput_rounds_are_pytest_benchmark_rounds(pytester):
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(test_speed=SUITE)
    pytester.runpytest_subprocess("--benchmark-json", "out.json").assert_outcomes(passed=1)
    (bench,) = read_benchmarks(pytester.path / "out.json")
    info = bench["extra_info"]["convbench_throughput"]
    assert bench["stats"]["rounds"] == info["rounds"] == 4
    assert info["samples_per_round"] == 50 * 100 and info["steps_per_round"] == 50
    assert info["samples_per_s"] == pytest.approx(info["samples_per_round"] / info["round_s"]["mean"])
    assert info["samples_per_s_per_device"] == info["samples_per_s"]  # one device
    # pytest-benchmark's wall time per round includes the synchronised steps convbench timed inside it
    assert bench["stats"]["min"] >= info["round_s"]["min"]
    assert info["round_s"]["min"] <= info["round_s"]["mean"] <= info["round_s"]["max"]


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


def test_session_rounds_continue_through_epochs():
    case = Case(model="softmax", dataset="mnist-5k", optimizer="sgd", lr=0.1, batch_size=500, steps=1)
    with launch.prepare(case) as prepared:
        prepared.time_steps(1)  # warm-up
        seconds = [prepared.time_steps(10) for _ in range(2)]  # 20 steps: almost 3 epochs of 7 batches
        assert all(s > 0 for s in seconds)
        assert prepared.prepared._steps_timed == 21
        assert prepared.global_batch == 500


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
