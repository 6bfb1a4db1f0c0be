"""convbench under pytest-xdist (``pytest suites/ -n N``): a suite's cases side by side, one per worker.

pytest-xdist runs a session as a controller (the process the user started) and N worker processes
that collect and run the tests. This module is the pytest plugin half that knows about them;
`convbench.pytest_plugin` registers it when a session is either. What it does:

- **Devices.** The controller plans each worker's device (`convbench.worker_devices`: its own GPUs, or
  its share of the CPU cores) and fails at once, in one line, when ``-n`` asks for more workers than
  there are GPUs. A worker's GPUs are its ``CUDA_VISIBLE_DEVICES``, set by execnet before the worker's
  Python imports anything; its torch threads become its ``--convbench-threads``.
- **What cannot run side by side is not run.** A throughput case times the machine alone; a
  multi-process case on CPUs would share the cores with the other workers' cases; a multi-process case
  on GPUs needs as many GPUs as ranks in its worker's block. Each is skipped in one line saying why, and
  the controller's summary lists them with the command that runs them alone.
- **Every result says so.** A convergence result gets `convbench.result.Parallel` (workers, worker id,
  device); tables, figures and `convbench compare` read it.
- **The benchmark JSON.** pytest-benchmark switches itself off under xdist and writes no
  ``--benchmark-json``. On the workers convbench turns it back on for its own cases only (their results
  are flagged as parallel), ships each finished case's pytest-benchmark entry and convbench record to
  the controller with the test's report, and the controller hands them to pytest-benchmark, which then
  writes ``--benchmark-json`` and ``--benchmark-autosave`` and prints its tables exactly as in a serial
  session; the workers write no such file. A case reaches the controller the moment its test ends, so a
  worker that crashes later costs only the case it was running (the results file, appended by each
  worker under a file lock, has every finished case too).
"""

from __future__ import annotations

import json
import os
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest

from convbench import worker_devices
from convbench.errors import ConvbenchError
from convbench.result import Parallel

if TYPE_CHECKING:
    from convbench.case import Case
    from convbench.result import RunResult

#: ``workerinput`` key of what the controller tells each worker: the session id and its `WorkerDevice` as a dict.
_INPUT = "convbench"
#: Attribute of a worker's test report that carries the case's benchmark entry and record to the controller.
_PAYLOAD = "convbench_xdist"
#: The start of every refusal's skip reason, so that the controller can list the refused cases.
_REFUSED = "convbench: not run beside other pytest-xdist workers:"
_PLUGIN_NAME = "convbench-xdist"


def register(config: pytest.Config) -> None:
    """Register the controller's or the worker's half, where this session is either (from ``pytest_configure``).

    The controller plans every local worker's device first: more workers than GPUs is a usage error
    before any worker starts.
    """
    if hasattr(config, "workerinput"):
        if _INPUT in config.workerinput:  # a controller with convbench planned this worker
            config.pluginmanager.register(WorkerPlugin(), _PLUGIN_NAME)
    elif config.getoption("dist", "no") != "no" and config.getoption("tx", None):
        config.pluginmanager.register(ControllerPlugin(config, _plan(config)), _PLUGIN_NAME)


def _plan(config: pytest.Config) -> list[worker_devices.WorkerDevice]:
    """The devices of the workers pytest-xdist starts on this machine (``popen``; remote ones are left alone)."""
    import execnet
    from xdist.workermanage import parse_tx_spec_config

    local = sum(_local(execnet.XSpec(spec)) for spec in parse_tx_spec_config(config))
    if not local:
        return []
    try:
        return worker_devices.plan(local, worker_devices.visible_gpus(), worker_devices.usable_cores(),
                                   config.getoption("convbench_threads"))
    except ConvbenchError as exc:
        raise pytest.UsageError(str(exc)) from None


def _local(spec: Any) -> bool:
    return bool(spec.popen) and not spec.via


