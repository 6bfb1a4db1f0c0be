"""`pytest -n 2` on a user's own small suite, against the same suite run serially: the same losses, every
case in the results file once, a benchmark JSON that `convbench report`, `convbench compare` and
`pytest-benchmark compare` read, nothing lost when a worker dies, and each worker on its own (faked) GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from convbench.cli import main
from convbench.report import load as loader

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.slow

SUITE = """
import pytest
from convbench import Case, grid

LINE = Case(model="linear_regression", dataset="linear-regression", optimizer="sgd", lr=0.1, batch_size=32, steps=60)
DIGITS = Case(model="softmax", dataset="mnist-5k", optimizer="sgd", lr=0.1, batch_size=100, steps=30, eval_every=10,
              eval_train_samples=500)


@pytest.mark.parametrize("case", grid(LINE, lr=[0.05, 0.2]))
def test_line(convergence, case):
    assert not convergence(case).diverged


@pytest.mark.parametrize("case", grid(DIGITS, optimizer=["sgd", "adam"]))
def test_digits(convergence, case):
    result = convergence(case)
    assert result.final_train_loss < result.initial_train_loss


@pytest.mark.parametrize("case", [DIGITS.param()])
def test_speed(throughput, case):
    throughput(case, steps=2, rounds=2, warmup_steps=1)
"""
CASES = 4  # the convergence cases above; the throughput case is refused beside other workers
OPTIONS = ("--convbench-threads", "1", "--convbench-results", "results.jsonl", "-rs")


def session(folder: Path, source: str, *options: str) -> subprocess.CompletedProcess[str]:
    """Run ``source`` as a user's ``test_study.py`` in ``folder`` with ``--benchmark-json out.json``, as
    `suite_runs.run_suite` does, and return the finished process (its output included)."""
    (folder / "test_study.py").write_text(source, encoding="utf-8")
    (folder / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")  # its own rootdir, not ours
    env = {k: v for k, v in os.environ.items() if k not in ("CONVBENCH_SCALE", "PYTEST_ADDOPTS")}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "test_study.py", "-q", "-p", "no:cacheprovider", "--benchmark-json",
         "out.json", "--convbench-no-progress", *OPTIONS, *options],
        cwd=folder, env=env, capture_output=True, text=True, timeout=600, check=False)


def lines(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / "results.jsonl").read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def sessions(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The suite run serially (its throughput case deselected) and with ``-n 2``, each in its own folder."""
    folders = {"serial": tmp_path_factory.mktemp("serial"), "parallel": tmp_path_factory.mktemp("parallel")}
    runs = {name: session(folder, SUITE, *(("-n", "0", "-k", "not speed") if name == "serial" else ("-n", "2")))
            for name, folder in folders.items()}
    for run in runs.values():
        assert run.returncode == 0, (run.stdout + run.stderr)[-5000:]
    return {**folders, "output": runs["parallel"].stdout + runs["parallel"].stderr}


def by_test(folder: Path) -> dict[str, dict[str, Any]]:
    return {line["name"]: line["extra_info"]["convbench"] for line in lines(folder)}


def test_parallel_runs_give_the_serial_losses(sessions: dict[str, Any]) -> None:
    """Same seeds, one thread each side: each case trains exactly as it did alone."""
    serial, parallel = by_test(sessions["serial"]), by_test(sessions["parallel"])
    assert sorted(parallel) == sorted(serial) and len(serial) == CASES
    for test, alone in serial.items():
        beside = parallel[test]
        assert beside["curves"]["train"]["loss"] == alone["curves"]["train"]["loss"], test
        assert beside["final"] == alone["final"], test
        assert beside["stalled"] == alone["stalled"] and beside["diverged"] == alone["diverged"]


def test_every_case_is_in_the_results_file_once_from_both_workers(sessions: dict[str, Any]) -> None:
    records = lines(sessions["parallel"])
    names = [line["name"] for line in records]
    assert len(names) == len(set(names)) == CASES
    shared = [line["extra_info"]["convbench"]["parallel"] for line in records]
    assert {p["worker"] for p in shared} == {"gw0", "gw1"}
    assert all(p["workers"] == 2 and p["device"] == "cpu" and p["threads"] == 1 for p in shared)
    # the threads torch trained with, as the run's machine-load reading counted them
    assert {line["extra_info"]["convbench"]["machine_load"]["hosts"][0]["threads"] for line in records} == {1}
    assert len({line["session"] for line in records}) == 1  # one session, not one per worker
    assert all("parallel" not in line["extra_info"]["convbench"] for line in lines(sessions["serial"]))


