"""The convbench pytest plugin, exercised on inner pytest sessions run through `pytester`.

Most inner sessions run in this process (fast: torch is imported once and mnist-5k is loaded once);
the interrupted session runs in a subprocess so that its KeyboardInterrupt cannot reach this one.

pytester's in-process runs drop every module first imported during a run from sys.modules when the run
ends, and torch cannot be imported a second time in one process; so everything a case needs (torch,
torchvision, pandas, mlxtend, the engine and the built-in plugins) is imported here, before any inner
session, and kept.
"""

from __future__ import annotations

import errno
import json
import os
import re
import textwrap
import types
from pathlib import Path

import mlxtend  # noqa: F401
import pandas  # noqa: F401
import pytest
import torch
import torchvision

import convbench
import convbench.engine
import convbench.progress_line
import convbench.registry
import convbench.report.build
import convbench_plugins.datasets
import convbench_plugins.models
import convbench_plugins.optimizers  # noqa: F401
from convbench import results_file
from convbench.cli import main as convbench_main
from convbench.data import DatasetSplits
from convbench.pytest_plugin import RECORD_SCHEMA, SCALE_ENV
from convbench.report.load import load as load_results
from convbench.result import SCHEMA

pytest_plugins = ["pytester"]

STEPS = 20
EVAL_EVERY = 5

# Few, small evaluations keep each inner case well under a second on two cores.
HEADER = f"""
import pytest
from convbench import Case, grid

BASE = Case(model="softmax", optimizer="sgd", lr=0.5, dataset="mnist-5k", steps={STEPS}, eval_every={EVAL_EVERY},
            eval_train_samples=500)
"""


