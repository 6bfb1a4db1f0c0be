"""The session header's hint on a busy machine (`convbench.busy_start`)."""

from __future__ import annotations

import pytest

from convbench import busy_start
from convbench.busy_start import busy_machine_hint

pytest_plugins = ["pytester"]


def test_a_busy_machine_with_default_threads_gets_the_hint():
    hint = busy_machine_hint(None, load=7.5, cores=2, torch_threads=2)
    assert hint is not None and "\n" not in hint
    assert "load 7.5 on 2 cores" in hint and "2 threads" in hint and "--convbench-threads 1" in hint


@pytest.mark.parametrize(("option", "load", "cores", "threads"), [
    (1, 7.5, 2, 2),  # the user chose the threads
    (2, 7.5, 2, 2),
    (None, 1.9, 2, 2),  # below one per core: not busy
    (None, 7.5, 2, 1),  # torch uses one thread anyway
])
def test_no_hint_where_it_would_not_help(option, load, cores, threads):
    assert busy_machine_hint(option, load=load, cores=cores, torch_threads=threads) is None


def test_a_system_without_load_average_gets_no_hint(monkeypatch):
    def missing() -> tuple[float, float, float]:
        raise OSError("no load average")

    monkeypatch.setattr(busy_start.psutil, "getloadavg", missing)
    assert busy_machine_hint(None, cores=2, torch_threads=2) is None


def test_the_hint_is_in_the_session_header(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):
    pytester.makepyfile(test_nothing="def test_nothing():\n    assert True\n")
    monkeypatch.setattr(busy_start.psutil, "getloadavg", lambda: (64.0, 64.0, 64.0))
    monkeypatch.setattr(busy_start.psutil, "cpu_count", lambda logical=True: 2)
    busy = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    assert any(line.startswith("convbench: this machine is busy (1-minute load 64.0 on 2 cores)")
               for line in busy.outlines)
    chosen = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--convbench-threads", "1")
    assert not any("this machine is busy" in line for line in chosen.outlines)
