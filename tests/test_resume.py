"""``--convbench-resume``: a session killed half-way is resumed; the finished cases are reported from the
results file, not trained again, and only the rest train. A changed case, or a line of another convbench
version, trains again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from search_runs import wait_for

from convbench import __version__
from convbench.resume import VERSION_KEY, case_key, index

SUITE = """
import os

import pytest

from convbench import Case, grid

BASE = Case(model="softmax", optimizer="sgd", lr=0.1, dataset="mnist-5k", steps=int(os.environ.get("STEPS", "300")),
            eval_every=100, eval_train_samples=500)


@pytest.mark.parametrize("case", grid(BASE, lr=[float(x) for x in os.environ["LRS"].split(",")]))
def test_lr(convergence, case):
    result = convergence(case)
    assert not result.diverged
"""


def _session(folder: Path, *options: str, lrs: str = "0.05,0.1,0.2,0.4") -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CONVBENCH_SCALE", "PYTEST_ADDOPTS")}
    env.update(OMP_NUM_THREADS="1", LRS=lrs)
    return subprocess.Popen([sys.executable, "-m", "pytest", "test_sweep.py", "-q", "-p", "no:cacheprovider",
                             "--convbench-no-progress", "--convbench-threads", "1", *options], cwd=folder, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _lines(results: Path) -> list[dict]:
    if not results.exists():
        return []
    return [json.loads(line) for line in results.read_text().splitlines() if line.strip().endswith("}")]


def _benchmarks(path: Path) -> dict[str, dict]:
    return {b["extra_info"]["convbench"]["case_id"]: b for b in json.loads(path.read_text())["benchmarks"]}


@pytest.mark.slow
def test_a_killed_sweep_resumes_without_training_its_finished_cases(tmp_path):
    (tmp_path / "test_sweep.py").write_text(textwrap.dedent(SUITE))
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    results = tmp_path / ".convbench" / "results.jsonl"
    first = _session(tmp_path)
    try:
        wait_for(lambda: len(_lines(results)) >= 2, "two cases of the first session to finish")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    stored = {line["extra_info"]["convbench"]["case_id"]: line for line in _lines(results)}
    assert 2 <= len(stored) < 4  # killed half-way: some cases finished, some did not

    second = _session(tmp_path, "--convbench-resume", "--benchmark-json", "out.json")
    output, _ = second.communicate(timeout=300)
    assert second.returncode == 0, output
    benchmarks = _benchmarks(tmp_path / "out.json")
    assert len(benchmarks) == 4
    for case_id, entry in benchmarks.items():
        info = entry["extra_info"]["convbench"]
        if case_id in stored:  # reported from the file: its numbers and its session, and its stored time
            old = stored[case_id]["extra_info"]["convbench"]
            assert info["resumed"]["session"] == stored[case_id]["session"]
            assert (info["final"], info["curves"], info["timing"]) == (old["final"], old["curves"], old["timing"])
            assert entry["stats"]["min"] == pytest.approx(old["timing"]["train_s"] + old["timing"]["eval_s"])
        else:
            assert "resumed" not in info
    lines = _lines(results)
    assert len(lines) == 4  # the resumed cases are not written again; the rest are, once each
    assert {line["extra_info"]["convbench"]["case_id"] for line in lines} == set(benchmarks)
    assert f"convbench resume: {len(stored)} cases reported from" in output

    # a changed case trains (lr 0.4 -> 0.3), and so does a case whose line another convbench version wrote
    other_version = next(iter(stored))
    rewritten = []
    for line in lines:
        if line["extra_info"]["convbench"]["case_id"] == other_version:
            line[VERSION_KEY] = "0.0.1"
        rewritten.append(json.dumps(line))
    results.write_text("\n".join(rewritten) + "\n")
    third = _session(tmp_path, "--convbench-resume", "--benchmark-json", "again.json", lrs="0.05,0.1,0.2,0.3")
    output, _ = third.communicate(timeout=300)
    assert third.returncode == 0, output
    resumed = {case_id for case_id, entry in _benchmarks(tmp_path / "again.json").items()
               if "resumed" in entry["extra_info"]["convbench"]}
    trained = set(_benchmarks(tmp_path / "again.json")) - resumed
    assert trained == {other_version, "softmax-sgd-lr0.3-bs100"}, (resumed, trained)


def _line(case: dict, version: str | None = __version__, node: str = "host", lr_loss: float = 1.0) -> bytes:
    line = {"schema": "convbench.record/1", "machine": {"node": node}, "session": f"s{lr_loss}",
            "extra_info": {"convbench": {"schema": "convbench.result/3", "case": case, "scale": "quick",
                                         "final": {"train_loss": lr_loss}}}}
    if version is not None:
        line[VERSION_KEY] = version
    return json.dumps(line).encode()


def test_the_index_keeps_the_last_result_of_each_case_version_and_machine(tmp_path):
    case = {"model": "softmax", "lr": 0.1}
    path = tmp_path / "results.jsonl"
    path.write_bytes(b"\n".join([_line(case, lr_loss=1.0), b"{cut", _line(case, lr_loss=2.0),
                                 _line(case, version=None, lr_loss=3.0), _line(case, node="other", lr_loss=4.0),
                                 b'{"schema": "convbench.record/1", "extra_info": {"convbench": {"error": "x"}}}']))
    found = index(path)
    assert found[case_key(case, "quick", __version__, "host")]["session"] == "s2.0"  # the later line wins
    assert found[case_key(case, "quick", None, "host")]["session"] == "s3.0"  # no version: never matches one
    assert found[case_key(case, "quick", __version__, "other")]["session"] == "s4.0"
    assert len(found) == 3  # the cut line and the failure without a result are not results
    assert case_key({"lr": 0.1, "model": "softmax"}, "quick", "1", "h") == case_key(case, "quick", "1", "h")
    assert case_key({**case, "lr": 0.2}, "quick", "1", "h") != case_key(case, "quick", "1", "h")