@pytest.fixture(autouse=True)
def _isolated(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every inner session sees the default scale and has its own rootdir."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # for the subprocess, as conftest's `_one_torch_thread` here
    monkeypatch.delenv(SCALE_ENV, raising=False)
    monkeypatch.delenv("PYTEST_ADDOPTS", raising=False)
    pytester.makeini("[pytest]\n")


def write_suite(pytester: pytest.Pytester, body: str, name: str = "test_suite") -> Path:
    return pytester.makepyfile(**{name: HEADER + textwrap.dedent(body)})


def run_interrupted(pytester: pytest.Pytester) -> pytest.RunResult:
    """The suite in a subprocess (its KeyboardInterrupt must not reach this session), which it interrupts."""
    result = pytester.runpytest_subprocess("--convbench-results", "results.jsonl", "--convbench-no-progress",
                                           "--benchmark-json", "out.json", "-p", "no:cacheprovider", timeout=120)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*KeyboardInterrupt*"])
    return result


def read_results(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def call_outcomes(result: pytest.RunResult) -> dict[str, str]:
    """Test name -> outcome of its call phase, as pytest itself reported it."""
    return {
        report.nodeid.split("::")[-1]: report.outcome
        for report in result.reprec.getreports("pytest_runtest_logreport")
        if report.when == "call"
    }


def bracket_id(test_name: str) -> str:
    return test_name[test_name.index("[") + 1:-1]


def failure_section(lines: list[str], test_name: str) -> list[str]:
    """The non-blank lines pytest printed under the FAILURES header of one test."""
    start = next(i for i, line in enumerate(lines) if re.match(rf"^_+ {re.escape(test_name)} _+$", line))
    section = []
    for line in lines[start + 1:]:
        if re.match(r"^(_{3,}|={3,}|-{3,})", line):
            break
        if line.strip():
            section.append(line)
    return section


PASS_AND_FAIL = """
@pytest.mark.parametrize("case", grid(BASE, lr=[0.5]))
def test_converges(convergence, case):
    result = convergence(case)
    assert result.steps == case.steps


@pytest.mark.parametrize("case", [BASE.replace(optimizer="adam", lr=0.01).param()])
def test_fails(convergence, case):
    convergence(case)
    assert False, "deliberate failure"
"""


ONE_CASE = """
@pytest.mark.parametrize("case", [BASE.param()])
def test_one(convergence, case):
    convergence(case)
"""


# ------------------------------------------------------------------------------ benchmark JSON
def test_benchmark_json_holds_each_case_with_its_outcome(pytester: pytest.Pytester) -> None:
    write_suite(pytester, PASS_AND_FAIL)
    result = pytester.runpytest("--benchmark-json", "out.json", "--convbench-no-progress")
    result.assert_outcomes(passed=1, failed=1)
    outcomes = call_outcomes(result)
    document = json.loads((pytester.path / "out.json").read_text(encoding="utf-8"))

    benchmarks = {b["name"]: b for b in document["benchmarks"]}
    assert set(benchmarks) == set(outcomes)
    assert sorted(outcomes.values()) == ["failed", "passed"]
    for name, bench in benchmarks.items():
        record = bench["extra_info"]["convbench"]
        assert record["schema"] == SCHEMA
        assert record["outcome"] == outcomes[name]
        assert record["case_id"] == bracket_id(name)
        function = name.split("[")[0]
        assert bench["group"] == function
        assert record["group"] == function
        assert record["scale"] == "quick"
        if outcomes[name] == "passed":
            assert record["error"] is None
        else:
            assert "deliberate failure" in record["error"]


def test_benchmark_json_numbers_are_consistent(pytester: pytest.Pytester) -> None:
    write_suite(pytester, PASS_AND_FAIL)
    pytester.runpytest("--benchmark-json", "out.json", "--convbench-no-progress").assert_outcomes(
        passed=1, failed=1)
    document = json.loads((pytester.path / "out.json").read_text(encoding="utf-8"))
    assert len(document["benchmarks"]) == 2
    for bench in document["benchmarks"]:
        record = bench["extra_info"]["convbench"]
        case = record["case"]
        assert record["steps"] == record["steps_planned"] == case["steps"] == STEPS
        assert record["samples"] == record["steps"] * case["batch_size"]
        assert not record["diverged"] and record["divergence"] is None
        timing = record["timing"]
        assert timing["train_s"] > 0
        assert timing["train_per_step_s"] == pytest.approx(timing["train_s"] / record["steps"])
        assert record["samples_per_s"] == pytest.approx(record["samples"] / timing["train_s"])
        evals = record["curves"]["eval"]
        assert evals["step"] == list(range(0, record["steps"] + 1, case["eval_every"]))
        metric_keys = [k for k in evals if k.split("_")[0] in ("train", "val", "test")]
        assert {"train_loss", "val_accuracy", "test_accuracy"} <= set(metric_keys)
        assert set(record["final"]) == set(record["best"]) == set(metric_keys)
        for key in metric_keys:
            assert record["final"][key] == evals[key][-1], key
            best = max(evals[key]) if key.endswith("accuracy") else min(evals[key])
            assert record["best"][key] == best, key
        train_curve = record["curves"]["train"]
        assert train_curve["step"][-1] == record["steps"]
        assert len(train_curve["loss"]) == len(train_curve["step"])


def test_benchmark_json_machine_info(pytester: pytest.Pytester) -> None:
    write_suite(pytester, PASS_AND_FAIL)
    pytester.runpytest("--benchmark-json", "out.json", "--convbench-no-progress",
                       "--convbench-scale", "full")
    info = json.loads((pytester.path / "out.json").read_text(encoding="utf-8"))["machine_info"]["convbench"]
    assert info["version"] == convbench.__version__
    assert info["torch"] == torch.__version__
    assert info["torchvision"] == torchvision.__version__
    assert info["cuda_available"] == torch.cuda.is_available()
    assert info["torch_threads"] == torch.get_num_threads()
    assert info["scale"] == "full"
    if not torch.cuda.is_available():
        assert info["devices"] == ["cpu"]


def test_benchmark_group_marker_overrides_the_default_group(pytester: pytest.Pytester) -> None:
    write_suite(pytester, """
        @pytest.mark.benchmark(group="my-study")
        @pytest.mark.parametrize("case", [BASE.param()])
        def test_grouped(convergence, case):
            convergence(case)
    """)
    pytester.runpytest("--benchmark-json", "out.json", "--convbench-results", "r.jsonl",
                       "--convbench-no-progress").assert_outcomes(passed=1)
    (bench,) = json.loads((pytester.path / "out.json").read_text(encoding="utf-8"))["benchmarks"]
    assert bench["group"] == bench["extra_info"]["convbench"]["group"] == "my-study"
    (line,) = read_results(pytester.path / "r.jsonl")
    assert line["group"] == "my-study"


# -------------------------------------------------------------------------------- results file
def test_results_file_defaults_to_rootdir_and_gets_a_line_per_case(pytester: pytest.Pytester) -> None:
    write_suite(pytester, PASS_AND_FAIL)
    sub = pytester.mkdir("elsewhere")
    # Run from a subfolder: the default path is relative to the rootdir, not to the working directory.
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(sub)
        result = pytester.runpytest(str(pytester.path), "--convbench-no-progress")
    result.assert_outcomes(passed=1, failed=1)
    outcomes = call_outcomes(result)
    assert not (sub / ".convbench").exists()
    lines = read_results(pytester.path / ".convbench" / "results.jsonl")
    assert len(lines) == 2
    nodeids = {r.nodeid for r in result.reprec.getreports("pytest_runtest_logreport") if r.when == "call"}
    assert {line["fullname"] for line in lines} == nodeids
    for line in lines:
        record = line["extra_info"]["convbench"]
        assert line["schema"] == RECORD_SCHEMA
        assert record["outcome"] == outcomes[line["name"]]
        assert record["case_id"] == bracket_id(line["name"])
        assert line["group"] == record["group"] == line["name"].split("[")[0]
        assert record["schema"] == SCHEMA
    assert len({line["session"] for line in lines}) == 1


def test_results_file_is_appended_across_sessions(pytester: pytest.Pytester) -> None:
    write_suite(pytester, ONE_CASE)
    for _ in range(2):
        pytester.runpytest("--convbench-results", "out/results.jsonl", "--convbench-no-progress").assert_outcomes(
            passed=1)
    lines = read_results(pytester.path / "out" / "results.jsonl")
    assert len(lines) == 2
    assert lines[0]["fullname"] == lines[1]["fullname"]
    assert len({line["session"] for line in lines}) == 2
    assert not (pytester.path / ".convbench").exists()


def test_results_none_writes_nothing(pytester: pytest.Pytester) -> None:
    write_suite(pytester, PASS_AND_FAIL)
    pytester.runpytest("--convbench-results", "none", "--convbench-no-progress").assert_outcomes(
        passed=1, failed=1)
    assert not (pytester.path / ".convbench").exists()
    assert list(pytester.path.rglob("*.jsonl")) == []


@pytest.mark.slow
def test_interrupted_session_keeps_the_finished_case(pytester: pytest.Pytester) -> None:
    write_suite(pytester, """
        @pytest.mark.parametrize("case", [BASE.param()])
        def test_first(convergence, case):
            convergence(case)


        @pytest.mark.parametrize("case", [BASE.replace(lr=0.1).param()])
        def test_second(convergence, case):
            convergence(case)
            raise KeyboardInterrupt


        @pytest.mark.parametrize("case", [BASE.replace(lr=0.2).param()])
        def test_third(convergence, case):
            convergence(case)
    """)
    run_interrupted(pytester)
    lines = {line["name"].split("[")[0]: line["extra_info"]["convbench"]
             for line in read_results(pytester.path / "results.jsonl")}
    assert set(lines) == {"test_first", "test_second"}
    assert lines["test_first"]["outcome"] == "passed" and lines["test_first"]["steps"] == STEPS
    # the second case was measured in full before its test was interrupted: kept, and said to be interrupted
    assert (lines["test_second"]["outcome"], lines["test_second"]["error"]) == ("interrupted", "KeyboardInterrupt")
    assert lines["test_second"]["steps"] == STEPS
    benchmarks = {bench["name"].split("[")[0]: bench["extra_info"]["convbench"]
                  for bench in json.loads((pytester.path / "out.json").read_text(encoding="utf-8"))["benchmarks"]}
    assert benchmarks == lines


INTERRUPTING_MODEL = """
import math
import os
import signal

from torch import nn

import convbench

# A session started in the background (`cmd &`, nohup) inherits SIGINT ignored, and Python then leaves it
# ignored: these tests are about Ctrl-C reaching pytest, so the inner session takes Python's own handler.
signal.signal(signal.SIGINT, signal.default_int_handler)


class Interrupting(nn.Module):
    \"\"\"A linear model whose process gets SIGINT (Ctrl-C) during its `at_step`-th training step.\"\"\"

    def __init__(self, input_shape, num_outputs, at_step):
        super().__init__()
        self.linear = nn.Linear(math.prod(input_shape), num_outputs)
        self.steps, self.at_step = 0, at_step

    def forward(self, x):
        if self.training:
            self.steps += 1
            if self.steps == self.at_step:
                os.kill(os.getpid(), signal.SIGINT)
        return self.linear(x.flatten(1))


@convbench.hookimpl
def convbench_register_models(register):
    register("interrupting", Interrupting)
"""

#: The interrupted test: SIGINT in the 8th of 20 training steps, or in the 2nd of 3 throughput rounds of 2 steps
#: (after 1 warm-up step and the first round): either way the case has no result yet.
INTERRUPTED = {
    "convergence": """
        @pytest.mark.parametrize("case", [BASE.replace(model="interrupting", model_kwargs={"at_step": 8}).param()])
        def test_c_interrupted(convergence, case):
            convergence(case)
    """,
    "throughput": """
        @pytest.mark.parametrize("case", [BASE.replace(model="interrupting", model_kwargs={"at_step": 4}).param()])
        def test_c_interrupted(throughput, case):
            throughput(case, steps=2, rounds=3, warmup_steps=1)
    """,
}


@pytest.mark.slow
@pytest.mark.parametrize("interrupted", INTERRUPTED)
def test_ctrl_c_mid_case_keeps_every_finished_case_in_the_json_and_the_results_file(pytester: pytest.Pytester,
                                                                                     interrupted: str) -> None:
    pytester.makeconftest(INTERRUPTING_MODEL)
    write_suite(pytester, """
        @pytest.mark.parametrize("case", [BASE.param()])
        def test_a_converges(convergence, case):
            convergence(case)


        @pytest.mark.parametrize("case", [BASE.param()])
        def test_b_speed(throughput, case):
            throughput(case, steps=2, rounds=3, warmup_steps=1)
    """ + INTERRUPTED[interrupted] + """

        @pytest.mark.parametrize("case", [BASE.replace(lr=0.2).param()])
        def test_d_never_runs(convergence, case):
            convergence(case)
    """)
    result = run_interrupted(pytester)
    output = result.stdout.str() + result.stderr.str()
    assert "INTERNALERROR" not in output and "empty sequence" not in output
    # pytest-benchmark's JSON is written, with the two finished cases only
    document = json.loads((pytester.path / "out.json").read_text(encoding="utf-8"))
    finished = {"test_a_converges", "test_b_speed"}
    assert {bench["name"].split("[")[0] for bench in document["benchmarks"]} == finished
    # the results file holds the same two cases, each written as its test ended
    lines = read_results(pytester.path / "results.jsonl")
    assert {line["name"].split("[")[0] for line in lines} == finished
    for path in (pytester.path / "out.json", pytester.path / "results.jsonl"):
        loaded = load_results(path)
        assert [record["steps"] for record in loaded.records] == [STEPS]
        assert [(speed["rounds"], speed["outcome"]) for speed in loaded.throughput] == [(3, "passed")]


THREE_CASES = """
@pytest.mark.parametrize("case", grid(BASE, lr=[0.5, 0.2, 0.1]))
def test_three(convergence, case):
    convergence(case)
"""


def test_a_session_after_a_killed_one_does_not_glue_its_line_to_the_cut_one(pytester: pytest.Pytester) -> None:
    write_suite(pytester, ONE_CASE)
    path = pytester.path / "results.jsonl"
    pytester.runpytest("--convbench-results", str(path), "--convbench-no-progress").assert_outcomes(passed=1)
    (whole,) = path.read_bytes().splitlines()
    with path.open("ab") as stream:
        stream.write(whole[: len(whole) // 2])  # a session killed while writing its line: no newline
    pytester.runpytest("--convbench-results", str(path), "--convbench-no-progress").assert_outcomes(passed=1)
    loaded = load_results(path)
    assert len(loaded.records) == 2 and len({r["case_id"] for r in loaded.records}) == 1
    (warning,) = loaded.warnings
    assert "skipped 1 unreadable line" in warning and re.search(r"\bline 2\b", warning), warning


@pytest.mark.parametrize("where", ["folder", "under-a-file"])
def test_a_results_path_that_cannot_be_appended_to_stops_the_session_before_any_case(
        pytester: pytest.Pytester, where: str) -> None:
    write_suite(pytester, THREE_CASES)
    if where == "folder":
        path = pytester.mkdir("results.jsonl")
    else:
        path = pytester.path / "notes.txt" / "results.jsonl"
        (pytester.path / "notes.txt").write_text("a file, not a folder\n")
    result = pytester.runpytest("--convbench-results", str(path))  # progress on: a line would show training
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.errlines if str(path) in line]
    assert len(errors) == 1 and "--convbench-results" in errors[0], result.errlines
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    assert not [line for line in result.outlines if re.search(r"\] step \d+/\d+ ", line)]
    assert call_outcomes(result) == {}


def test_a_results_path_is_not_created_by_a_session_without_cases(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_plain="def test_nothing_to_record():\n    pass\n")
    pytester.runpytest().assert_outcomes(passed=1)
    assert not (pytester.path / ".convbench").exists()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full, a device that is always full")
def test_a_full_disk_loses_no_case_and_keeps_the_benchmark_json(pytester: pytest.Pytester) -> None:
    write_suite(pytester, THREE_CASES)
    result = pytester.runpytest("--convbench-results", "/dev/full", "--benchmark-json", "out.json",
                                "--convbench-no-progress")
    result.assert_outcomes(passed=3)
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    warnings = [line for line in result.outlines if "could not append" in line]
    assert len(warnings) == 1 and "/dev/full" in warnings[0] and "No space left on device" in warnings[0], warnings
    assert [line for line in result.outlines if "3 finished cases are missing from /dev/full" in line]
    benchmarks = json.loads((pytester.path / "out.json").read_text())["benchmarks"]
    assert len({b["extra_info"]["convbench"]["case_id"] for b in benchmarks}) == 3


def test_a_failed_write_costs_only_its_own_line(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write, calls = results_file.write_line, []

    def full_on_the_second(fd: int, data: bytes) -> None:
        calls.append(data)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(fd, data)

    monkeypatch.setattr(results_file, "write_line", full_on_the_second)
    write_suite(pytester, THREE_CASES)
    result = pytester.runpytest("--convbench-results", "r.jsonl", "--benchmark-json", "out.json",
                                "--convbench-no-progress")
    result.assert_outcomes(passed=3)
    assert len(calls) == 3
    names = list(call_outcomes(result))
    assert [line["name"] for line in read_results(pytester.path / "r.jsonl")] == [names[0], names[2]]
    assert len([line for line in result.outlines if "could not append" in line]) == 1
    assert [line for line in result.outlines if f"1 finished case is missing from {pytester.path / 'r.jsonl'}" in line
            and names[1] in line]
    assert len(json.loads((pytester.path / "out.json").read_text())["benchmarks"]) == 3


def test_xfailed_case_is_recorded_as_xfailed(pytester: pytest.Pytester) -> None:
    write_suite(pytester, """
        @pytest.mark.parametrize("case", [BASE.param(pytest.mark.xfail(reason="known", strict=True))])
        def test_expected_to_fail(convergence, case):
            result = convergence(case)
            assert result.steps > case.steps
    """)
    pytester.runpytest("--convbench-results", "r.jsonl", "--convbench-no-progress").assert_outcomes(xfailed=1)
    (line,) = read_results(pytester.path / "r.jsonl")
    assert line["extra_info"]["convbench"]["outcome"] == "xfailed"


def test_xpassed_case_is_not_recorded_as_xfailed(pytester: pytest.Pytester) -> None:
    write_suite(pytester, """
        @pytest.mark.parametrize("case", [BASE.param(pytest.mark.xfail(reason="flaky", strict=False))])
        def test_unexpectedly_passes(convergence, case):
            convergence(case)
    """)
    pytester.runpytest("--convbench-results", "r.jsonl", "--convbench-no-progress").assert_outcomes(xpassed=1)
    (line,) = read_results(pytester.path / "r.jsonl")
    assert line["extra_info"]["convbench"]["outcome"] == "xpassed"


# ----------------------------------------------------------------------------------- user errors
TYPO_SUITE = """
@pytest.mark.parametrize("case", [BASE.param()])
def test_a_before(convergence, case):
    convergence(case)


@pytest.mark.parametrize("case", [BASE.replace(optimizer="adma").param()])
def test_b_typo(convergence, case):
    convergence(case)


@pytest.mark.parametrize("case", grid(BASE, optimizer=["adam"], lr=[0.01]))
def test_c_after(convergence, case):
    convergence(case)
"""


def test_unknown_optimizer_fails_only_its_test_with_a_hint(pytester: pytest.Pytester) -> None:
    write_suite(pytester, TYPO_SUITE)
    result = pytester.runpytest("--convbench-results", "r.jsonl", "--convbench-no-progress")
    result.assert_outcomes(passed=2, failed=1)
    outcomes = call_outcomes(result)
    (typo,) = [name for name, outcome in outcomes.items() if outcome == "failed"]
    assert typo.startswith("test_b_typo[")
    section = failure_section(result.outlines, typo)
    assert any("'adma'" in line and re.search(r"did you mean [^?]*'adam'", line) for line in section), section
    output = result.stdout.str()
    for internal in ("engine.py", "components.py", "loading.py", "rank_share.py", "launch.py", "pool.py",
                     "registry.py", "pytest_plugin.py", "Traceback"):
        assert internal not in output
    lines = {line["name"]: line["extra_info"]["convbench"] for line in read_results(pytester.path / "r.jsonl")}
    assert lines[typo]["outcome"] == "failed"
    assert "'adma'" in lines[typo]["error"] and "'adam'" in lines[typo]["error"]
    assert [lines[name]["outcome"] for name in sorted(lines) if name != typo] == ["passed", "passed"]


def test_unknown_optimizer_failure_is_one_line(pytester: pytest.Pytester) -> None:
    write_suite(pytester, TYPO_SUITE)
    result = pytester.runpytest("--convbench-results", "none", "--convbench-no-progress")
    result.assert_outcomes(passed=2, failed=1)
    (typo,) = [name for name, outcome in call_outcomes(result).items() if outcome == "failed"]
    section = failure_section(result.outlines, typo)
    assert len(section) == 1, section


def test_results_file_with_an_errored_case_can_be_reported(pytester: pytest.Pytester,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    write_suite(pytester, TYPO_SUITE)
    pytester.runpytest("--convbench-results", "r.jsonl", "--convbench-no-progress").assert_outcomes(
        passed=2, failed=1)
    finished = [line for line in read_results(pytester.path / "r.jsonl")
                if line["extra_info"]["convbench"]["outcome"] == "passed"]
    assert len(finished) == 2
    capsys.readouterr()
    code = convbench_main(["report", str(pytester.path / "r.jsonl"), "-o", str(pytester.path / "report"),
                           "--no-figures"])
    out = capsys.readouterr().out
    assert code == 0
    for line in finished:
        assert line["extra_info"]["convbench"]["case_id"] in out


# ------------------------------------------------------------------------------------- scales
SCALED_SUITE = """
SCALED = Case(model="softmax", optimizer="sgd", lr=0.5, steps=30, scales={"quick": {"steps": 10}})


@pytest.mark.parametrize("case", [SCALED.param()])
def test_scaled(convergence, case):
    result = convergence(case)
    assert result.case_id == case.id
"""


@pytest.mark.parametrize(("args", "env", "expected_steps", "expected_scale"), [
    ((), None, 10, "quick"),
    (("--convbench-scale", "quick"), None, 10, "quick"),
    (("--convbench-scale", "full"), None, 30, "full"),
    ((), "full", 30, "full"),
], ids=["default", "quick", "full", "env-full"])
def test_scale_option_applies_the_scale_profile(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                                args: tuple[str, ...], env: str | None, expected_steps: int,
                                                expected_scale: str) -> None:
    if env is not None:
        monkeypatch.setenv(SCALE_ENV, env)
    write_suite(pytester, SCALED_SUITE)
    result = pytester.runpytest("--convbench-results", "r.jsonl", "--convbench-no-progress", *args)
    result.assert_outcomes(passed=1)
    (line,) = read_results(pytester.path / "r.jsonl")
    record = line["extra_info"]["convbench"]
    assert record["steps"] == record["case"]["steps"] == expected_steps
    assert record["scale"] == expected_scale
    assert record["case_id"] == bracket_id(line["name"])


RESCALED_SUITE = """
RESCALED = Case(model="softmax", optimizer="sgd", lr=0.5, steps=30, eval_every=10,
                scales={"quick": {"steps": 10, "lr": 0.1, "batch_size": 50}})


@pytest.mark.parametrize("case", [RESCALED.param(), *grid(RESCALED, optimizer=["adam"], lr=[0.01])])
def test_rescaled(convergence, case):
    convergence(case)
"""


def test_case_id_is_the_same_at_both_scales(pytester: pytest.Pytester) -> None:
    """Even when the quick profile changes fields that make up the id (lr, batch size)."""
    write_suite(pytester, RESCALED_SUITE)
    pytester.runpytest("--convbench-results", "quick.jsonl", "--convbench-no-progress").assert_outcomes(passed=2)
    pytester.runpytest("--convbench-results", "full.jsonl", "--convbench-no-progress",
                       "--convbench-scale", "full").assert_outcomes(passed=2)
    quick = {line["name"]: line["extra_info"]["convbench"] for line in read_results(pytester.path / "quick.jsonl")}
    full = {line["name"]: line["extra_info"]["convbench"] for line in read_results(pytester.path / "full.jsonl")}
    assert set(quick) == set(full) and len(quick) == 2
    for name in quick:
        assert (quick[name]["steps"], quick[name]["case"]["batch_size"]) == (10, 50)
        assert (full[name]["steps"], full[name]["case"]["batch_size"]) == (30, 100)
        assert quick[name]["case"]["lr"] == 0.1 != full[name]["case"]["lr"]
        assert quick[name]["case_id"] == full[name]["case_id"] == bracket_id(name)


# ------------------------------------------------------------------------------------ progress
@pytest.mark.parametrize("interval", [0.0, 3600.0], ids=["every-evaluation", "first-and-last"])
def test_progress_lines_are_printed_while_the_case_runs(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                                        interval: float) -> None:
    """Outside a terminal (as here) a case prints plain lines: its first and last evaluation, and others
    at most every LOG_INTERVAL_S seconds."""
    monkeypatch.setattr(convbench.progress_line, "LOG_INTERVAL_S", interval)
    write_suite(pytester, ONE_CASE)
    result = pytester.runpytest("-v", "--convbench-results", "none")
    result.assert_outcomes(passed=1)
    (name,) = call_outcomes(result)
    case_id = bracket_id(name)
    pattern = re.compile(rf"^\[1/1\] {re.escape(case_id)}  step (\d+)/(\d+)  loss \S+  acc 0\.\d+  \d+s")
    found = [(i, pattern.match(line)) for i, line in enumerate(result.outlines)]
    progress = [(i, int(m.group(1)), int(m.group(2))) for i, m in found if m]
    assert progress, result.outlines
    steps = [step for _, step, _ in progress]
    every = list(range(0, STEPS + 1, EVAL_EVERY))
    assert steps == (every if interval == 0 else [0, STEPS])
    assert {total for _, _, total in progress} == {STEPS}
    # Printed during the test: after pytest names it (-v) and before it reports PASSED.
    started = next(i for i, line in enumerate(result.outlines) if line.startswith(f"test_suite.py::{name}"))
    passed = next(i for i, line in enumerate(result.outlines) if f"{name} PASSED" in line)
    assert started < progress[0][0] and progress[-1][0] < passed


def test_no_progress_option_silences_progress_lines(pytester: pytest.Pytester) -> None:
    write_suite(pytester, ONE_CASE)
    result = pytester.runpytest("-v", "--convbench-results", "none", "--convbench-no-progress")
    result.assert_outcomes(passed=1)
    (name,) = call_outcomes(result)
    assert not [line for line in result.outlines if re.search(r"\] step \d+/\d+ ", line)]
    assert f"[{bracket_id(name)}]" in result.stdout.str()  # the test id itself is still shown


# --------------------------------------------------------------------------------- bad options
@pytest.mark.parametrize("value", ["-1", "nan", "inf", "-inf", "often"])
def test_a_bad_telemetry_interval_is_a_usage_error_before_any_case(pytester: pytest.Pytester, value: str) -> None:
    write_suite(pytester, ONE_CASE)
    result = pytester.runpytest(f"--convbench-telemetry-interval={value}", "--convbench-results", "r.jsonl")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    (error,) = [line for line in result.errlines if "--convbench-telemetry-interval" in line]
    assert repr(value) in error and ">= 0" in error, error
    assert "test session starts" not in result.stdout.str() and not (pytester.path / "r.jsonl").exists()


@pytest.mark.parametrize("value", ["0", "0.5"])
def test_a_telemetry_interval_of_zero_or_more_is_accepted(pytester: pytest.Pytester, value: str) -> None:
    write_suite(pytester, f"""
        @pytest.mark.parametrize("case", [BASE.param()])
        def test_one(convergence, case):
            assert (convergence(case).telemetry is None) == {float(value) == 0}
    """)
    pytester.runpytest(f"--convbench-telemetry-interval={value}", "--convbench-results", "none",
                       "--convbench-no-progress").assert_outcomes(passed=1)


def test_a_data_root_that_is_a_file_is_a_usage_error(pytester: pytest.Pytester) -> None:
    write_suite(pytester, ONE_CASE)
    not_a_folder = pytester.path / "data.tar"
    not_a_folder.write_bytes(b"")
    result = pytester.runpytest("--convbench-data-root", str(not_a_folder), "--convbench-results", "none")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    (error,) = [line for line in result.errlines if "--convbench-data-root" in line]
    assert str(not_a_folder) in error and "not a folder" in error, error
    assert "test session starts" not in result.stdout.str()


def test_a_world_size_given_twice_is_a_usage_error(pytester: pytest.Pytester) -> None:
    write_suite(pytester, ONE_CASE)
    result = pytester.runpytest("--convbench-world-sizes", "1,2,1", "--convbench-results", "none")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    (error,) = [line for line in result.errlines if "--convbench-world-sizes" in line]
    assert "'1,2,1'" in error and "twice" in error, error


# ------------------------------------------------------------------------------ data settings
def test_data_root_and_download_options_reach_the_settings(pytester: pytest.Pytester) -> None:
    root = pytester.path / "datasets"
    pytester.makepyfile(test_settings=f"""
        from pathlib import Path


        def test_given(convbench_settings, pytestconfig):
            if pytestconfig.getoption("convbench_data_root"):
                assert convbench_settings.data_root == Path({str(root)!r})
                assert convbench_settings.download is True
            else:
                assert convbench_settings.data_root is None
                assert convbench_settings.download is False
    """)
    pytester.runpytest("--convbench-data-root", str(root), "--convbench-download").assert_outcomes(passed=1)
    pytester.runpytest().assert_outcomes(passed=1)


def _probe_dataset_plugin(calls: list[tuple[Path, bool]]) -> types.ModuleType:
    plugin = types.ModuleType("convbench_probe")

    def probe(root: Path, download: bool = False) -> DatasetSplits:
        calls.append((Path(root), download))
        generator = torch.Generator().manual_seed(0)
        inputs = torch.randn(200, 8, generator=generator)
        labels = (inputs[:, 0] > 0).long()
        return DatasetSplits(train=(inputs[:150], labels[:150]), test=(inputs[150:], labels[150:]), num_outputs=2)

    @convbench.hookimpl
    def convbench_register_datasets(register):
        register("probe", probe, description="records where it was asked to load from")

    plugin.convbench_register_datasets = convbench_register_datasets
    return plugin


@pytest.mark.parametrize("download", [False, True], ids=["no-download", "download"])
def test_data_root_and_download_reach_the_dataset(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                                  download: bool) -> None:
    calls: list[tuple[Path, bool]] = []
    registry = convbench.registry.load_registry(entry_points=False,
                                                extra_plugins=[("convbench_probe", _probe_dataset_plugin(calls))])
    monkeypatch.setattr(convbench.registry, "_registry", registry)
    write_suite(pytester, """
        @pytest.mark.parametrize("case", [BASE.replace(dataset="probe", batch_size=50, steps=5).param()])
        def test_probe(convergence, case):
            assert convergence(case).steps == case.steps
    """)
    root = pytester.path / "data-root"
    args = ["--convbench-results", "none", "--convbench-no-progress", "--convbench-data-root", str(root)]
    pytester.runpytest(*args, *(["--convbench-download"] if download else [])).assert_outcomes(passed=1)
    assert calls == [(root, download)]


def test_missing_dataset_fails_with_a_hint_to_download(pytester: pytest.Pytester) -> None:
    # Inside pytester.path: pytest takes existing paths among the arguments into account for the rootdir.
    empty = pytester.mkdir("empty-data-root")
    write_suite(pytester, """
        @pytest.mark.parametrize("case", [BASE.replace(dataset="mnist").param()])
        def test_full_mnist(convergence, case):
            convergence(case)
    """)
    result = pytester.runpytest("--convbench-data-root", str(empty), "--convbench-results", "r.jsonl",
                                "--convbench-no-progress")
    result.assert_outcomes(failed=1)
    (name,) = call_outcomes(result)
    section = failure_section(result.outlines, name)
    hint = [line for line in section if "--convbench-download" in line]
    assert hint, section
    assert "'mnist'" in hint[0] and str(empty) in hint[0]
    output = result.stdout.str()
    assert "Traceback" not in output and "datasets.py" not in output
    (line,) = read_results(pytester.path / "r.jsonl")
    assert "--convbench-download" in line["extra_info"]["convbench"]["error"]
    assert list(empty.iterdir()) == []  # nothing was downloaded without --convbench-download


@pytest.mark.parametrize("threads", [2, 3])
def test_threads_option_sets_the_torch_threads_of_in_process_cases(pytester: pytest.Pytester, threads: int) -> None:
    """Set for the session's cases (this process runs at 1: tests/conftest.py), and put back after it."""
    import torch

    before = torch.get_num_threads()
    assert before != threads
    write_suite(pytester, """
        import torch

        @pytest.mark.parametrize("case", [BASE.param()])
        def test_threads(convergence, case):
            convergence(case)
            print("THREADS", torch.get_num_threads())
        """)
    result = pytester.runpytest("-s", "--convbench-threads", str(threads), "--convbench-results", "none")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"*THREADS {threads}*"])
    assert torch.get_num_threads() == before


def test_threads_option_rejects_what_is_not_a_count(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--convbench-threads", "0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--convbench-threads='0': expected a whole number of threads, 1 or more*"])


def test_skipped_cases_leave_the_progress_total(pytester: pytest.Pytester) -> None:
    write_suite(pytester, """
        @pytest.mark.parametrize("case", [pytest.param(BASE, marks=pytest.mark.skip("not today"), id="skipped"),
                                          BASE.param()])
        def test_cases(convergence, case):
            convergence(case)
        """)
    result = pytester.runpytest("--convbench-results", "none")
    result.assert_outcomes(passed=1, skipped=1)
    shown = [line for line in result.outlines if line.startswith("[")]
    assert shown and all(line.startswith("[1/1] ") for line in shown), shown