def auto_workers(config: pytest.Config) -> int | None:
    """``-n auto``: one worker per visible GPU where there are GPUs; else None (pytest-xdist's own choice,
    one per CPU core). ``PYTEST_XDIST_AUTO_NUM_WORKERS`` still wins."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None
    return len(worker_devices.visible_gpus()) or None


# ------------------------------------------------------------------------------- in a worker
def _worker_input(config: pytest.Config) -> dict[str, Any] | None:
    return getattr(config, "workerinput", {}).get(_INPUT)


def _worker_device(config: pytest.Config) -> worker_devices.WorkerDevice | None:
    given = _worker_input(config)
    return None if given is None or given.get("device") is None else worker_devices.WorkerDevice.from_dict(
        given["device"])


def _worker_id() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "gw?")


def parallel(config: pytest.Config) -> Parallel | None:
    """How this worker shares the machine, for its results; None outside pytest-xdist and with one worker."""
    device = _worker_device(config)
    if device is None or device.workers < 2:
        return None
    return Parallel(workers=device.workers, worker=_worker_id(), device=device.device, threads=device.threads)


def with_parallel(result: RunResult, config: pytest.Config) -> RunResult:
    """The result, marked as run beside other cases where it was."""
    from dataclasses import replace

    shared = parallel(config)
    return result if shared is None else replace(result, parallel=shared)


def refusal(case: Case, config: pytest.Config, *, throughput: bool = False) -> str | None:
    """Why ``case`` cannot run in this worker beside the others (one line: `_REFUSED`, what kind of case,
    why), or None where it can."""
    device = _worker_device(config)
    if device is None or device.workers < 2:
        return None
    n, here = device.workers, f"{_worker_id()}: {device.device}"
    on_gpus = bool(device.gpus) and case.device in ("auto", "cuda")
    if throughput:
        kind, why = "throughput case", f"it times the machine alone, not beside {n - 1} other worker(s)"
    elif device.gpus and case.device.startswith("cuda:"):
        kind, why = f"device={case.device!r}", f"names one GPU, but under -n {n} each worker has its own ({here})"
    elif case.world_size > 1 and not on_gpus:
        kind = f"world_size={case.world_size} on CPUs"
        threads = "" if device.threads is None else f", {device.threads} thread(s)"
        why = f"its {case.world_size} processes would share the cores with the other workers' cases ({here}{threads})"
    elif case.world_size > len(device.gpus) and on_gpus:
        kind = f"world_size={case.world_size} on {len(device.gpus)} GPU(s) per worker"
        fewer = len(device.gpus) * n // case.world_size
        why = f"under -n {n} each worker has {len(device.gpus)} ({here})" + (
            f"; -n {fewer} gives each {case.world_size}" if fewer >= 1 else "")
    else:
        return None
    return f"{_REFUSED} {kind}: {why}; run it without -n"


def skip_if_refused(case: Case, config: pytest.Config, *, throughput: bool = False) -> None:
    """Skip the test in one line where its case cannot run beside the other workers' (`refusal`)."""
    reason = refusal(case, config, throughput=throughput)
    if reason is not None:  # reported at the test's own line, as a skip mark is, not at this one
        raise pytest.skip.Exception(reason, _use_item_location=True)


class WorkerPlugin:
    """A worker's half: its device and threads, the session id, pytest-benchmark on for convbench's cases."""

    def pytest_configure(self, config: pytest.Config) -> None:
        from convbench.pytest_plugin import _SESSION

        given = _worker_input(config)
        config.stash[_SESSION] = given["session"]  # one session in the results file, not one per worker
        device = _worker_device(config)
        if device is not None and device.threads is not None:
            config.option.convbench_threads = device.threads  # the session's fixture sets them before any case

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        """The controller writes the benchmark files from every worker's cases: a worker writing them too
        would race the others for the same path."""
        benchmarks = getattr(session.config, "_benchmarksession", None)
        if benchmarks is not None:
            benchmarks.json, benchmarks.save, benchmarks.autosave = None, None, False

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        """pytest-benchmark's "disabled because xdist is active" warning holds for other benchmarks only."""
        from convbench.pytest_plugin import _runs_a_case

        benchmarks = getattr(config, "_benchmarksession", None)
        if benchmarks is not None and getattr(benchmarks, "xdist_benchmark_found", False):
            benchmarks.xdist_benchmark_found = any(
                "benchmark" in getattr(item, "fixturenames", ()) and not _runs_a_case(item) for item in items)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_call(self, item: pytest.Item) -> None:
        """Time convbench's cases, which pytest-benchmark disabled for xdist (not where the user disabled it)."""
        from convbench.pytest_plugin import _runs_a_case

        benchmarks = getattr(item.config, "_benchmarksession", None)
        fixture = getattr(item, "funcargs", {}).get("benchmark")
        if fixture is not None and getattr(benchmarks, "xdist_warning", False) and _runs_a_case(item):
            fixture.disabled = False

    @pytest.hookimpl(wrapper=True, tryfirst=True)  # outermost: convbench's own wrapper has finished the record
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
        report = yield
        if report.when == "call":
            payload = self._payload(item)
            if payload is not None:
                setattr(report, _PAYLOAD, payload)
        return report

    def _payload(self, item: pytest.Item) -> str | None:
        """The case's benchmark entry (pytest-benchmark's ``as_dict``, with its rounds) and convbench record,
        as JSON text (a report crosses to the controller as plain types); the worker's own copy of the
        benchmark is dropped, so that the worker prints and saves nothing of it."""
        from convbench.pytest_plugin import _RECORD

        pending = item.stash.get(_RECORD, None)
        fixture = getattr(item, "funcargs", {}).get("benchmark")
        metadata = getattr(fixture, "stats", None) if fixture is not None and fixture.enabled else None
        if pending is None and metadata is None:
            return None
        entry = None
        if metadata is not None:
            entry = {**metadata.as_dict(include_data=True, stats=True), "has_error": bool(fixture.has_error)}
            benchmarks = getattr(item.config, "_benchmarksession", None)
            if benchmarks is not None and metadata in benchmarks.benchmarks:
                benchmarks.benchmarks.remove(metadata)
        record = None if pending is None else {"key": pending.key, "fields": pending.fields}
        from pytest_benchmark.utils import safe_dumps  # the encoder pytest-benchmark writes its JSON with

        return safe_dumps({"benchmark": entry, "record": record})