def test_the_throughput_case_is_refused_in_one_line(sessions: dict[str, Any]) -> None:
    output = sessions["output"]
    assert "4 passed, 1 skipped" in output
    skipped = next(line for line in output.splitlines() if line.startswith("SKIPPED [1] "))
    assert skipped.startswith("SKIPPED [1] test_study.py:")  # at the test's line, as a skip mark is
    assert skipped.endswith(": convbench: not run beside other pytest-xdist workers: throughput case: it times the "
                            "machine alone, not beside 1 other worker(s); run it without -n")
    assert ("convbench: 1 case(s) skipped, they cannot run beside other pytest-xdist workers (1 throughput case); "
            "run them alone: pytest -n 0 test_study.py::test_speed[softmax-sgd-lr0.1-bs100]") in output
    assert "automatically disabled" not in output  # pytest-benchmark timed convbench's cases
    assert not any(line["name"].startswith("test_speed") for line in lines(sessions["parallel"]))
    benchmark = json.loads((sessions["parallel"] / "out.json").read_text(encoding="utf-8"))
    assert not any(entry["name"].startswith("test_speed") for entry in benchmark["benchmarks"])


def test_the_benchmark_json_holds_every_case_with_its_round(sessions: dict[str, Any]) -> None:
    benchmark = json.loads((sessions["parallel"] / "out.json").read_text(encoding="utf-8"))
    entries = {entry["name"]: entry for entry in benchmark["benchmarks"]}
    assert sorted(entries) == sorted(by_test(sessions["parallel"]))
    for entry in entries.values():
        assert entry["stats"]["rounds"] == 1 and entry["stats"]["min"] > 0  # timed by pytest-benchmark
        assert entry["extra_info"]["convbench"]["parallel"]["workers"] == 2
    assert benchmark["machine_info"]["convbench"]["parallel"] == {"workers": 2, "devices": ["cpu", "cpu"],
                                                                  "threads": [1, 1]}
    assert len(loader.load(sessions["parallel"] / "out.json").records) == CASES


def test_pytest_benchmark_compare_reads_it(sessions: dict[str, Any]) -> None:
    completed = subprocess.run([sys.executable, "-m", "pytest_benchmark", "compare", "--columns", "min",
                                str(sessions["serial"] / "out.json"), str(sessions["parallel"] / "out.json")],
                               capture_output=True, text=True, timeout=120, check=False)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.count("test_digits[softmax-adam-lr0.1-bs100]") == 2  # one row per file


def test_convbench_compare_judges_quality_not_times(sessions: dict[str, Any],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    code = main(["compare", str(sessions["serial"] / "out.json"), str(sessions["parallel"] / "out.json"),
                 "--min-time-samples", "1", "--judge-busy"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.count("times not compared: measured alone in BASE, beside other cases (-n 2) in NEW") == CASES
    assert f"{CASES} cases compared: no regressions" in out


def test_the_report_shows_the_parallel_runs(sessions: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["report", str(sessions["parallel"] / "out.json"), "-o", str(sessions["parallel"] / "report"),
                 "--no-figures"]) == 0
    table = (sessions["parallel"] / "report" / "tables" / "test_digits.md").read_text(encoding="utf-8")
    assert "| parallel" in table and table.count("2 workers") == 2


SURVIVORS = """
import os
import pytest
from convbench import Case, grid

LINE = Case(model="linear_regression", dataset="linear-regression", optimizer="sgd", lr=0.1, batch_size=32, steps=30)


@pytest.mark.parametrize("case", grid(LINE, lr=[0.05, 0.1, 0.2]))
def test_line(convergence, case):
    convergence(case)


def test_zz_dies():
    os._exit(3)  # a crash in native code, an OOM kill: the worker is gone without a word
"""


def test_a_worker_that_dies_costs_no_finished_case(tmp_path: Path) -> None:
    completed = session(tmp_path, SURVIVORS, "-n", "2")
    output = completed.stdout + completed.stderr
    assert completed.returncode == 1, output
    assert "crashed while running" in output and "3 passed" in output
    finished = sorted(line["name"] for line in lines(tmp_path))
    assert len(finished) == len(set(finished)) == 3
    benchmark = json.loads((tmp_path / "out.json").read_text(encoding="utf-8"))
    assert sorted(entry["name"] for entry in benchmark["benchmarks"]) == finished


def test_each_worker_starts_on_its_own_gpu(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two faked GPUs, listed by the user as 5 and 7: worker gw0 gets 5, gw1 gets 7 (the controller runs
    in this process, where torch.cuda is faked; the workers only report what they were given)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    seen = pytester.path / "seen"
    seen.mkdir()
    pytester.makepyfile(test_gpus=f"""
        import os
        import pytest

        @pytest.mark.parametrize("index", range(6))
        def test_where(index):
            worker = os.environ["PYTEST_XDIST_WORKER"]
            with open(os.path.join({str(seen)!r}, worker), "a") as out:
                out.write(os.environ["CUDA_VISIBLE_DEVICES"] + "\\n")
        """)
    pytester.runpytest("-n", "2", "-p", "no:cacheprovider").assert_outcomes(passed=6)
    given = {path.name: set(path.read_text().split()) for path in seen.iterdir()}
    assert given == {"gw0": {"5"}, "gw1": {"7"}}
