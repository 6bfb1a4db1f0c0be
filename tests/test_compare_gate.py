"""`convbench compare` as a CI gate on a noisy machine: it fails real regressions and nothing else.

Inputs are built here from the result contract (`RunResult`, `MachineLoad`, `ThroughputResult`) with the
times, metrics and machine load each test needs; every expected number is computed in the test from
those inputs (Welch's t-test from its textbook formulas, see ``welch_p``).
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_compare import compared, regressions, welch_p

from convbench import Case
from convbench.cli import main
from convbench.report.time_rule import BUSY, JUDGED, TOO_FEW, TimeRule, TimeSamples, judge_time
from convbench.result import MachineLoad, RoundTimes, RunResult, Stall, Target, ThroughputResult, Timing

CASE = "suite.py::test_x[softmax-sgd-lr0.1-bs100]"  # the name all seeds of a case are compared under


# ------------------------------------------------------------------------------------- inputs
def run(seed: int = 0, *, train_s: float = 2.0, accuracy: float = 0.9, busy: bool | None = False,
        target_step: int | None = 50, lr: float = 0.1, stall: Stall | None = None) -> dict[str, Any]:
    """A benchmark entry holding one run of the case ``lr`` with seed ``seed``."""
    case = Case(model="softmax", optimizer="sgd", lr=lr, batch_size=100, steps=100, seed=seed, target_accuracy=0.5)
    result = RunResult(
        case_id=case.id, case=case.to_dict(), scale="quick", device="cpu", world_size=1, steps=100,
        steps_planned=100, epochs=1.0, samples=10000, diverged=False, divergence=None,
        timing=Timing(setup_s=0.1, train_s=train_s, eval_s=0.2), samples_per_s=10000 / train_s,
        final={"train_loss": 0.4, "test_loss": 0.5, "test_accuracy": accuracy}, best={"test_accuracy": accuracy},
        target=Target(metric="accuracy", split="test", value=0.5, reached=target_step is not None,
                      step=target_step, time_s=None if target_step is None else 1.0),
        curves={"train": {"step": [0, 100], "loss": [2.0, 0.4]},
                "eval": {"step": [0, 100], "epoch": [0.0, 1.0], "time_s": [0.0, train_s],
                         "test_accuracy": [0.1, accuracy], "test_loss": [2.0, 0.5]}},
        stop_reason="budget",
        machine_load=MachineLoad(busy=busy, other_cpu_share=0.5 if busy else 0.01,
                                 reason="others took 50% of the cores' time" if busy else None),
        stalled=stall is not None, stall=stall)
    test = f"test_x[softmax-sgd-lr{lr:g}-bs100-seed{seed}]"
    return {"group": "g", "name": test, "fullname": f"suite.py::{test}", "extra_info": {"convbench": result.to_dict()}}


def seeds(times: list[float], **fields: Any) -> list[dict[str, Any]]:
    """One run per seed, with these train times."""
    return [run(seed, train_s=t, **fields) for seed, t in enumerate(times)]


def rounds(seconds: list[float], *, with_std: bool = True, test: str = "test_speed[softmax]") -> dict[str, Any]:
    """A throughput entry whose rounds took these seconds (``with_std``: as results keep them since rounds
    record their spread; without: mean, min and max only, as older results)."""
    case = Case(model="softmax", optimizer="sgd", lr=0.1, steps=10)
    result = ThroughputResult(case_id=case.id, case=case.to_dict(), world_size=1, steps_per_round=10,
                              rounds=len(seconds), samples_per_round=1000, round_s=RoundTimes.of(seconds)).to_dict()
    if with_std:  # what RoundTimes records: the rounds' sample standard deviation
        assert result["round_s"]["std"] == pytest.approx(statistics.stdev(seconds))
    else:
        for key in ("std", "median"):
            del result["round_s"][key]
    return {"group": "speed", "name": test, "fullname": f"suite.py::{test}",
            "extra_info": {"convbench_throughput": result}}


def write(path: Path, entries: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps({"machine_info": {"node": "host"}, "benchmarks": entries}), encoding="utf-8")
    return path


def gate(capsys: pytest.CaptureFixture[str], tmp_path: Path, base: list[dict[str, Any]], new: list[dict[str, Any]],
         *options: str) -> tuple[int, str, str]:
    base_path, new_path = write(tmp_path / "base.json", base), write(tmp_path / "new.json", new)
    capsys.readouterr()
    code = main(["compare", str(base_path), str(new_path), *options])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def change(before: list[float], after: list[float]) -> float:
    return (statistics.fmean(after) - statistics.fmean(before)) / statistics.fmean(before)


# ------------------------------------------------------------------------------ no false alarms
def test_identical_runs_with_noisy_times_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before, after = [2.0, 2.3, 1.9], [2.2, 1.95, 2.4]  # the same code, timed twice on a noisy machine
    code, out, err = gate(capsys, tmp_path, seeds(before), seeds(after))
    assert code == 0, err
    row = compared(out)[CASE]
    assert row["time"] == f"{change(before, after):+.1%}" and row["status"] == "ok"
    assert "1 case compared: no regressions" in out


def test_one_run_each_is_not_enough_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = gate(capsys, tmp_path, [run(train_s=2.0)], [run(train_s=3.0)])
    assert code == 0, err
    assert compared(out)[CASE]["status"] == "ok (time +50.0% not judged: not enough data (1 run each; need 3))"
    assert "times not judged for 1 of 1 case: 1 with too few runs or rounds a side" in out


def test_one_run_each_judged_when_asked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = gate(capsys, tmp_path, [run(train_s=2.0)], [run(train_s=3.0)], "--min-time-samples", "1")
    assert code == 1
    assert regressions(out)[CASE] == "REGRESSION: slower: +50.0% (+1 s), 1 run each: no noise test"


def test_fewer_seeds_on_one_side_is_not_enough_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = gate(capsys, tmp_path, seeds([2.0, 2.0, 2.0]), seeds([4.0]))
    assert code == 0
    assert "not enough data (3 runs in BASE, 1 in NEW; need 3)" in compared(out)[CASE]["status"]


def test_real_slowdown_over_seeds_is_a_regression(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before, after = [2.0, 2.1, 1.95], [4.1, 3.9, 4.0]  # twice as slow, a small spread
    p = welch_p(before, after)
    assert p <= 0.01
    code, out, _ = gate(capsys, tmp_path, seeds(before), seeds(after))
    assert code == 1
    diff = statistics.fmean(after) - statistics.fmean(before)
    assert regressions(out)[CASE] == (f"REGRESSION: slower: {change(before, after):+.1%} ({diff:+.3g} s), "
                                      f"Welch p = {p:.2g}")


def test_overlapping_seeds_are_noise(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before, after = [2.0, 2.6, 1.8], [2.1, 3.0, 2.5]  # up by more than 10%, but the samples overlap
    p = welch_p(before, after)
    assert change(before, after) > 0.10 and p > 0.01
    code, out, _ = gate(capsys, tmp_path, seeds(before), seeds(after))
    assert code == 0
    assert compared(out)[CASE]["status"] == (f"ok (time {change(before, after):+.1%} within noise "
                                             f"(Welch p = {p:.2g} > 0.01))")


@pytest.mark.parametrize("side", ["BASE", "NEW"])
def test_busy_machine_is_not_judged(tmp_path: Path, capsys: pytest.CaptureFixture[str], side: str) -> None:
    before, after = [2.0, 2.1, 1.95], [4.1, 3.9, 4.0]
    base, new = seeds(before), seeds(after)
    busy_runs = base if side == "BASE" else new
    busy_runs[1] = run(1, train_s=[before, after][side == "NEW"][1], busy=True)
    code, out, _ = gate(capsys, tmp_path, base, new)
    assert code == 0
    assert compared(out)[CASE]["status"] == (f"ok (time {change(before, after):+.1%} not judged: busy machine in "
                                             f"{side} (1 of 3 runs))")
    assert "1 measured on a busy machine (--judge-busy)" in out
    code, out, _ = gate(capsys, tmp_path, base, new, "--judge-busy")
    assert code == 1 and list(regressions(out)) == [CASE]


def test_unknown_machine_load_is_judged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = gate(capsys, tmp_path, seeds([2.0, 2.1, 1.95], busy=None), seeds([4.1, 3.9, 4.0], busy=None))
    assert code == 1 and list(regressions(out)) == [CASE]


def test_small_absolute_change_of_a_short_run_is_no_regression(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    before, after = [0.070, 0.071, 0.069], [0.078, 0.079, 0.077]  # +11% of 0.07 s: 8 ms, every seed
    code, out, _ = gate(capsys, tmp_path, seeds(before), seeds(after))
    assert code == 0
    diff = statistics.fmean(after) - statistics.fmean(before)
    assert compared(out)[CASE]["status"] == f"ok (time {change(before, after):+.1%} but {diff:+.3g} s (<= 0.05 s))"
    code, _, _ = gate(capsys, tmp_path, seeds(before), seeds(after), "--min-time-diff", "0.005")
    assert code == 1


def test_faster_is_never_a_regression(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = gate(capsys, tmp_path, seeds([4.0, 4.1, 3.9]), seeds([2.0, 2.1, 1.9]), "--min-time-samples", "1")
    assert code == 0 and compared(out)[CASE]["status"] == "ok"


# ------------------------------------------------------------------------------------- quality
def test_accuracy_drop_with_one_seed_is_a_regression(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = gate(capsys, tmp_path, [run(accuracy=0.9)], [run(accuracy=0.85)])
    assert code == 1
    assert regressions(out)[CASE] == f"REGRESSION: final_test_accuracy {0.85 - 0.9:+.4g}, worse by more than 0.01"


def test_a_case_that_becomes_stalled_is_a_regression(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The verdict itself is judged, whatever the headline metric did (here it did not move)."""
    stall = Stall(step=100, reason="final train loss at chance level")
    code, out, _ = gate(capsys, tmp_path, seeds([2.0, 2.0, 2.0]), [run(s, stall=stall if s == 1 else None)
                                                                   for s in range(3)])
    assert code == 1
    assert "stalled" in regressions(out)[CASE]
    code, out, _ = gate(capsys, tmp_path, seeds([2.0, 2.0, 2.0]), seeds([2.0, 2.0, 2.0]))
    assert code == 0, out


