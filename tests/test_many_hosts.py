"""One suite over several hosts: pytest-split gives each host its share of the cases (by recorded durations),
each host writes its own benchmark JSON, and `convbench report a.json b.json` merges them, each run keeping
its host's label. The hosts are simulated on this machine: two sessions, each told it runs on another host."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from convbench.cli import main as convbench_main

pytest.importorskip("pytest_split", reason="pytest-split is not installed (the 'test' extra)")

SUITE = """
import pytest

from convbench import Case, grid

BASE = Case(model="softmax", optimizer="sgd", lr=0.1, dataset="mnist-5k", steps=30, eval_every=10,
            eval_train_samples=500)


@pytest.mark.parametrize("case", grid(BASE, lr=[0.05, 0.1, 0.2, 0.4]))
def test_lr(convergence, case):
    assert not convergence(case).diverged
"""
#: Each simulated host names itself in pytest-benchmark's machine info, as platform.node() would on it.
CONFTEST = """
import os


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["node"] = os.environ["SIMULATED_HOST"]
"""
IDS = [f"softmax-sgd-lr{lr}-bs100" for lr in ("0.05", "0.1", "0.2", "0.4")]


def _host_session(folder: Path, host: str, group: int, *options: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CONVBENCH_SCALE", "PYTEST_ADDOPTS")}
    env.update(OMP_NUM_THREADS="1", SIMULATED_HOST=host)
    return subprocess.run([sys.executable, "-m", "pytest", "test_suite.py", "-q", "-p", "no:cacheprovider",
                           "--convbench-no-progress", "--convbench-threads", "1", "--splits", "2", "--group",
                           str(group), "--splitting-algorithm", "least_duration", "--benchmark-json", f"{host}.json",
                           "--convbench-results", f"{host}.jsonl", *options],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.slow
def test_a_suite_split_over_two_hosts_by_duration_merges_with_host_labels(tmp_path, capsys):
    (tmp_path / "test_suite.py").write_text(textwrap.dedent(SUITE))
    (tmp_path / "conftest.py").write_text(textwrap.dedent(CONFTEST))
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    # recorded durations (pytest --store-durations writes this file): one case as long as the other three
    durations = {f"test_suite.py::test_lr[{case_id}]": seconds
                 for case_id, seconds in zip(IDS, (30.0, 10, 10, 10), strict=True)}
    (tmp_path / ".test_durations").write_text(json.dumps(durations))
    runs = {host: _host_session(tmp_path, host, group) for host, group in (("node-a", 1), ("node-b", 2))}
    for host, run in runs.items():
        assert run.returncode == 0, (host, run.stdout[-3000:], run.stderr[-3000:])
    ran = {host: {b["extra_info"]["convbench"]["case_id"] for b in json.loads((tmp_path / f"{host}.json").read_text())
                  ["benchmarks"]} for host in runs}
    assert ran["node-a"] | ran["node-b"] == set(IDS) and not ran["node-a"] & ran["node-b"]  # every case once
    assert {frozenset(ran["node-a"]), frozenset(ran["node-b"])} == {frozenset(IDS[:1]), frozenset(IDS[1:])}

    code = convbench_main(["report", str(tmp_path / "node-a.json"), str(tmp_path / "node-b.json"), "-o",
                           str(tmp_path / "report"), "--no-figures"])
    out = capsys.readouterr().out
    assert code == 0
    assert "4 cases" in out
    rows = {line.split("|")[1].strip() for line in out.splitlines() if line.startswith("| softmax")}
    for host, cases in ran.items():  # each run keeps the label of the host it ran on
        for case_id in cases:
            assert any(row.startswith(case_id) and f"[{host}" in row for row in rows), (case_id, host, rows)
    table = (tmp_path / "report" / "tables" / "all_cases.csv").read_text()
    assert "node-a" in table and "node-b" in table

    # the hosts' results files merge the same way
    code = convbench_main(["report", str(tmp_path / "node-a.jsonl"), str(tmp_path / "node-b.jsonl"), "-o",
                           str(tmp_path / "report-jsonl"), "--no-figures"])
    assert code == 0 and "4 cases" in capsys.readouterr().out
