"""The pytest plugin (entry point ``pytest11``): options, the `convergence` fixture, machine info,
test outcomes in the benchmark JSON, progress lines and the append-only results file.

Importing this module must stay cheap: it is loaded into every pytest session where convbench is
installed. torch and the engine are imported when a case first runs.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
import platform
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, NamedTuple

import pytest

from convbench import __version__, results_file, xdist_support
from convbench.case import DEFAULT_SCALE, SCALES, Case
from convbench.errors import ConvbenchError
from convbench.result import RECORD_SCHEMA

if TYPE_CHECKING:
    from convbench.engine import RunSettings
    from convbench.progress_line import ProgressLine
    from convbench.result import RunResult

SCALE_ENV = "CONVBENCH_SCALE"
_HOOK_PREFIX = "convbench_register_"  # the registration hooks' names (convbench.hookspecs)
DEFAULT_RESULTS = ".convbench/results.jsonl"
_SESSION = pytest.StashKey[str]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("convbench", "convbench: convergence benchmarks")
    group.addoption("--convbench-scale", choices=SCALES, default=os.environ.get(SCALE_ENV, DEFAULT_SCALE),
                    help=f"scale profile applied to every case: quick (CPU-sized) or full (published "
                         f"settings). Default: ${SCALE_ENV} or {DEFAULT_SCALE}.")
    group.addoption("--convbench-data-root", metavar="DIR", default=None, type=_data_root,
                    help="where datasets are read from and downloaded to (default ~/.cache/convbench/data)")
    group.addoption("--convbench-download", action="store_true", default=False,
                    help="allow datasets that are not on disk to be downloaded")
    group.addoption("--convbench-results", metavar="PATH", default=DEFAULT_RESULTS,
                    help=f"append one JSON line per finished case to PATH, at once (default "
                         f"{DEFAULT_RESULTS} under the rootdir; 'none' to disable)")
    group.addoption("--convbench-no-progress", action="store_true", default=False,
                    help="do not print a progress line after each evaluation of a running case")
    group.addoption("--convbench-world-sizes", metavar="N[,N...]", default=None, type=_world_sizes,
                    help="run every convergence and throughput case once per world size, e.g. 1,2,4 "
                         "(DDP: gloo on CPU, nccl on GPU)")
    group.addoption("--convbench-telemetry-interval", metavar="SECONDS", type=_telemetry_interval, default=0.2,
                    help="sample GPU (NVML) or CPU (psutil) utilisation every SECONDS during each run (NVML no "
                         "faster than every 1/6 s, its fastest refresh); 0 turns sampling off (default 0.2)")
    group.addoption("--convbench-threads", metavar="N", type=_threads, default=None,
                    help="torch threads for the cases trained in this process (default: torch's own, about one "
                         "per core); a multi-process case's workers share the cores out by world size")
    group.addoption("--convbench-timeout", metavar="SECONDS", type=_positive_seconds, default=None,
                    help="fail a case that runs longer than SECONDS and go on with the next: multi-process "
                         "cases have their workers killed (default 1800), single-process ones are "
                         "interrupted (default: no limit)")
    from convbench import resume  # --convbench-resume (convbench/resume.py)

    resume.add_option(group)


# Option values are checked as they are parsed: a bad one is a one-line usage error before any case
# runs, not a failure of every case later.
def _seconds(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return math.nan


def _positive_seconds(value: str) -> float:
    seconds = _seconds(value)
    if not (math.isfinite(seconds) and seconds > 0):
        raise pytest.UsageError(f"--convbench-timeout={value!r}: expected a positive, finite number of seconds")
    return seconds


def _telemetry_interval(value: str) -> float:
    seconds = _seconds(value)
    if not (math.isfinite(seconds) and seconds >= 0):
        raise pytest.UsageError(f"--convbench-telemetry-interval={value!r}: expected a finite number of seconds "
                                ">= 0 (0 turns sampling off)")
    return seconds


def _threads(value: str) -> int:
    try:
        threads = int(value)
    except ValueError:
        threads = 0
    if threads < 1:
        raise pytest.UsageError(f"--convbench-threads={value!r}: expected a whole number of threads, 1 or more")
    return threads


def _world_sizes(value: str) -> list[int]:
    try:
        sizes = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        sizes = []
    if not sizes or any(size < 1 for size in sizes):
        raise pytest.UsageError(f"--convbench-world-sizes={value!r}: expected positive integers like 1,2,4")
    if len(set(sizes)) < len(sizes):
        raise pytest.UsageError(f"--convbench-world-sizes={value!r}: a world size given twice; expected distinct "
                                "positive integers like 1,2,4")
    return sizes


def _data_root(value: str) -> str:
    """A folder, or a path not there yet (downloads create it); an existing file is a mistake."""
    path = Path(value).expanduser()
    if path.exists() and not path.is_dir():
        raise pytest.UsageError(f"--convbench-data-root={value!r}: not a folder")
    return value


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    sizes = metafunc.config.getoption("convbench_world_sizes")
    if sizes and _CASE_FIXTURES & set(metafunc.fixturenames):
        metafunc.parametrize("convbench_world_size", sizes, ids=[f"w{size}" for size in sizes])


@pytest.hookimpl(tryfirst=True)  # before pytest-benchmark's, which reads benchmark_quiet once
def pytest_configure(config: pytest.Config) -> None:
    config.stash[_SESSION] = uuid.uuid4().hex[:12]
    if _secondary_rank():
        # Under torchrun every rank runs the whole session; rank 0 speaks for all. Other ranks writing
        # the same --benchmark-json or saved run would race it, and the last writer would win.
        config.option.benchmark_json = None
        config.option.benchmark_save = None
        config.option.benchmark_autosave = False
        # Their terminal output would interleave with rank 0's: no header, no timing tables, no
        # progress; only what goes wrong on that rank (pytest at -qq still reports failures).
        config.option.verbose = min(config.option.verbose, -2)
        config.option.reportchars = "fE"  # failures and errors in the short summary, as by default
        config.option.benchmark_quiet = True
    xdist_support.register(config)  # pytest -n N: a device per worker, cases gathered (convbench.xdist_support)


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """``-n auto``: one worker per visible GPU where there are GPUs (else pytest-xdist's own count)."""
    return xdist_support.auto_workers(config)


def pytest_plugin_registered(plugin: object, plugin_name: str, manager: pytest.PytestPluginManager) -> None:
    """A conftest.py that implements convbench hooks registers its components, as an installed plugin would."""
    file = getattr(plugin, "__file__", None)
    if not (isinstance(plugin, ModuleType) and file and Path(file).name == "conftest.py"):
        return
    if any(name.startswith(_HOOK_PREFIX) and callable(value) for name, value in vars(plugin).items()):
        from convbench.registry import add_conftest_plugin

        add_conftest_plugin(f"conftest:{os.path.relpath(file)}", plugin)


def pytest_unconfigure(config: pytest.Config) -> None:
    registry = sys.modules.get("convbench.registry")  # only if a conftest plugin or a case loaded it
    if registry is not None:
        registry.clear_conftest_plugins()


def _secondary_rank() -> bool:
    """A rank other than 0 of a torchrun job (read from the environment: importing torch here is too dear)."""
    return os.environ.get("RANK", "0") != "0"


# ----------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def convbench_settings(pytestconfig: pytest.Config) -> Iterator[RunSettings]:
    """The session's `RunSettings` (scale, data root, download permission, progress printer)."""
    from convbench.engine import RunSettings

    data_root = pytestconfig.getoption("convbench_data_root")
    threads = pytestconfig.getoption("convbench_threads")
    previous_threads = None
    if threads is not None:  # before the first case: each case's isolation then keeps it
        import torch

        previous_threads = torch.get_num_threads()
        torch.set_num_threads(threads)
    yield RunSettings(
        data_root=Path(data_root).expanduser() if data_root else None,
        download=pytestconfig.getoption("convbench_download"),
        scale=pytestconfig.getoption("convbench_scale"),
        timeout_s=pytestconfig.getoption("convbench_timeout"),
        telemetry_interval_s=pytestconfig.getoption("convbench_telemetry_interval") or None,
        progress=None if pytestconfig.getoption("convbench_no_progress") else _progress_printer(pytestconfig),
    )
    if previous_threads is not None:  # the process may go on (pytester, an embedding tool): put it back
        import torch

        torch.set_num_threads(previous_threads)


def _session_case(case: Case, settings: RunSettings, world_size: int | None, request: pytest.FixtureRequest) -> Case:
    """The case at the session's scale, at the world size ``--convbench-world-sizes`` asks for.

    A case that cannot take that world size (it names one GPU, say) fails its test in one line.
    """
    try:
        scaled = case.at_scale(settings.scale)
        if world_size is not None and world_size != scaled.world_size:
            scaled = scaled.replace(world_size=world_size, label=f"{scaled.id}-w{world_size}")
    except ConvbenchError as exc:
        raise pytest.fail.Exception(f"{request.node.name}: {exc}", pytrace=False) from None
    return scaled


def _skip_other_world_sizes_under_torchrun(case: Case) -> None:
    """torchrun fixed the number of processes: cases of another world size are for another launch."""
    from convbench.torchrun import world_size_mismatch

    reason = world_size_mismatch(case)
    if reason is not None:
        pytest.skip(reason)


def _default_group(benchmark: Any, request: pytest.FixtureRequest) -> str:
    """Group a case with the other parametrizations of its test function unless a marker says otherwise."""
    if benchmark.group is None:
        benchmark.group = getattr(request.node, "originalname", request.node.name)
    return benchmark.group


@pytest.fixture
def convbench_world_size() -> int | None:
    """The world size ``--convbench-world-sizes`` parametrizes a test with (None: the case's own)."""
    return None


@pytest.fixture
def convergence(request: pytest.FixtureRequest, benchmark: Any, convbench_settings: RunSettings,
                convbench_world_size: int | None) -> Callable[[Case], RunResult]:
    """Run a case once under ``benchmark.pedantic`` and return its `RunResult`.

    The case is scaled to ``--convbench-scale`` first. Preparation (data loading, model construction
    and, for a multi-process case whose worker pool is not running yet, starting it) happens in
    pedantic's untimed ``setup`` on every world size; the benchmark's time is the training run with its
    evaluations. The result goes to ``benchmark.extra_info["convbench"]`` and, with the test's outcome,
    to the results file as soon as the test finishes. User errors (unknown names, bad kwargs, missing
    data) fail the test with their one-line message.
    """
    from convbench import launch

    def run(case: Case) -> RunResult:
        scaled = _session_case(case, convbench_settings, convbench_world_size, request)
        _skip_other_world_sizes_under_torchrun(scaled)
        xdist_support.skip_if_refused(scaled, request.config)
        record = _start_record(request, benchmark, "convbench", scaled, convbench_settings)
        from convbench import resume

        stored = resume.stored(request.config, scaled, convbench_settings.scale, results_path(request.config))
        if stored is not None:  # --convbench-resume: measured before, reported again, not trained
            return resume.replay(request.config, benchmark, record, stored)
        line = _start_progress(request, convbench_settings, scaled.id)
        handles: list[launch.PreparedCase] = []

        def setup() -> tuple[tuple[launch.PreparedCase], dict[str, Any]]:
            handles.append(launch.prepare(scaled, convbench_settings))
            return (handles[-1],), {}

        try:
            with _failing_in_one_line(scaled, record):
                result = benchmark.pedantic(lambda handle: handle.run(), setup=setup, rounds=1, iterations=1)
        except Exception as exc:
            record["error"] = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            for handle in handles:
                handle.close()
            if line is not None:
                line.finish_case()
        result = xdist_support.with_parallel(result, request.config)  # beside other cases, under pytest -n N
        record.update(result.to_dict())
        benchmark.extra_info["convbench"] = record
        return result

    return run


class _CaseRecord(NamedTuple):
    """What a test's case writes to the results file when the test ends: ``extra_info[key] = fields``."""

    key: str  # "convbench" (a convergence case) or "convbench_throughput"
    fields: dict[str, Any]


_RECORD = pytest.StashKey[_CaseRecord]()


def _start_record(request: pytest.FixtureRequest, benchmark: Any, key: str, case: Case,
                  settings: RunSettings) -> dict[str, Any]:
    """The test's record, kept on its item until the test's outcome is known (`pytest_runtest_makereport`)."""
    if request.node.stash.get(_RECORD, None) is not None:
        raise ConvbenchError(f"the {request.fixturename} fixture runs one case per test; parametrize for more")
    record: dict[str, Any] = {"case_id": case.id, "scale": settings.scale, "outcome": None, "error": None,
                              "group": _default_group(benchmark, request)}
    request.node.stash[_RECORD] = _CaseRecord(key, record)
    return record


@contextlib.contextmanager
def _failing_in_one_line(case: Case, record: dict[str, Any] | None = None) -> Iterator[None]:
    """A user error (`ConvbenchError`) fails the test with its one-line message, noted in ``record``."""
    try:
        yield
    except ConvbenchError as exc:
        if record is not None:
            record["error"] = str(exc)
        # `from None`: the user's mistake is the whole story, not the exception chain behind it
        raise pytest.fail.Exception(f"{case.id}: {exc}", pytrace=False) from None


@pytest.fixture
def throughput(request: pytest.FixtureRequest, benchmark: Any, convbench_settings: RunSettings,
               convbench_world_size: int | None) -> Callable[..., dict[str, Any]]:
    """Time rounds of synchronised training steps of a case, on 1 or N processes.

    ``throughput(case, steps=20, rounds=5, warmup_steps=5)`` prepares the case once, runs the warm-up
    steps, then lets pytest-benchmark time ``rounds`` rounds of ``steps`` steps each (so its min, mean
    and spread are real statistics over rounds), reading the machine's load over them
    (`convbench.throughput`). Returns, and stores in ``benchmark.extra_info["convbench_throughput"]``,
    samples/s overall and per device; with the test's outcome it goes to the results file as soon as
    the test finishes. A case interrupted mid-rounds is not saved: its rounds are not the ones asked for.
    """
    from convbench import launch
    from convbench.throughput import measure

    def run(case: Case, steps: int = 20, rounds: int = 5, warmup_steps: int = 5) -> dict[str, Any]:
        for name, value in (("steps", steps), ("rounds", rounds)):
            if not isinstance(value, int) or value < 1:
                raise ConvbenchError(f"throughput {name}={value!r}: expected a positive integer")
        scaled = _session_case(case, convbench_settings, convbench_world_size, request)
        _skip_other_world_sizes_under_torchrun(scaled)
        xdist_support.skip_if_refused(scaled, request.config, throughput=True)
        record = _start_record(request, benchmark, "convbench_throughput", scaled, convbench_settings)
        line = _start_progress(request, convbench_settings, scaled.id)
        started = iter(range(1, rounds + 1))

        def before_round() -> None:  # pedantic's setup: outside the timed round
            index = next(started, rounds)
            if line is not None:
                line.round(index, rounds)

        try:
            # a round past the time limit, or a rank that failed, fails the test in one line too
            with _failing_in_one_line(scaled, record), launch.prepare(scaled, convbench_settings) as prepared:
                result = measure(prepared, steps=steps, rounds=rounds, warmup_steps=warmup_steps,
                                 repeat=lambda one_round, times: benchmark.pedantic(
                                     one_round, setup=before_round, rounds=times, iterations=1))
        except KeyboardInterrupt:
            benchmark.has_error = True  # pytest-benchmark then saves no statistics of the rounds run so far
            raise
        info = result.to_dict()
        record.update(info)
        benchmark.extra_info["convbench_throughput"] = record
        return info

    return run


def pytest_sessionfinish(session: pytest.Session) -> None:
    pool = sys.modules.get("convbench.pool")  # only if a multi-process case ran: no torch import here
    if pool is not None:
        pool.close_pools()


# ---------------------------------------------------------------------------------- reporting
@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    """A test interrupted (Ctrl-C) after its case was measured still writes it, marked "interrupted".

    pytest makes no report of an interrupted call, so `pytest_runtest_makereport` never sees it. A
    case interrupted before its measurement ended has nothing to write.
    """
    try:
        return (yield)
    except KeyboardInterrupt:
        pending = item.stash.get(_RECORD, None)
        if pending is not None:
            pending.fields.update(outcome="interrupted", error="KeyboardInterrupt")
            if "schema" in pending.fields:  # the result is in: only the test's own code was interrupted
                _append_result(item, pending)
        raise


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    pending = item.stash.get(_RECORD, None)
    if report.skipped and pending is None and not hasattr(report, "wasxfail"):
        _uncount_skipped_case(item)
    if pending is not None and report.when == "call":
        record = pending.fields
        if hasattr(report, "wasxfail"):
            record["outcome"] = "xfailed" if report.skipped else "xpassed"
        else:
            record["outcome"] = report.outcome
        if report.failed and record["error"] is None:
            record["error"] = report.longrepr.reprcrash.message if hasattr(report.longrepr, "reprcrash") \
                else str(report.longrepr).strip().splitlines()[-1]
        _append_result(item, pending)
        item.config.stash.setdefault(_FINISHED, []).append(pending)
    return report


@pytest.hookimpl(wrapper=True, optionalhook=True)
def pytest_benchmark_generate_json(config: pytest.Config, benchmarks: list[Any], include_data: bool,
                                   machine_info: dict[str, Any], commit_info: dict[str, Any]) -> Any:
    """Leave out the benchmarks with no rounds: a case interrupted (Ctrl-C) before its first round ended.

    pytest-benchmark (5.2) computes every saved benchmark's statistics, fails on one with no rounds
    (``min() arg is an empty sequence``) and writes no ``--benchmark-json`` at all: one interrupted
    case would cost every finished one. pytest-benchmark's own table skips such benchmarks already.
    """
    benchmarks[:] = [bench for bench in benchmarks if bench.has_error or bench.stats]  # Stats: false without rounds
    return (yield)


def pytest_collection_finish(session: pytest.Session) -> None:
    """A results file that cannot be appended to stops the session now, in one line, not after the first case.

    Checked only when a collected test runs convergence or throughput cases: every pytest session where
    convbench is installed loads this plugin, and one without cases must not create the file.
    """
    config = session.config
    _check_case_ids(session)
    config.stash[_CASE_COUNT] = sum(map(_runs_a_case, session.items))
    if config.option.collectonly:
        _check_collected_cases(session)
        return
    path = results_path(config)
    if path is None or _secondary_rank():
        return
    if not any(map(_runs_a_case, session.items)):
        return
    try:
        results_file.check_appendable(path)
    except OSError as exc:
        raise pytest.UsageError(f"--convbench-results={config.getoption('convbench_results')!r}: cannot append "
                                f"to {path}: {exc.strerror or exc}") from None


def _runs_a_case(item: pytest.Item) -> bool:
    """Whether the test trains or times a case (uses the `convergence` or `throughput` fixture)."""
    return bool(_CASE_FIXTURES & set(getattr(item, "fixturenames", ())))


def _collected_cases(session: pytest.Session) -> list[tuple[pytest.Item, Case]]:
    """The cases convbench will train: parameters of tests that use one of its fixtures. A test that is
    given a Case for another reason (one that checks an invalid case's error, as convbench's own do)
    is not convbench's to validate or to name in its tables."""
    return [(item, value) for item in session.items
            if _runs_a_case(item)
            for value in getattr(getattr(item, "callspec", None), "params", {}).values() if isinstance(value, Case)]


def _check_case_ids(session: pytest.Session) -> None:
    """Two different collected cases with one id would be one row of every table and one name in
    `compare`: stop before anything trains, naming both tests."""
    first: dict[str, tuple[pytest.Item, Case]] = {}
    clashes = []
    scale = session.config.getoption("convbench_scale")
    for item, case in _collected_cases(session):
        try:
            configuration = case.at_scale(scale).replace(label=None, scales={})  # what trains this session
        except ConvbenchError:
            continue  # the case fails in its own test, in one line
        seen = first.setdefault(case.id, (item, configuration))
        if seen[1] != configuration:
            clashes.append(f"{seen[0].nodeid} and {item.nodeid} are different cases with the id {case.id!r}")
    if clashes:
        raise pytest.UsageError("; ".join(clashes) + ": give one a label (Case(label=...)) or build them with "
                                "grid(), whose ids name every varied field")


def _check_collected_cases(session: pytest.Session) -> None:
    """``--collect-only`` validates every collected case at the session's scale, without data: its fields
    (`Case.at_scale`), its component names and their keyword arguments, so that a suite's full scale can
    be checked on a machine that cannot train it. A run does the same checks per case, failing that case."""
    cases = _collected_cases(session)
    if not cases:
        return
    from convbench.components import check_components
    from convbench.registry import get_registry

    registry, scale = get_registry(), session.config.getoption("convbench_scale")
    problems = []
    for item, case in cases:
        try:
            check_components(case.at_scale(scale), registry)
        except ConvbenchError as exc:
            problems.append(f"{item.nodeid}: {exc}")
    if problems:
        raise pytest.UsageError(f"{len(problems)} of {len(cases)} collected cases are invalid at scale {scale!r}:\n"
                                + "\n".join(problems))


def _append_result(item: pytest.Item, record: _CaseRecord) -> None:
    """Write the finished case to the results file now, so an interrupted session keeps it.

    A write that fails (a full disk) costs this line only: the session goes on, later cases are
    still appended if they can be, and pytest-benchmark's own output keeps every case.
    """
    from convbench import resume

    path = results_path(item.config)
    if path is None or _secondary_rank() or resume.is_resumed(record.fields):  # a resumed case is there already
        return
    line = {
        "schema": RECORD_SCHEMA,
        resume.VERSION_KEY: __version__,  # what --convbench-resume matches
        "machine": {"node": platform.node()},  # what pytest-benchmark's machine_info calls the host
        "commit": _commit_info(item.config),
        "session": item.config.stash[_SESSION],
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "fullname": item.nodeid,
        "name": item.name,
        "group": record.fields.get("group"),
        "extra_info": {record.key: record.fields},
    }
    try:
        results_file.append_record(path, line)
    except OSError as exc:
        _note_lost_line(item, path, exc)


_LOST = pytest.StashKey[list]()


def _note_lost_line(item: pytest.Item, path: Path, exc: OSError) -> None:
    """Say so at once, the first time a line could not be written; the summary lists every such case."""
    lost = item.config.stash.setdefault(_LOST, [])
    lost.append(item.nodeid)
    if len(lost) == 1:
        kept = ", and --benchmark-json keeps every case" if item.config.getoption("benchmark_json", None) else ""
        _say(item.config, f"convbench: could not append {item.nodeid} to {path} ({exc.strerror or exc}); "
                          f"the session goes on{kept}")


_FINISHED = pytest.StashKey[list]()
#: The fixtures that train or time a case.
_CASE_FIXTURES = frozenset({"convergence", "throughput"})
_CASE_COUNT = pytest.StashKey[int]()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """convbench's summary after pytest-benchmark's tables: per group the best case, the diverged, stalled
    and failed ones and the target (`convbench.session_summary`), then where the results went."""
    finished = config.stash.get(_FINISHED, [])
    if finished and not _secondary_rank():
        from convbench.session_summary import summary

        terminalreporter.section("convbench summary")
        for line in summary([r.fields for r in finished if r.key == "convbench"],
                            [r.fields for r in finished if r.key != "convbench"]):
            terminalreporter.write_line(line)
        # pytest-benchmark's --benchmark-json is a path (5.x) or, in older versions, an open file
        written = [(what, getattr(path, "name", path)) for what, path in (
            ("results file", results_path(config)), ("benchmark JSON", config.getoption("benchmark_json", None)))
            if path is not None]
        for what, path in written:
            terminalreporter.write_line(f"{what}: {path}")
        if written:
            terminalreporter.write_line(f"tables and figures: convbench report {written[-1][1]}")
    lost = config.stash.get(_LOST, [])
    if lost:
        cases = f"{len(lost)} finished case{'s are' if len(lost) > 1 else ' is'}"
        terminalreporter.write_line(f"convbench: {cases} missing from {results_path(config)}: {', '.join(lost)}",
                                    yellow=True)


_COMMIT = pytest.StashKey[dict]()


def _commit_info(config: pytest.Config) -> dict[str, Any]:
    """pytest-benchmark's commit info, read once, when the first result is written (it runs git)."""
    if _COMMIT not in config.stash:
        from pytest_benchmark.utils import get_commit_info

        info = get_commit_info()
        config.stash[_COMMIT] = {"id": info.get("id"), "dirty": info.get("dirty")}
    return config.stash[_COMMIT]


def results_path(config: pytest.Config) -> Path | None:
    value = config.getoption("convbench_results")
    if not value or value.lower() == "none":
        return None
    path = Path(value).expanduser()
    return path if path.is_absolute() else Path(config.rootpath) / path


_PROGRESS = pytest.StashKey["ProgressLine | None"]()


def _progress_printer(config: pytest.Config) -> ProgressLine | None:
    """The session's live progress line (`convbench.progress_line`), made once; None without a terminal
    reporter (``-p no:terminal``) or under torchrun on a rank other than 0."""
    if _PROGRESS not in config.stash:
        from convbench.progress_line import ProgressLine

        reporter = config.pluginmanager.get_plugin("terminalreporter")
        line = None
        if reporter is not None and not _secondary_rank():
            line = ProgressLine(lambda: _visible_reporter(config), config.stash.get(_CASE_COUNT, 0),
                                interactive=bool(reporter.isatty()), width=reporter._tw.fullwidth)
        config.stash[_PROGRESS] = line
    return config.stash[_PROGRESS]


def _visible_reporter(config: pytest.Config) -> Any:
    """The terminal reporter, with pytest's output capture suspended while it is written to (as `_say`)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        return reporter
    return _Uncaptured(reporter, capture)


class _Uncaptured:
    """A terminal reporter whose writes pass pytest's capture (a test's output is captured while it runs)."""

    def __init__(self, reporter: Any, capture: Any) -> None:
        self._reporter, self._capture = reporter, capture

    def ensure_newline(self) -> None:
        """Start a new line: pytest's own only ends the line of a file's results, not quiet mode's dots."""
        with self._capture.global_and_fixture_disabled():
            self._reporter.ensure_newline()
            if self._reporter._tw.width_of_current_line:
                self._reporter._tw.line()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._reporter, name)

        def uncaptured(*args: Any, **kwargs: Any) -> Any:
            with self._capture.global_and_fixture_disabled():
                return method(*args, **kwargs)

        return uncaptured