# --------------------------------------------------------------------------- in the controller
class ControllerPlugin:
    """The controller's half: plan the devices, brief the workers, and gather their cases."""

    def __init__(self, config: pytest.Config, plan: list[worker_devices.WorkerDevice]) -> None:
        self.config = config
        self.plan = plan
        self.devices: dict[int, worker_devices.WorkerDevice] = {}  # id(spec) -> its worker's device
        self.refused: list[tuple[str, str]] = []  # (test, reason)

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_setupnodes(self, config: pytest.Config, specs: list[Any]) -> None:
        """Each local worker's GPUs become its ``CUDA_VISIBLE_DEVICES`` (execnet sets it before the worker's
        Python imports anything). A worker that replaces a crashed one reuses its spec, and so its device."""
        for spec, device in zip([spec for spec in specs if _local(spec)], self.plan, strict=False):
            spec.env.update(device.environment())
            self.devices[id(spec)] = device

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        from convbench.pytest_plugin import _SESSION

        device = self.devices.get(id(node.gateway.spec))
        node.workerinput[_INPUT] = {"session": self.config.stash[_SESSION],
                                    "device": None if device is None else device.to_dict()}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        payload = getattr(report, _PAYLOAD, None)
        if payload is not None:
            self._gather(json.loads(payload))
        if report.skipped and isinstance(report.longrepr, tuple) and _REFUSED in str(report.longrepr[-1]):
            self.refused.append((report.nodeid, str(report.longrepr[-1]).split(_REFUSED, 1)[1].strip()))

    def _gather(self, payload: dict[str, Any]) -> None:
        """A worker's finished case: its record into convbench's summary, its benchmark to pytest-benchmark."""
        from convbench.pytest_plugin import _FINISHED, _CaseRecord

        if payload.get("record") is not None:
            record = payload["record"]
            self.config.stash.setdefault(_FINISHED, []).append(_CaseRecord(record["key"], record["fields"]))
        benchmarks = getattr(self.config, "_benchmarksession", None)
        if payload.get("benchmark") is not None and benchmarks is not None:
            benchmarks.benchmarks.append(benchmark_from_entry(payload["benchmark"]))

    @pytest.hookimpl(trylast=True, optionalhook=True)
    def pytest_benchmark_update_machine_info(self, config: pytest.Config, machine_info: dict[str, Any]) -> None:
        """The benchmark JSON says the session ran its cases side by side, on which devices."""
        if self.plan and isinstance(machine_info.get("convbench"), dict):
            machine_info["convbench"]["parallel"] = {"workers": len(self.plan),
                                                     "devices": [device.device for device in self.plan],
                                                     "threads": [device.threads for device in self.plan]}

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        """One line for the cases the workers refused (`refusal`): how many of each kind, and how to run them."""
        if not self.refused:
            return
        kinds: dict[str, int] = {}
        for _, reason in self.refused:
            kind = reason.split(": ", 1)[0]
            kinds[kind] = kinds.get(kind, 0) + 1
        shown = 5
        tests = " ".join(test for test, _ in self.refused[:shown])
        more = f" (and {len(self.refused) - shown} more: -rs lists them)" if len(self.refused) > shown else ""
        terminalreporter.write_line(
            f"convbench: {len(self.refused)} case(s) skipped, they cannot run beside other pytest-xdist workers ("
            + ", ".join(f"{count} {kind}" for kind, count in kinds.items())
            + f"); run them alone: pytest -n 0 {tests}{more}", yellow=True)


def benchmark_from_entry(entry: dict[str, Any]) -> Any:
    """A pytest-benchmark ``Metadata`` rebuilt from a worker's ``as_dict`` entry: its statistics recomputed
    from the same rounds, so that the controller's pytest-benchmark saves and prints it as its own."""
    from pytest_benchmark.stats import Metadata

    stats = entry["stats"]
    fixture = SimpleNamespace(name=entry["name"], fullname=entry["fullname"], group=entry["group"],
                              param=entry["param"], params=entry["params"], extra_info=entry["extra_info"],
                              cprofile_stats=None, has_error=entry["has_error"])
    metadata = Metadata(fixture, stats["iterations"], entry["options"])
    for seconds in stats["data"]:
        metadata.stats.update(seconds)  # seconds per iteration, as the worker recorded them
    return metadata
