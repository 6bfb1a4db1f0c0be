"""`pytest -n N` without starting workers: the device plan, GPUs faked through ``torch.cuda``, what the
controller tells each worker, what a worker refuses to run, the ``parallel`` field, and how the report and
`convbench compare` treat parallel runs. Sessions with real workers are in ``test_xdist_sessions.py``."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import execnet
import pytest
import torch
from pytest_benchmark.stats import Metadata
from test_compare_gate import gate, seeds

from convbench import Case, worker_devices, xdist_support
from convbench.cli import main
from convbench.errors import ConvbenchError
from convbench.pytest_plugin import _SESSION
from convbench.report import load as loader
from convbench.report.figures.style import run_flags
from convbench.report.identity import headline
from convbench.report.tables import group_tables
from convbench.result import Parallel, ResultSchemaError, RunResult

pytest_plugins = ["pytester"]


@pytest.fixture
def gpus(monkeypatch: pytest.MonkeyPatch) -> Any:
    """``gpus(n)`` makes torch see ``n`` CUDA devices (none are here), as `worker_devices.visible_gpus` asks."""
    def fake(count: int) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)

    monkeypatch.delenv(worker_devices.CUDA_VISIBLE, raising=False)
    return fake


# --------------------------------------------------------------------------------- the plan
def test_gpu_k_for_worker_k(gpus: Any) -> None:
    gpus(4)
    plan = worker_devices.plan(4, worker_devices.visible_gpus(), cores=64)
    assert [d.device for d in plan] == ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]
    assert [d.environment() for d in plan] == [{"CUDA_VISIBLE_DEVICES": str(k)} for k in range(4)]
    assert all(d.threads is None for d in plan)  # on GPUs the session's own thread setting applies


def test_fewer_workers_than_gpus_get_blocks(gpus: Any) -> None:
    gpus(8)
    plan = worker_devices.plan(3, worker_devices.visible_gpus(), cores=64)
    assert [d.environment()["CUDA_VISIBLE_DEVICES"] for d in plan] == ["0,1", "2,3", "4,5"]  # GPUs 6, 7 idle
    assert plan[1].device == "cuda:2,cuda:3"


def test_cuda_visible_devices_is_respected(gpus: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The session's own CUDA_VISIBLE_DEVICES narrows the GPUs, and its entries (UUIDs too) are what workers get."""
    gpus(2)  # what CUDA reports once the variable narrowed it
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5, GPU-1f2e")
    plan = worker_devices.plan(2, worker_devices.visible_gpus(), cores=8)
    assert [d.environment() for d in plan] == [{"CUDA_VISIBLE_DEVICES": "5"}, {"CUDA_VISIBLE_DEVICES": "GPU-1f2e"}]
    assert [d.device for d in plan] == ["cuda:0", "cuda:1"]  # the session's numbering