def _uncount_skipped_case(item: pytest.Item) -> None:
    """A case skipped before it started (a skip mark, another world size under torchrun) leaves the
    progress line's total, so that its last case reads N/N."""
    if not _runs_a_case(item):
        return
    config = item.config
    config.stash[_CASE_COUNT] = max(0, config.stash.get(_CASE_COUNT, 0) - 1)  # for a line made later
    line = config.stash.get(_PROGRESS, None)
    if line is not None:
        line.total_cases = max(line.index, line.total_cases - 1)


def _start_progress(request: pytest.FixtureRequest, settings: RunSettings, case_id: str) -> ProgressLine | None:
    line = _progress_printer(request.config) if settings.progress is not None else None
    if line is not None:
        line.start_case(case_id)
    return line


def _say(config: pytest.Config, line: str) -> None:
    """Print a line now, while a test runs, past pytest's output capture (as pytest's live logging does).

    Not `warnings.warn`: under ``-W error`` a warning raised here would become the INTERNALERROR it reports.
    """
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        return
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
        reporter.ensure_newline()
        reporter.write_line(line)


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict[str, Any]) -> None:
    import torch
    import torchvision

    cuda = torch.cuda.is_available()
    machine_info["convbench"] = {
        "version": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "cuda": torch.version.cuda,
        "cuda_available": cuda,
        "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else ["cpu"],
        "torch_threads": torch.get_num_threads(),
        "scale": config.getoption("convbench_scale"),
    }


def pytest_report_header(config: pytest.Config) -> list[str]:
    """One line when the machine is already busy and torch's threads would fight the other work
    (`convbench.busy_start`)."""
    from convbench.busy_start import busy_machine_hint

    hint = None if _secondary_rank() else busy_machine_hint(config.getoption("convbench_threads"))
    return [hint] if hint else []
