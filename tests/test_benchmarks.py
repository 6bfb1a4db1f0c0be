"""`python -m benchmarks`: it runs, reports ratios of sides measured alternately, and checks what it claims
besides timings (identical losses). Timing values are never asserted: they belong to the benchmark's output."""

from __future__ import annotations

import importlib
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # benchmarks/ is a folder of the repository, not part of the installed package
    sys.path.append(str(ROOT))

from benchmarks import data_path, harness_overhead  # noqa: E402
from benchmarks.__main__ import BENCHMARKS, main  # noqa: E402
from benchmarks.timing import Comparison, Side, alternate, format_table  # noqa: E402


def test_alternate_interleaves_the_sides_after_one_warm_up_each():
    calls: list[str] = []

    def side(name: str) -> float:
        calls.append(name)
        return float(len(calls))

    a, b = alternate(lambda: side("a"), lambda: side("b"), 3, ("A", "B"))
    assert calls == ["a", "b"] * 4
    assert a.values == [3.0, 5.0, 7.0] and b.values == [4.0, 6.0, 8.0]


def test_a_row_reports_medians_spread_and_the_ratio_of_medians():
    row = Comparison("x", "case", "s", Side("A", [1.0, 2.0, 9.0]), Side("B", [3.0, 4.0, 4.0]))
    assert row.ratio == pytest.approx(4.0 / 2.0)
    assert row.a.spread == pytest.approx((9.0 - 1.0) / 2.0)
    data = json.loads(json.dumps(row.to_dict()))
    assert data["ratio"] == pytest.approx(2.0) and data["a"]["median"] == 2.0 and data["b"]["spread"] == 0.25
    table = format_table([row])
    assert "| x | case | s | A | 2 ±200% | B | 4 ±12% | 2.000 |" in table


def test_the_plain_loop_and_convbench_take_the_same_steps_with_the_same_losses():
    case = harness_overhead.CASES[1].replace(epochs=None, steps=12)  # the MLP with Adam
    plain = harness_overhead.plain_loop(case)
    ours = harness_overhead.convbench_run(case)
    assert len(plain.losses) == 12 and plain.losses == ours.losses
    assert plain.final_test_accuracy == ours.final_test_accuracy  # it evaluated the same model the same way
    other_seed = harness_overhead.plain_loop(case.replace(seed=1))
    assert other_seed.losses != plain.losses  # the comparison can tell runs apart


def test_an_unknown_benchmark_is_one_line_naming_the_choices(capsys):
    with pytest.raises(SystemExit) as exc_info:
        main(["--only", "harnes"])
    message = str(exc_info.value)
    assert "'harnes'" in message and "valid choices: " + ", ".join(BENCHMARKS) in message and "\n" not in message


@pytest.mark.slow
def test_the_command_runs_a_tiny_configuration_and_writes_ratios(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, "-m", "benchmarks", "--tiny", "--repeats", "1", "--only",
                           "harness,telemetry,data", "--json", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    assert "ratio B/A" in done.stdout and "torch " in done.stdout and "load average" in done.stdout
    document = json.loads(out.read_text(encoding="utf-8"))
    assert {"torch", "threads", "cpu", "load_avg"} <= set(document["environment"])
    rows = document["results"]
    assert {row["benchmark"] for row in rows} == {"harness", "telemetry", "data"}
    batches = next(row for row in rows if row["measure"] == "s/batch ready")  # the data paths alone, no model
    assert batches["extra"]["batches"] == data_path.TINY["steps"] and batches["goal"]
    assert {row["case"] for row in rows if row["benchmark"] == "harness"} == {"softmax", "mlp", "lenet5"}
    for row in rows:
        assert math.isfinite(row["ratio"]) and row["ratio"] > 0
        assert row["ratio"] == pytest.approx(row["b"]["median"] / row["a"]["median"])
        assert len(row["a"]["values"]) == len(row["b"]["values"]) == 1
    assert all(row["extra"]["identical_losses"] for row in rows if row["measure"] == "train s"
               and row["benchmark"] == "harness")


# --------------------------------------------------------------------------- benchmarks/gpu_check.sh
GPU_CHECK = ROOT / "benchmarks" / "gpu_check.sh"


def _listed_cuda_lines() -> list[tuple[str, str]]:
    header = GPU_CHECK.read_text(encoding="utf-8").split("CUDA-only lines it exercises", 1)[1].split("\nset ", 1)[0]
    return re.findall(r"#\s+(convbench/[\w/]+\.py):([\w.]+)", header)


def test_gpu_check_header_names_only_functions_that_exist():
    """The header is the list of CUDA-only code a GPU run covers: a renamed function must not linger there."""
    listed = _listed_cuda_lines()
    assert len(listed) >= 15
    for path, qualified in listed:
        module = importlib.import_module(path[:-3].replace("/", "."))
        target = module
        for part in qualified.split("."):
            assert hasattr(target, part), f"{path}:{qualified} is listed in gpu_check.sh but does not exist"
            target = getattr(target, part)
        assert callable(target), f"{path}:{qualified}"


def test_gpu_check_header_lists_the_cuda_branches_of_the_speed_options():
    listed = {f"{path}:{name}" for path, name in _listed_cuda_lines()}
    assert {"convbench/speed.py:check_device", "convbench/speed.py:Speed.set_global_precision",
            "convbench/distributed.py:backend_for", "convbench/telemetry.py:NvmlSampler"} <= listed


@pytest.mark.slow
def test_gpu_check_without_a_gpu_fails_in_one_line():
    done = subprocess.run(["bash", str(GPU_CHECK)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 2
    assert done.stdout == ""
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("gpu_check: FAILED: no CUDA GPU visible") and "nothing was checked" in line