def test_hidden_gpus_mean_cpu_workers(gpus: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    gpus(0)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert worker_devices.visible_gpus() == []
    assert [d.device for d in worker_devices.plan(2, [], cores=4)] == ["cpu", "cpu"]


def test_more_workers_than_gpus_is_one_line(gpus: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    gpus(2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    with pytest.raises(ConvbenchError) as error:
        worker_devices.plan(3, worker_devices.visible_gpus(), cores=64)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("-n 3: 3 pytest-xdist workers but 2 GPU(s) visible (CUDA_VISIBLE_DEVICES=0,1)")
    assert "use -n 2 or fewer" in message


@pytest.mark.parametrize(("workers", "cores", "threads", "expected"), [
    (2, 8, None, 4),  # an even share of the cores
    (3, 8, None, 2),  # rounded down: never more threads than cores
    (4, 2, None, 1),  # more workers than cores: one thread each
    (2, 8, 1, 1),  # never more than --convbench-threads
    (2, 8, 16, 4),  # nor more than the share
])
def test_cpu_workers_share_the_cores(workers: int, cores: int, threads: int | None, expected: int) -> None:
    plan = worker_devices.plan(workers, [], cores=cores, threads=threads)
    assert [d.threads for d in plan] == [expected] * workers
    assert [d.environment() for d in plan] == [{}] * workers


def test_auto_is_one_worker_per_gpu(gpus: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTEST_XDIST_AUTO_NUM_WORKERS", raising=False)
    gpus(3)
    assert xdist_support.auto_workers(None) == 3
    monkeypatch.setenv("PYTEST_XDIST_AUTO_NUM_WORKERS", "5")  # pytest-xdist's own override still wins
    assert xdist_support.auto_workers(None) is None
    monkeypatch.delenv("PYTEST_XDIST_AUTO_NUM_WORKERS")
    gpus(0)
    assert xdist_support.auto_workers(None) is None  # pytest-xdist's count of CPU cores


# --------------------------------------------------------------------------- the controller
def controller(gpu_count: int, workers: int, gpus: Any) -> xdist_support.ControllerPlugin:
    gpus(gpu_count)
    config = SimpleNamespace(stash={_SESSION: "s1"})
    return xdist_support.ControllerPlugin(config, worker_devices.plan(workers, worker_devices.visible_gpus(), 8))


def test_each_worker_starts_on_its_gpu(gpus: Any) -> None:
    """execnet sets a spec's env in the worker before its Python imports anything: that is where the GPU goes."""
    plugin = controller(2, 2, gpus)
    specs = [execnet.XSpec("execmodel=main_thread_only//popen") for _ in range(2)]
    plugin.pytest_xdist_setupnodes(None, specs)
    assert [spec.env for spec in specs] == [{"CUDA_VISIBLE_DEVICES": "0"}, {"CUDA_VISIBLE_DEVICES": "1"}]
    nodes = [SimpleNamespace(gateway=SimpleNamespace(spec=spec), workerinput={}) for spec in specs]
    for node in nodes:
        plugin.pytest_configure_node(node)
    told = [node.workerinput["convbench"] for node in nodes]
    assert {t["session"] for t in told} == {"s1"}  # one session id in the results file
    assert [worker_devices.WorkerDevice.from_dict(t["device"]) for t in told] == plugin.plan


def test_a_replacement_worker_keeps_the_crashed_ones_gpu(gpus: Any) -> None:
    """pytest-xdist restarts a crashed worker from the same spec under a new id (gw2): same GPU, not GPU 2."""
    plugin = controller(2, 2, gpus)
    specs = [execnet.XSpec("execmodel=main_thread_only//popen") for _ in range(2)]
    plugin.pytest_xdist_setupnodes(None, specs)
    replacement = SimpleNamespace(gateway=SimpleNamespace(spec=specs[1]), workerinput={})
    plugin.pytest_configure_node(replacement)
    assert replacement.workerinput["convbench"]["device"]["gpus"] == ["1"]


def test_remote_workers_are_left_alone(gpus: Any) -> None:
    plugin = controller(1, 1, gpus)
    specs = [execnet.XSpec("ssh=elsewhere//python=python3")]
    plugin.pytest_xdist_setupnodes(None, specs)
    assert specs[0].env == {}


def test_too_many_workers_stop_the_session_before_any_starts(pytester: pytest.Pytester, gpus: Any) -> None:
    gpus(2)
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = pytester.runpytest("-n", "3", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: -n 3: 3 pytest-xdist workers but 2 GPU(s) visible; each worker trains on "
                                 "GPUs of its own: use -n 2 or fewer*"])
    assert "bringing up nodes" not in result.stdout.str()


# ------------------------------------------------------------------------------- a worker
def worker_config(**device: Any) -> Any:
    """A worker's config as the controller briefed it: slot 0 of 2 on a CPU, unless ``device`` says otherwise."""
    told = {"session": "s1", "device": {"slot": 0, "workers": 2, "gpus": [], "gpu_indices": [], "threads": 1, **device}}
    return SimpleNamespace(workerinput={"convbench": told})


def test_throughput_cases_are_refused_beside_other_workers() -> None:
    case = Case(model="softmax", optimizer="sgd", lr=0.1, steps=10)
    reason = xdist_support.refusal(case, worker_config(), throughput=True)
    assert reason is not None and "\n" not in reason
    assert "throughput case: it times the machine alone, not beside 1 other worker(s); run it without -n" in reason
    assert xdist_support.refusal(case, worker_config()) is None  # the same case, trained, runs


def test_multi_process_cases_on_cpus_are_refused() -> None:
    case = Case(model="softmax", optimizer="sgd", lr=0.1, steps=10, world_size=2)
    reason = xdist_support.refusal(case, worker_config())
    assert reason is not None
    assert "world_size=2 on CPUs: its 2 processes would share the cores" in reason


def test_multi_process_cases_get_their_workers_gpu_block() -> None:
    two = worker_config(gpus=["2", "3"], gpu_indices=[2, 3], threads=None)
    case = Case(model="softmax", optimizer="sgd", lr=0.1, steps=10, world_size=2, batch_size=100)
    assert xdist_support.refusal(case, two) is None  # ranks 0 and 1 on the worker's cuda:2 and cuda:3
    reason = xdist_support.refusal(case.replace(world_size=4), two)
    assert reason is not None
    assert "world_size=4 on 2 GPU(s) per worker: under -n 2 each worker has 2 (gw?: cuda:2,cuda:3); -n 1 gives " \
           "each 4; run it without -n" in reason


def test_a_case_naming_one_gpu_is_refused() -> None:
    one = worker_config(gpus=["1"], gpu_indices=[1], threads=None)
    reason = xdist_support.refusal(Case(model="softmax", optimizer="sgd", lr=0.1, steps=10, device="cuda:1"), one)
    assert reason is not None and "device='cuda:1': names one GPU" in reason


@pytest.mark.parametrize("config", [SimpleNamespace(), worker_config(workers=1)], ids=["serial", "one worker"])
def test_nothing_is_refused_without_other_workers(config: Any) -> None:
    case = Case(model="softmax", optimizer="sgd", lr=0.1, steps=10, world_size=2)
    assert xdist_support.refusal(case, config, throughput=True) is None
    assert xdist_support.parallel(config) is None


def test_a_cpu_worker_trains_with_its_share_of_threads_in_the_controllers_session() -> None:
    config = worker_config(threads=3)
    config.stash, config.option = {_SESSION: "own"}, SimpleNamespace(convbench_threads=None)
    xdist_support.WorkerPlugin().pytest_configure(config)
    assert config.option.convbench_threads == 3  # what the session's settings fixture gives torch
    assert config.stash[_SESSION] == "s1"


def test_a_gpu_worker_keeps_the_sessions_threads() -> None:
    config = worker_config(gpus=["0"], gpu_indices=[0], threads=None)
    config.stash, config.option = {_SESSION: "own"}, SimpleNamespace(convbench_threads=2)
    xdist_support.WorkerPlugin().pytest_configure(config)
    assert config.option.convbench_threads == 2


def test_results_record_the_worker_and_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw1")
    shared = xdist_support.parallel(worker_config(slot=1, gpus=["3"], gpu_indices=[1], threads=None))
    assert shared == Parallel(workers=2, worker="gw1", device="cuda:1", threads=None)


# ------------------------------------------------------------------------------- the record
def result_with(parallel: Any) -> dict[str, Any]:
    entry = seeds([1.0])[0]["extra_info"]["convbench"]
    if parallel is not None:
        entry["parallel"] = parallel
    return entry


def test_parallel_round_trips_and_a_run_alone_writes_none() -> None:
    alone = RunResult.from_dict(result_with(None))
    assert alone.parallel is None and "parallel" not in alone.to_dict()  # files of runs alone are as before
    shared = {"workers": 2, "worker": "gw0", "device": "cpu", "threads": 1}
    run = RunResult.from_dict(result_with(shared))
    assert run.parallel == Parallel(2, "gw0", "cpu", 1)
    assert run.to_dict()["parallel"] == shared


def test_a_malformed_parallel_names_its_field() -> None:
    with pytest.raises(ResultSchemaError, match=r"field 'parallel\.workers': expected a whole number, got '2'"):
        RunResult.from_dict(result_with({"workers": "2", "worker": "gw0", "device": "cpu"}))


def test_a_worker_benchmark_is_rebuilt_with_the_same_statistics() -> None:
    """The controller's pytest-benchmark saves and prints a worker's case from its rounds: every statistic
    it writes must be what the worker's own would have written."""
    fixture = SimpleNamespace(name="test_x[a]", fullname="s.py::test_x[a]", group="g", param="a", params={"case": "a"},
                              extra_info={"convbench": {"case_id": "a"}}, cprofile_stats=None, has_error=False)
    original = Metadata(fixture, 1, {"rounds": 3, "timer": "perf_counter"})
    for seconds in (0.3, 0.1, 0.25):
        original.update(seconds)
    entry = json.loads(json.dumps({**original.as_dict(include_data=True), "has_error": False}))
    rebuilt = xdist_support.benchmark_from_entry(entry)
    assert rebuilt.as_dict(include_data=True) == original.as_dict(include_data=True)
    assert rebuilt.has_error is False and bool(rebuilt)


# ------------------------------------------------------------------------- report and compare
def entries(times: list[float], parallel: dict[str, Any] | None, **fields: Any) -> list[dict[str, Any]]:
    runs = seeds(times, **fields)
    for worker, entry in enumerate(runs):
        if parallel is not None:
            entry["extra_info"]["convbench"]["parallel"] = {**parallel, "worker": f"gw{worker % 2}"}
    return runs


TWO = {"workers": 2, "device": "cpu", "threads": 1}


def test_compare_does_not_judge_a_parallel_time_against_one_alone(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Three times slower, but measured beside another case: not a regression, and the note says why."""
    code, out, _ = gate(capsys, tmp_path, entries([1.0, 1.1, 1.05], None), entries([3.0, 3.1, 3.05], TWO))
    assert code == 0, out
    assert "times not compared: measured alone in BASE, beside other cases (-n 2) in NEW" in out
    assert "times not judged for 1 of 1 case: 1 measured beside other cases (pytest -n) on one side only" in out


def test_compare_still_judges_quality_across_parallel_and_alone(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = gate(capsys, tmp_path, entries([1.0, 1.1, 1.05], None),
                        entries([1.0, 1.1, 1.05], TWO, accuracy=0.7))
    assert code == 1
    assert "REGRESSION: final_test_accuracy -0.2, worse by more than 0.01" in out


def test_compare_judges_times_taken_beside_as_many_cases(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = gate(capsys, tmp_path, entries([1.0, 1.1, 1.05], TWO), entries([3.0, 3.1, 3.05], TWO))
    assert code == 1
    assert "REGRESSION: slower" in out


def test_tables_say_which_runs_were_parallel(tmp_path: Path) -> None:
    path = tmp_path / "mixed.json"
    mixed = entries([1.0, 1.1], TWO) + entries([1.0], None, lr=0.5)
    path.write_text(json.dumps({"machine_info": {"node": "host"}, "benchmarks": mixed}), encoding="utf-8")
    records = loader.load(path).records
    metric = headline(records)
    frame = loader.to_frame(records, metric.split)
    assert sorted(frame["parallel_device"].map(str)) == ["None", "gw0 cpu", "gw1 cpu"]
    table = group_tables(frame, metric)["g"]
    assert dict(zip(table["case"], table["parallel"], strict=True)) == {
        "softmax-sgd-lr0.1-bs100": "2 workers", "softmax-sgd-lr0.5-bs100": "alone"}
    assert main(["report", str(path), "-o", str(tmp_path / "report"), "--no-figures"]) == 0
    assert "| parallel" in (tmp_path / "report" / "tables" / "g.md").read_text(encoding="utf-8")


def test_tables_of_runs_alone_have_no_parallel_column(tmp_path: Path) -> None:
    path = tmp_path / "alone.json"
    path.write_text(json.dumps({"benchmarks": entries([1.0], None)}), encoding="utf-8")
    records = loader.load(path).records
    assert "parallel" not in loader.to_frame(records, headline(records).split).columns


def test_figure_legends_flag_parallel_runs() -> None:
    records = [entry["extra_info"]["convbench"] for entry in entries([1.0, 1.1, 1.2], TWO)]
    assert run_flags(records[:1]) == " (parallel)"
    assert run_flags([*records[:2], copy.deepcopy(result_with(None))]) == " (2 parallel)"
