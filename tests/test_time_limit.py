"""The time limit of a case that trains in this process: a hang ends, the session goes on."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
import warnings

import pytest

import convbench.registry
from convbench import launch
from convbench.case import Case
from convbench.engine import RunSettings
from convbench.errors import CaseTimeoutError, ConvbenchError
from convbench.time_limit import TimeLimitWarning, time_limit

pytest_plugins = ["pytester"]

HANGS = Case(model="hang_after", dataset="blobs", optimizer="sgd", lr=0.1, batch_size=20, steps=50)


class OuterAlarm(Exception):
    pass


@pytest.fixture
def outer_alarm():
    """An alarm handler of somebody else's (pytest-timeout's, say); the alarm is cleared afterwards."""
    def handler(signum, frame):
        raise OuterAlarm

    previous = signal.signal(signal.SIGALRM, handler)
    yield handler
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


def test_a_hanging_block_is_interrupted_at_the_limit():
    started = time.monotonic()
    expected = r"^case 'x' did not finish within 0\.5 s in this process"
    with pytest.raises(CaseTimeoutError, match=expected), time_limit(0.5, "case 'x'"):
        threading.Event().wait()
    assert 0.5 <= time.monotonic() - started < 5


def test_no_limit_and_a_quick_block_leave_the_alarm_alone():
    before = signal.getsignal(signal.SIGALRM)
    with time_limit(None, "case 'x'"):
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    with time_limit(30, "case 'x'"):
        assert signal.getitimer(signal.ITIMER_REAL)[0] > 0
    assert signal.getsignal(signal.SIGALRM) is before
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_a_later_outer_alarm_is_put_back_less_the_time_spent(outer_alarm):
    signal.setitimer(signal.ITIMER_REAL, 60)
    with pytest.raises(CaseTimeoutError), time_limit(0.3, "case 'x'"):
        threading.Event().wait()
    assert signal.getsignal(signal.SIGALRM) is outer_alarm
    remaining = signal.getitimer(signal.ITIMER_REAL)[0]
    assert 55 < remaining < 59.8


def test_a_sooner_outer_alarm_stays_in_charge(outer_alarm):
    signal.setitimer(signal.ITIMER_REAL, 0.3)
    with pytest.raises(OuterAlarm), time_limit(30, "case 'x'"):
        threading.Event().wait()


def test_off_the_main_thread_the_limit_is_not_enforced_and_says_so():
    caught: list[warnings.WarningMessage] = []

    def body():
        with warnings.catch_warnings(record=True) as records:
            warnings.simplefilter("always")
            with time_limit(0.01, "case 'x'"):
                time.sleep(0.05)  # longer than the limit: nothing may interrupt it off the main thread
            caught.extend(records)

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    (record,) = caught
    assert record.category is TimeLimitWarning
    assert "0.01 s time limit of case 'x' is not enforced" in str(record.message)


def _telemetry_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "convbench-telemetry"]


def test_a_hanging_single_process_case_fails_and_the_next_case_runs(settings):
    limited = RunSettings(registry=settings.registry, data_root=settings.data_root, timeout_s=1.0,
                          telemetry_interval_s=0.05)
    started = time.monotonic()
    with pytest.raises(CaseTimeoutError, match=r"case '.*hang_after.*' did not finish within 1 s"):
        launch.run_case(HANGS, limited)
    assert time.monotonic() - started < 10
    assert not _telemetry_threads()  # the interrupted run stopped its sampler
    result = launch.run_case(HANGS.replace(model="softmax"), settings)
    assert result.steps == 50


def test_a_hanging_preparation_fails_within_the_limit(settings):
    import types

    import convbench
    from convbench.registry import load_registry

    def stuck(input_shape, num_outputs):
        threading.Event().wait(60)
        raise RuntimeError("stuck waited 60 s and nothing interrupted it")

    plugin = types.ModuleType("stuck_plugin")
    plugin.convbench_register_models = convbench.hookimpl(lambda register: register("stuck", stuck))
    limited = RunSettings(registry=load_registry(entry_points=False, extra_plugins=[("stuck_plugin", plugin)]),
                          data_root=settings.data_root, timeout_s=1.0)
    started = time.monotonic()
    with pytest.raises(CaseTimeoutError, match=r"case '.*stuck.*' did not finish within 1 s"):
        launch.prepare(HANGS.replace(model="stuck", dataset="mnist-5k"), limited)
    assert time.monotonic() - started < 10


@pytest.mark.slow
def test_a_hanging_throughput_round_fails_within_the_limit(settings):
    limited = RunSettings(registry=settings.registry, data_root=settings.data_root, timeout_s=5.0)
    with launch.prepare(HANGS, limited) as prepared:  # 5 s: ample even on a busy machine
        prepared.time_steps(2)  # warm-up
        assert prepared.time_steps(1) > 0  # the third training step still returns
        with pytest.raises(CaseTimeoutError, match=r"throughput case .* did not finish within 5 s"):
            prepared.time_steps(5)


@pytest.mark.slow
def test_the_timeout_option_fails_a_hanging_case_in_one_line_and_keeps_the_others(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, registry) -> None:
    monkeypatch.setattr(convbench.registry, "_registry", registry)
    pytester.makepyfile(test_suite='''
        import pytest
        from convbench import Case

        BASE = Case(model="softmax", dataset="blobs", optimizer="sgd", lr=0.1, batch_size=20, steps=30)

        @pytest.mark.parametrize("case", [BASE.replace(model="hang_after").param(), BASE.param()])
        def test_case(convergence, case):
            assert convergence(case).steps == 30
    ''')
    result = pytester.runpytest("--convbench-timeout", "5", "--convbench-results", "r.jsonl",
                                "--convbench-no-progress", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    output = result.stdout.str()
    assert "did not finish within 5 s in this process; it was interrupted" in output
    assert "Traceback" not in output
    lines = [json.loads(line)["extra_info"]["convbench"] for line in (pytester.path / "r.jsonl").read_text()
             .splitlines()]
    assert [(line["outcome"], line["error"] is None) for line in lines] == [("failed", False), ("passed", True)]
    assert "did not finish within 5 s" in lines[0]["error"]


def test_an_import_under_way_finishes_before_the_limit_interrupts(tmp_path, monkeypatch):
    # interrupted halfway, a module would stay half initialised in sys.modules for every later case
    (tmp_path / "slow_to_import.py").write_text("import threading\nthreading.Event().wait(0.6)\nDONE = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "slow_to_import", raising=False)
    with pytest.raises(CaseTimeoutError), time_limit(0.2, "case 'x'"):
        import slow_to_import  # noqa: F401
        threading.Event().wait()
    assert sys.modules["slow_to_import"].DONE
    monkeypatch.delitem(sys.modules, "slow_to_import")


@pytest.mark.parametrize("value", ["inf", "nan", "0", "-1", "soon"])
def test_the_timeout_option_takes_positive_finite_seconds(pytester: pytest.Pytester, value: str) -> None:
    result = pytester.runpytest(f"--convbench-timeout={value}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert f"--convbench-timeout={value!r}: expected a positive, finite number of seconds" in result.stderr.str()


@pytest.mark.parametrize("seconds", [float("inf"), float("nan"), 0, -2])
def test_a_limit_must_be_positive_and_finite(seconds):
    with pytest.raises(ConvbenchError, match="a positive, finite number of seconds"), time_limit(seconds, "case 'x'"):
        pass
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_a_limit_reached_while_plugins_register_is_not_blamed_on_the_plugin(monkeypatch):
    import types

    import convbench
    from convbench.registry import load_registry

    plugin = types.ModuleType("slow_plugin")
    plugin.convbench_register_models = convbench.hookimpl(lambda register: threading.Event().wait(30))
    with pytest.raises(CaseTimeoutError), time_limit(0.2, "case 'x'"):
        load_registry(entry_points=False, extra_plugins=[("slow_plugin", plugin)])
