"""The shipped suites collect and validate at every scale without data, and a suite's invalid case is
caught by ``--collect-only`` in one line, before anything trains.

The inner sessions run through `pytester` in this process; see tests/test_pytest_plugin.py for why
the modules below are imported first.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_pytest_plugin import _isolated, write_suite  # noqa: F401  (also imports what inner sessions need)

from convbench import Case
from convbench.errors import CaseError

ROOT = Path(__file__).resolve().parents[1]
SUITES = ROOT / "suites"

pytest_plugins = ["pytester"]


@pytest.mark.slow
@pytest.mark.parametrize("scale", ["quick", "full"])
def test_the_shipped_suites_collect_and_validate_without_data(scale: str, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "pytest", str(SUITES), "--collect-only", "-q", "-p",
                           "no:cacheprovider", "--convbench-scale", scale, "--convbench-data-root", str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    collected = [line for line in done.stdout.splitlines() if "::" in line]
    assert len(collected) >= 10, done.stdout
    assert not any(tmp_path.iterdir()), "collection must not download or write data"


def test_every_shipped_suite_says_what_it_answers_and_on_which_data() -> None:
    for path in sorted(SUITES.glob("test_*.py")):
        source = path.read_text(encoding="utf-8")
        docstring = source.split('"""')[1] if source.startswith('"""') else ""
        assert docstring.strip(), f"{path.name} has no module docstring"
        for word in ("quick", "full"):
            assert word in docstring.lower(), f"{path.name}'s docstring does not say what the {word} scale uses"


def test_a_scale_override_is_validated_when_the_case_is_declared() -> None:
    with pytest.raises(CaseError, match=r"at scale 'quick': invalid steps=0"):
        Case(model="softmax", optimizer="sgd", lr=0.1, dataset="mnist-5k", epochs=1, scales={"quick": {"steps": 0}})


@pytest.mark.parametrize(("case", "message"), [
    ('BASE.replace(optimizer="sdg")', "unknown optimizer 'sdg'"),
    ('BASE.replace(label="other", scales={"full": {"model": "lenet"}})', "unknown model 'lenet'"),
    ('BASE.replace(model_kwargs={"init": "zeros", "hidden": 3})', "model 'softmax' does not accept 'hidden'"),
    ('BASE.replace(scheduler="step", scheduler_kwargs={"step": 2})', "scheduler 'step' does not accept 'step'"),
])
def test_collect_only_names_each_invalid_case_and_runs_nothing(pytester: pytest.Pytester, case: str,
                                                                message: str) -> None:
    write_suite(pytester, f"""
        @pytest.mark.parametrize("case", [BASE, {case}])
        def test_cases(convergence, case):
            convergence(case)
        """)
    result = pytester.runpytest("--collect-only", "-q", "--convbench-scale", "full")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = result.stderr.str()
    assert "1 of 2 collected cases are invalid at scale 'full'" in errors
    (line,) = [line for line in errors.splitlines() if "test_suite.py::test_cases" in line]
    assert message in line and "valid" in line, line


def test_collect_only_leaves_cases_that_no_convbench_fixture_trains_to_their_tests(pytester: pytest.Pytester) -> None:
    """A test that checks how an invalid case fails is given that case: collection must not fail on it."""
    write_suite(pytester, """
        @pytest.mark.parametrize("case", [BASE.replace(optimizer="sdg")])
        def test_the_error_names_the_optimizer(case):
            from convbench import run_case
            with pytest.raises(Exception, match="sdg"):
                run_case(case)

        @pytest.mark.parametrize("case", [BASE, BASE.replace(optimizer="sdg")])
        def test_cases(convergence, case):
            convergence(case)
        """)
    result = pytester.runpytest("--collect-only", "-q", "--convbench-scale", "full")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = result.stderr.str()
    assert "1 of 2 collected cases are invalid" in errors and "test_the_error_names_the_optimizer" not in errors


def test_collect_only_passes_a_valid_suite(pytester: pytest.Pytester) -> None:
    write_suite(pytester, textwrap.dedent("""
        @pytest.mark.parametrize("case", grid(BASE, lr=[0.1, 0.5]))
        def test_cases(convergence, case):
            convergence(case)
        """))
    result = pytester.runpytest("--collect-only", "-q", "--convbench-scale", "full")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*2 tests collected*"])


def test_an_invalid_case_in_a_suite_is_reported_at_its_line_and_other_files_can_run(
        pytester: pytest.Pytester) -> None:
    write_suite(pytester, """
        BAD = Case(model="softmax", optimizer="sgd", lr=0, dataset="mnist-5k", steps=20)
        """, name="test_broken")
    pytester.makepyfile(test_fine="def test_fine():\n    pass\n")
    result = pytester.runpytest("--continue-on-collection-errors")
    output = result.stdout.str()
    result.stdout.fnmatch_lines(["test_broken.py:*: in <module>", "*BAD = Case(*",
                                 "E   convbench.errors.CaseError: invalid lr=0.0: expected a positive number"])
    assert "case.py" not in output  # the validation code's frames are hidden: the suite's line says it all
    result.assert_outcomes(passed=1, errors=1)


def test_two_different_cases_with_one_id_stop_the_session_before_training(pytester: pytest.Pytester) -> None:
    write_suite(pytester, """
        @pytest.mark.parametrize("case", [BASE.param(), BASE.replace(dataset="mnist", label=BASE.id).param()])
        def test_cases(convergence, case):
            convergence(case)

        @pytest.mark.parametrize("case", [BASE.param()])
        def test_same_case_again(convergence, case):  # one case in two tests is not a clash
            convergence(case)
        """)
    result = pytester.runpytest("--convbench-results", "none")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    (line,) = [line for line in result.stderr.str().splitlines() if "different cases with the id" in line]
    assert "test_cases[softmax-sgd-lr0.5-bs100" in line and "give one a label" in line
    assert "test_same_case_again" not in line


def test_cases_that_differ_only_at_the_session_scale_are_a_clash_there(pytester: pytest.Pytester) -> None:
    write_suite(pytester, """
        ONE = BASE.replace(scales={"quick": {"steps": 10}}, label="same")
        OTHER = BASE.replace(scales={"quick": {"steps": 12}}, label="same")

        @pytest.mark.parametrize("case", [ONE.param(), OTHER.param()])
        def test_cases(convergence, case):
            convergence(case)
        """)
    quick = pytester.runpytest("--collect-only", "-q", "--convbench-scale", "quick")
    assert quick.ret == pytest.ExitCode.USAGE_ERROR and "different cases with the id 'same'" in quick.stderr.str()
    full = pytester.runpytest("--collect-only", "-q", "--convbench-scale", "full")  # one run at full scale
    assert full.ret == pytest.ExitCode.OK, full.stderr.str()
