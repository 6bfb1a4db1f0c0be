"""The lines a pytest session ends with: the study's answer per group, and where the results went."""

from __future__ import annotations

import statistics
from typing import Any

import pytest
from test_compare_gate import rounds as throughput_entry
from test_compare_gate import run as gate_entry
from test_pytest_plugin import _isolated, write_suite  # noqa: F401  (_isolated: autouse, every inner session)

from convbench.result import Divergence, Stall
from convbench.session_summary import MAX_NAMES, group_lines, summary

pytest_plugins = ["pytester"]


def record(config: int, outcome: str = "passed", group: str = "test_x", seed: int = 0,
           **fields: Any) -> dict[str, Any]:
    """A finished case as the plugin keeps it: the result's fields with its outcome and group. Runs with one
    ``config`` and different ``seed`` are seeds of one case (``case<config>``)."""
    result = gate_entry(seed, lr=0.1 * (config + 1), **fields)["extra_info"]["convbench"]
    case_id = f"case{config}" + (f"-seed{seed}" if seed else "")
    return {**result, "case_id": case_id, "outcome": outcome, "error": None, "group": group}


def test_best_case_leaves_out_diverged_and_stalled_runs() -> None:
    diverged = record(1, accuracy=0.99)
    diverged.update(diverged=True, divergence=Divergence(step=3, reason="nan").to_dict())
    stalled = record(2, accuracy=0.98, stall=Stall(step=100, reason="at chance"))
    lines = group_lines("test_x", [record(0, accuracy=0.80), diverged, stalled, record(3, accuracy=0.85)])
    assert lines[0] == "test_x: 4 cases (4 passed)"
    assert "  best: case3, final test accuracy 0.85" in lines
    assert "  diverged: case1" in lines and "  stalled: case2" in lines


def test_target_line_names_the_fastest_case_that_reached_it() -> None:
    fast, slow = record(0), record(1)
    fast["target"].update(time_s=0.5, step=20)
    slow["target"].update(time_s=2.0, step=80)
    missed = record(2, target_step=None)
    (line,) = [line for line in group_lines("g", [slow, fast, missed]) if "target" in line]
    assert line == "  target reached: 2/3 runs; fastest case0 in 0.5 s (step 20)"


def test_seeds_of_a_case_are_one_case_ranked_by_their_mean() -> None:
    lucky = [record(0, seed=s, accuracy=a) for s, a in enumerate([0.99, 0.70, 0.71])]  # mean 0.80
    steady = [record(1, seed=s, accuracy=a) for s, a in enumerate([0.85, 0.86, 0.84])]  # mean 0.85
    lines = group_lines("g", lucky + steady)
    assert lines[0] == "g: 2 cases, 6 runs (6 passed)"
    assert lines[1] == "  best: case1, final test accuracy 0.85 (mean of 3 seeds)"
    one_stalled = [record(2, seed=s, stall=Stall(step=100, reason="r") if s == 1 else None) for s in range(3)]
    assert "  stalled: case2 (1/3 seeds)" in group_lines("g", one_stalled)


def test_failed_cases_are_counted_and_long_lists_are_cut() -> None:
    failed = [{"test": f"bad{i}", "outcome": "failed", "error": "unknown optimizer", "group": "g"}
              for i in range(MAX_NAMES + 2)]
    lines = group_lines("g", [record(0), *failed])
    assert lines[0] == f"g: {MAX_NAMES + 3} cases (1 passed, {MAX_NAMES + 2} failed)"
    assert lines[-1].endswith("and 2 more") and "bad0" in lines[-1] and f"bad{MAX_NAMES}" not in lines[-1]


def test_throughput_cases_show_the_reports_samples_per_second_and_doubt_disturbed_rounds() -> None:
    entry = throughput_entry([0.1, 0.2, 0.4])["extra_info"]["convbench_throughput"]
    overall = 3 * entry["samples_per_round"] / 0.7  # the report's samples_per_s: all samples over all rounds' time
    assert entry["samples_per_s"] == pytest.approx(overall)
    lines = summary([], [{**entry, "group": "speed", "outcome": "passed"}])
    spread = statistics.stdev([0.1, 0.2, 0.4]) / statistics.fmean([0.1, 0.2, 0.4])  # 65%: disturbed
    assert lines == ["speed: 1 throughput case",
                     f"  {entry['case_id']}: {overall:,.0f} samples/s over 3 rounds "
                     f"(rounds vary: std {spread:.0%} of their mean)"]
    steady = throughput_entry([0.2, 0.201, 0.199])["extra_info"]["convbench_throughput"]
    (_, line) = summary([], [{**steady, "group": "speed", "outcome": "passed"}])
    assert line.endswith("samples/s over 3 rounds")


def test_a_session_ends_with_the_summary_and_where_the_results_are(pytester: pytest.Pytester) -> None:
    write_suite(pytester, """
        @pytest.mark.parametrize("case", grid(BASE, lr=[0.5, 1000.0]))
        def test_lrs(convergence, case):
            convergence(case)
        """)
    result = pytester.runpytest("--benchmark-json", "out.json", "--convbench-no-progress")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*convbench summary*", "test_lrs: 2 cases (2 passed)",
                                 "  best: softmax-sgd-lr0.5-bs*", "  diverged: softmax-sgd-lr1000-bs*",
                                 "results file: *results.jsonl", "benchmark JSON: out.json",
                                 "tables and figures: convbench report out.json"])