def test_accuracy_is_judged_on_a_busy_machine(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = gate(capsys, tmp_path, [run(accuracy=0.9, busy=True)], [run(accuracy=0.85, busy=True)])
    assert code == 1 and list(regressions(out)) == [CASE]


@pytest.mark.parametrize(("before", "after", "code"), [([50], [60], 1), ([50], [54], 0),
                                                        ([50, 50, 50], [60, 60, 60], 1),
                                                        ([40, 60, 50], [45, 70, 55], 0)],
                         ids=["one-seed", "within-threshold", "seeds", "seed-noise"])
def test_more_steps_to_target_is_a_regression(tmp_path: Path, capsys: pytest.CaptureFixture[str], before: list[int],
                                              after: list[int], code: int) -> None:
    base = [run(seed, target_step=step) for seed, step in enumerate(before)]
    new = [run(seed, target_step=step) for seed, step in enumerate(after)]
    got, out, _ = gate(capsys, tmp_path, base, new)
    assert got == code
    grown = change([float(s) for s in before], [float(s) for s in after])
    row = compared(out)[CASE]
    assert row["steps_to_target"] == f"{statistics.fmean(before):.4g} -> {statistics.fmean(after):.4g}"
    if code:
        assert f"steps to target {grown:+.1%} > 10%" in row["status"]
    else:
        assert "REGRESSION" not in row["status"]


# ------------------------------------------------------------------------------------ matching
def test_no_matching_case_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = gate(capsys, tmp_path, [run(lr=0.1)], [run(lr=0.2)])
    assert code == 2 and out == ""
    (line,) = err.splitlines()
    assert line.startswith("convbench: error: no case of BASE (") and "compare runs of the same suite" in line
    assert "test_x[softmax-sgd-lr0.1-bs100]" in line and "test_x[softmax-sgd-lr0.2-bs100]" in line


# ----------------------------------------------------------------------------------- throughput
SPEED = "suite.py::test_speed[softmax]"


def test_throughput_slowdown_is_a_regression(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before, after = [0.50, 0.52, 0.49, 0.51, 0.50], [0.80, 0.78, 0.82, 0.79, 0.81]
    p = welch_p(before, after)
    code, out, _ = gate(capsys, tmp_path, [rounds(before)], [rounds(after)])
    assert code == 1
    row = compared(out)[SPEED]
    assert row["samples_per_s base"] == str(round(1000 / statistics.fmean(before)))
    assert row["samples_per_s new"] == str(round(1000 / statistics.fmean(after)))
    assert row["time"] == f"{change(before, after):+.1%}"
    assert row["status"].startswith("REGRESSION: slower") and f"Welch p = {p:.2g}" in row["status"]
    assert "1 case compared (1 throughput): 1 regression(s)" in out


def test_throughput_rounds_on_a_busy_machine_are_not_judged(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    before, after = [0.50, 0.52, 0.49, 0.51, 0.50], [0.80, 0.78, 0.82, 0.79, 0.81]  # a clear slowdown ...
    busy = rounds(after)
    busy["extra_info"]["convbench_throughput"]["machine_load"] = {"busy": True, "reason": "others used 80%"}
    code, out, _ = gate(capsys, tmp_path, [rounds(before)], [busy])
    assert code == 0  # ... measured while other work kept the machine busy: noted, not judged
    assert "not judged: busy machine in NEW" in compared(out)[SPEED]["status"]
    code, out, _ = gate(capsys, tmp_path, [rounds(before)], [busy], "--judge-busy")
    assert code == 1


def test_throughput_noise_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before, after = [0.50, 0.70, 0.45, 0.60, 0.52], [0.62, 0.48, 0.75, 0.58, 0.66]
    assert change(before, after) > 0.10 and welch_p(before, after) > 0.01
    code, out, _ = gate(capsys, tmp_path, [rounds(before)], [rounds(after)])
    assert code == 0 and compared(out)[SPEED]["status"].startswith("ok (time")


@pytest.mark.parametrize(("after", "code"), [([0.80, 0.78, 0.82, 0.79, 0.81], 1), ([0.80, 0.50, 0.82, 0.79, 0.81], 0)],
                         ids=["apart", "overlapping"])
def test_throughput_without_round_spread(tmp_path: Path, capsys: pytest.CaptureFixture[str], after: list[float],
                                         code: int) -> None:
    before = [0.50, 0.52, 0.49, 0.51, 0.50]
    got, out, _ = gate(capsys, tmp_path, [rounds(before, with_std=False)], [rounds(after, with_std=False)])
    assert got == code
    status = compared(out)[SPEED]["status"]
    if code:  # 5 rounds a side all apart: by chance once in C(10, 5) = 252
        assert status.endswith(f"every NEW round slower than every BASE round (p = {1 / math.comb(10, 5):.2g})")
    else:
        assert "within noise (rounds overlap)" in status


def test_throughput_too_few_rounds_without_spread(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before, after = [0.50, 0.52, 0.49], [0.80, 0.78, 0.82]  # all apart, but by chance once in C(6, 3) = 20
    code, out, _ = gate(capsys, tmp_path, [rounds(before, with_std=False)], [rounds(after, with_std=False)])
    assert code == 0
    assert f"p = {1 / math.comb(6, 3):.2g} > 0.01" in compared(out)[SPEED]["status"]


def test_throughput_in_one_file_only_is_listed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = gate(capsys, tmp_path, [run(), rounds([0.5, 0.5, 0.5])], [run()])
    assert code == 0
    assert f"only in BASE (1, not compared):\n  {SPEED} [throughput]" in out


# ------------------------------------------------------------------------------------- the rule
def test_false_alarm_rate_under_noise_is_below_alpha() -> None:
    """The same code timed twice with skewed noise (lognormal, 30% spread): slowdowns are found in under
    alpha of the trials; a real one (x1.5, 5% spread) in nearly all (with 3 runs a
    side, Welch's test has few degrees of freedom)."""
    rng, rule = np.random.default_rng(0), TimeRule()
    trials = 2000

    def alarms(factor: float, sigma: float) -> float:
        found = 0
        for _ in range(trials):
            base, new = rng.lognormal(0, sigma, 3) * 2.0, rng.lognormal(0, sigma, 3) * 2.0 * factor
            found += judge_time(TimeSamples.of(list(base)), TimeSamples.of(list(new)), rule).problem is not None
        return found / trials

    assert alarms(1.0, 0.3) < rule.alpha
    assert alarms(1.5, 0.05) > 0.95


def test_status_says_whether_times_could_be_judged() -> None:
    rule = TimeRule()
    three, one = TimeSamples.of([1.0, 1.1, 0.9]), TimeSamples.of([1.0])
    assert judge_time(three, three, rule).status == JUDGED
    assert judge_time(three, one, rule).status == TOO_FEW
    busy = TimeSamples.of([1.0, 1.1, 0.9], busy=1)
    assert judge_time(three, busy, rule).status == BUSY
    assert judge_time(three, busy, TimeRule(judge_busy=True)).status == JUDGED


@pytest.mark.parametrize(("option", "value"), [("--alpha", "0"), ("--alpha", "1.5"), ("--min-time-samples", "0"),
                                               ("--min-time-samples", "2.5"), ("--min-time-diff", "-1"),
                                               ("--steps-threshold", "x")])
def test_bad_option_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str,
                                        value: str) -> None:
    code, out, err = gate(capsys, tmp_path, [run()], [run()], option, value)
    assert code == 2 and out == ""
    (line,) = err.splitlines()
    assert line.startswith(f"convbench: error: {option} ") and repr(value) in line
