"""Cases on 1, 2 and 4 processes (DDP over gloo): same results, strong and weak scaling, a reused
worker pool, and faults (a crashing rank, a hanging rank, a user error in a worker) handled."""

from __future__ import annotations

import atexit
import contextlib
import json
import multiprocessing
import os
import queue
import re
import socket
import subprocess
import sys
import textwrap
import time

import psutil
import pytest
import torch

from convbench import launch
from convbench.case import Case
from convbench.distributed import TORCHRUN_VARS
from convbench.engine import RunSettings, resolve_device
from convbench.errors import CaseError, CaseTimeoutError, ConvbenchError, RankFailedError
from convbench.pool import (
    _POOLS,
    STOP,
    Done,
    Ready,
    Request,
    RequestKind,
    WorkerPool,
    _worker_main,
    check_devices_for,
    free_port,
)
from convbench.registry import get_registry
from convbench.torchrun import destroy_process_group, join_process_group

SOFTMAX = Case(model="softmax", dataset="mnist-5k", optimizer="sgd", lr=0.5, batch_size=100, epochs=2,
               eval_every=35, eval_train_samples=500)


@pytest.fixture(autouse=True)
def fresh_pools():
    launch.close_pools()
    yield
    launch.close_pools()


@pytest.mark.slow
def test_one_two_and_four_processes_give_the_same_run():
    results = {w: launch.run_case(SOFTMAX.replace(world_size=w)) for w in (1, 2, 4)}
    one = results[1]
    for world_size in (2, 4):
        result = results[world_size]
        assert result.world_size == world_size
        assert (result.steps, result.samples) == (one.steps, one.samples)  # strong scaling: same global batches
        # averaging the ranks' gradients of a split batch is the batch's gradient: only float rounding differs
        # (the message shows both runs whole: a mismatch seen once under load is not yet explained)
        seen = (f"world size {world_size}: stop {result.stop_reason}, losses {result.curves['train']['loss']}, "
                f"evals {result.curves['eval']}; one process: losses {one.curves['train']['loss']}, "
                f"evals {one.curves['eval']}")
        assert result.stop_reason == one.stop_reason == "budget" and not result.diverged, seen
        assert result.final["test_accuracy"] == pytest.approx(one.final["test_accuracy"], abs=0.005), seen
        assert result.curves["train"]["loss"] == pytest.approx(one.curves["train"]["loss"], rel=1e-3), seen
        assert result.timing.startup_s > 0 and result.timing.process_group_init_s > 0
        assert result.timing.pool_reused is False
        # on CPUs the first rank of each machine samples it; rank 0 gathers every rank's telemetry
        assert [rank is not None for rank in result.telemetry.ranks] == [True] + [False] * (world_size - 1)
        assert [(d["rank"], d["name"]) for d in result.telemetry.devices] == [(0, "cpu")]


@pytest.mark.slow
def test_the_pool_is_reused_across_cases():
    first = launch.run_case(SOFTMAX.replace(world_size=2, epochs=None, steps=5))
    pids = [p.pid for p in _POOLS[(2, "cpu")].processes]
    second = launch.run_case(SOFTMAX.replace(world_size=2, epochs=None, steps=5, seed=1))
    assert [p.pid for p in _POOLS[(2, "cpu")].processes] == pids
    assert second.timing.pool_reused is True and second.timing.startup_s == 0.0
    assert first.timing.pool_reused is False
    assert second.curves["train"]["loss"] != first.curves["train"]["loss"]  # the seed reached the workers


@pytest.mark.slow
def test_weak_scaling_gives_every_rank_the_batch():
    one = launch.run_case(SOFTMAX.replace(epochs=1))
    two = launch.run_case(SOFTMAX.replace(epochs=1, world_size=2, scaling="weak"))
    assert two.steps == one.steps // 2  # a global batch of 200: half the steps per epoch
    assert two.samples == two.steps * 200


@pytest.mark.slow
def test_strong_scaling_splits_an_uneven_batch_exactly():
    # 50 over 4 ranks: shares of 12 and 13 samples, weighted so the gradient is the global batch's
    one = launch.run_case(SOFTMAX.replace(batch_size=50, epochs=1))
    four = launch.run_case(SOFTMAX.replace(batch_size=50, epochs=1, world_size=4))
    assert (four.steps, four.samples) == (one.steps, one.samples)
    assert four.curves["train"]["loss"] == pytest.approx(one.curves["train"]["loss"], rel=1e-3)
    assert four.final["test_accuracy"] == pytest.approx(one.final["test_accuracy"], abs=0.005)


@pytest.mark.slow
def test_augmentation_is_the_same_on_one_and_two_processes_and_dropout_is_not():
    # rotation, random crop and random noise erasing: every rank draws the global batch's parameters
    case = SOFTMAX.replace(model="mlp", epochs=None, steps=20, batch_size=50, eval_every=10, augmentations=(
        ("rotation", {"degrees": 20}), ("random_crop", {"padding": 2}), ("random_erasing", {"value": "random"})))
    runs = {(dropout, world_size): launch.run_case(case.replace(model_kwargs={"dropout": dropout},
                                                                world_size=world_size))
            for dropout in (0.0, 0.5) for world_size in (1, 2)}
    # each sample is augmented as in one process: only float rounding differs
    assert runs[0.0, 2].curves["train"]["loss"] == pytest.approx(runs[0.0, 1].curves["train"]["loss"], rel=1e-3)
    # dropout masks are drawn per rank, from streams one process never draws from: the runs differ
    assert runs[0.5, 2].curves["train"]["loss"] != pytest.approx(runs[0.5, 1].curves["train"]["loss"], rel=1e-3)


@pytest.mark.slow
def test_a_user_error_in_a_worker_is_one_line_and_the_pool_survives_replacement():
    with pytest.raises(ConvbenchError, match="unknown optimizer 'adma'") as info:
        launch.run_case(SOFTMAX.replace(optimizer="adma", world_size=2))
    assert "\n" not in str(info.value)
    assert launch.run_case(SOFTMAX.replace(world_size=2, epochs=None, steps=3)).steps == 3


@pytest.mark.slow
def test_a_prepared_case_runs_once_and_a_later_one_on_its_pool_supersedes_it():
    case = SOFTMAX.replace(world_size=2, epochs=None, steps=3)
    with launch.prepare(case) as first:
        assert first.global_batch == 100 and first.startup_s > 0  # the pool started for it
        with launch.prepare(case.replace(seed=1)) as second:
            assert second.startup_s == 0.0  # the pool was running already
            with pytest.raises(ConvbenchError, match=r"is no longer prepared on the 2-process pool"):
                first.run()
            assert second.run().steps == 3
            with pytest.raises(ConvbenchError, match=r"is no longer prepared"):
                second.run()  # a prepared case trains once
    assert launch.run_case(case).timing.pool_reused is True  # none of this broke the pool


def test_a_registry_in_the_settings_cannot_follow_a_case_into_workers():
    with pytest.raises(ConvbenchError, match=r"RunSettings.registry applies in this process only, .* valid choices"):
        launch.run_case(SOFTMAX.replace(world_size=2), RunSettings(registry=get_registry()))
    assert not _POOLS  # refused before any worker started


@pytest.mark.slow
def test_progress_of_rank_zero_reaches_the_session():
    seen = []
    launch.run_case(SOFTMAX.replace(world_size=2, epochs=None, steps=10, eval_every=5),
                    RunSettings(progress=seen.append))
    assert [event.step for event in seen] == [0, 5, 10]


# ------------------------------------------------------------------------------------- faults
FAULTS = '''
import json
import os
import signal
import threading
import time

import torch
from torch import nn

import convbench


class Faulty(nn.Module):
    """Linear model that fails on one rank after a few training steps: by raising, hanging, exiting or being killed."""

    def __init__(self, input_shape, num_outputs, mode="raise", rank=1, after=2):
        super().__init__()
        self.linear = nn.Linear(int(torch.tensor(input_shape).prod()), num_outputs)
        self.mode, self.rank, self.after, self.calls = mode, rank, after, 0

    def forward(self, x):
        if self.training and int(os.environ.get("RANK", 0)) == self.rank:
            self.calls += 1
            if self.calls > self.after:
                if self.mode == "raise":
                    raise RuntimeError(f"injected failure on rank {self.rank}")
                if self.mode == "exit":
                    os._exit(3)  # no exception, no clean-up: the process is gone
                if self.mode == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                threading.Event().wait()  # a rank that never returns
        return self.linear(x.flatten(1))


def logged_download(root, download=False):
    """Records when this rank's load began and ended, in the data root."""
    began = time.time()
    if download:
        time.sleep(0.5)  # stands in for the download's time on the network
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(200, 4, generator=generator)
    root.mkdir(parents=True, exist_ok=True)
    (root / f"load-rank{os.environ['RANK']}.json").write_text(json.dumps([began, time.time()]))
    return convbench.DatasetSplits(train=(x, (x[:, 0] > 0).long()), num_outputs=2)


@convbench.hookimpl
def convbench_register_models(register):
    register("faulty", Faulty)


@convbench.hookimpl
def convbench_register_datasets(register):
    register("logged_download", logged_download)
'''


@pytest.fixture
def faults_plugin(tmp_path, monkeypatch):
    """A test plugin installed as a distribution that the spawned workers also see."""
    (tmp_path / "convbench_faults.py").write_text(FAULTS)
    dist_info = tmp_path / "convbench_faults-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: convbench-faults\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text("[convbench]\nfaults = convbench_faults\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # spawned workers start with the parent's sys.path
    monkeypatch.delenv("CONVBENCH_LOAD_PLUGINS", raising=False)
    return SOFTMAX.replace(model="faulty", world_size=2, epochs=None, steps=10)


def assert_pool_gone(pool):
    assert not any(process.is_alive() for process in pool.processes)
    assert (2, "cpu") not in _POOLS or _POOLS[(2, "cpu")] is not pool


@pytest.mark.slow
def test_a_crashing_rank_fails_its_case_with_the_rank_traceback(faults_plugin):
    with pytest.raises(RankFailedError) as info:
        launch.run_case(faults_plugin)
    message = str(info.value)
    assert message.startswith("rank 1 failed in case")
    assert "RuntimeError: injected failure on rank 1" in message and "Traceback" in message


@pytest.mark.slow
@pytest.mark.parametrize(("mode", "death"), [("exit", "exit code 3"), ("kill", "signal SIGKILL")])
def test_a_rank_that_dies_is_named_with_its_exit_code_or_signal(faults_plugin, mode, death):
    with pytest.raises(RankFailedError) as info:
        launch.run_case(faults_plugin.replace(model_kwargs={"mode": mode}))
    story = str(info.value).splitlines()[0]  # not rank 0's "connection reset by peer", which follows from it
    assert re.fullmatch(rf"rank 1 \(pid \d+\) died with {death} while running case "
                        rf"'faulty-sgd-lr0.5-bs100-w2-mode{mode}'", story), story


@pytest.mark.slow
def test_after_a_crash_the_next_case_runs_on_a_new_pool(faults_plugin):
    launch.run_case(SOFTMAX.replace(world_size=2, epochs=None, steps=2))
    old = _POOLS[(2, "cpu")]
    with pytest.raises(RankFailedError):
        launch.run_case(faults_plugin)
    assert_pool_gone(old)
    result = launch.run_case(SOFTMAX.replace(world_size=2, epochs=None, steps=4))
    assert result.steps == 4 and result.timing.pool_reused is False


@pytest.mark.slow
def test_a_hanging_rank_is_stopped_by_the_timeout(faults_plugin):
    launch.run_case(SOFTMAX.replace(world_size=2, epochs=None, steps=2))  # pool started outside the timed part
    pool = _POOLS[(2, "cpu")]
    started = time.monotonic()
    with pytest.raises(CaseTimeoutError, match=r"did not finish within 3 s on 2 processes"):
        launch.run_case(faults_plugin.replace(model_kwargs={"mode": "hang"}), timeout_s=3)
    assert time.monotonic() - started < 3 + 15  # the timeout, plus joining and killing the workers
    assert_pool_gone(pool)


@pytest.mark.slow
def test_ranks_that_may_download_load_in_turns(faults_plugin, tmp_path):
    root = tmp_path / "data"
    case = SOFTMAX.replace(dataset="logged_download", world_size=2, epochs=None, steps=2, eval_train_samples=None)
    launch.run_case(case, RunSettings(data_root=root, download=True))
    (_, ended0), (began1, _) = (json.loads((root / f"load-rank{r}.json").read_text()) for r in (0, 1))
    assert began1 >= ended0  # rank 1 read what rank 0 had finished writing


@pytest.mark.slow
def test_the_settings_timeout_applies():
    settings = RunSettings(timeout_s=1e-3)
    with pytest.raises(CaseTimeoutError):
        launch.run_case(SOFTMAX.replace(world_size=2), settings)


@pytest.fixture
def taken_port():
    """A port some other program listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.slow
def test_a_port_taken_before_rank_zero_listens_is_replaced(taken_port, monkeypatch):
    ports = [taken_port]  # the race: free when chosen, taken by the time rank 0 listens
    monkeypatch.setattr("convbench.pool.free_port", lambda real=free_port: ports.pop() if ports else real())
    pool = WorkerPool(2, "cpu")
    try:
        assert not ports and pool.alive()
        assert pool.startup_s > pool.process_group_init_s > 0
    finally:
        pool.close()


@pytest.mark.slow
def test_a_pool_that_cannot_start_leaves_no_process_behind(taken_port, monkeypatch):
    monkeypatch.setattr("convbench.pool.free_port", lambda: taken_port)
    monkeypatch.setattr("convbench.pool._PORT_ATTEMPTS", 2)
    with pytest.raises(RankFailedError, match="EADDRINUSE"):
        WorkerPool(2, "cpu")
    assert [p.name for p in multiprocessing.active_children() if p.name.startswith("convbench-rank")] == []


@pytest.mark.slow
def test_workers_of_a_killed_session_exit_even_in_the_middle_of_a_case(tmp_path):
    script = tmp_path / "session.py"
    script.write_text(textwrap.dedent('''
        from convbench import Case, launch
        from convbench.engine import RunSettings
        from convbench.pool import _POOLS

        def announce(progress):  # rank 0 has evaluated: the case is under way on every rank
            pids = [process.pid for process in _POOLS[(2, "cpu")].processes]
            print("WORKERS", *pids, flush=True)

        if __name__ == "__main__":
            case = Case(model="softmax", dataset="mnist-5k", optimizer="sgd", lr=0.1, batch_size=10, steps=10**6,
                        eval_every=10**5, world_size=2)
            launch.run_case(case, RunSettings(progress=announce))
    '''))
    session = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    workers: list[psutil.Process] = []
    try:
        line = session.stdout.readline()  # blocks until the case runs (or the session ends, giving "")
        assert line.startswith("WORKERS"), line
        workers += [psutil.Process(int(pid)) for pid in line.split()[1:]]
        session.kill()
        session.wait(timeout=30)
        _, alive = psutil.wait_procs(workers, timeout=30)
        assert alive == [], f"orphaned workers: {alive}"
    finally:
        session.kill()
        session.stdout.close()
        for worker in workers:  # a failed check must not leave them running
            with contextlib.suppress(psutil.NoSuchProcess):
                worker.kill()


# ------------------------------------------------------------------------------ GPUs (faked)
@pytest.fixture
def gpus(monkeypatch):
    """Pretend this machine has ``count`` CUDA devices; returns a setter. Nothing may touch a real GPU."""
    def have(count: int, current: int = 0) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: current)

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return have


def test_cuda_without_an_index_means_this_rank_gpu(gpus):
    gpus(4, current=2)
    assert resolve_device("cuda") == torch.device("cuda", 2)
    assert resolve_device("auto") == torch.device("cuda", 2)
    assert resolve_device("cuda:3") == torch.device("cuda", 3)
    with pytest.raises(CaseError, match=r"invalid device='cuda:4': 4 GPU\(s\) visible; valid choices: 'cuda:0',"):
        resolve_device("cuda:4")


def test_more_ranks_than_gpus_fail_before_any_worker_starts(gpus, monkeypatch):
    gpus(1)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    with pytest.raises(CaseError) as info:
        launch.run_case(SOFTMAX.replace(world_size=2, device="cuda"))
    assert str(info.value) == ("world_size=2 needs 2 GPUs, one per rank, but 1 is visible (CUDA_VISIBLE_DEVICES="
                               "'3'); valid choices: a world size up to 1, or device='cpu' (gloo)")
    assert not _POOLS
    with pytest.raises(CaseError, match="world_size=4 needs 4 GPUs"):
        launch.prepare(SOFTMAX.replace(world_size=4), RunSettings())  # 'auto' picks the GPU
    assert not _POOLS


def test_enough_gpus_pass_the_check_and_cpus_always_do(gpus):
    gpus(4)
    check_devices_for(4, torch.device("cuda", 0))
    gpus(0)
    check_devices_for(4, torch.device("cpu"))
    with pytest.raises(CaseError, match=r"world_size=2 on device 'mps': .* valid choices: device='auto'"):
        check_devices_for(2, torch.device("mps"))


@pytest.fixture
def fake_init(monkeypatch):
    """Record what set_device and init_process_group are called with, instead of calling them."""
    import torch.distributed as dist

    calls: list[tuple] = []
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(("set_device", device)))
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda *args, **kwargs: calls.append(("init", args, kwargs)))
    monkeypatch.setattr(dist, "destroy_process_group", lambda: calls.append(("destroy",)))
    monkeypatch.setattr(atexit, "register", lambda function: calls.append(("atexit", function)))
    return calls


def test_a_gpu_worker_binds_its_gpu_to_nccl_before_reporting_ready(gpus, fake_init, monkeypatch):
    gpus(2)
    for name in TORCHRUN_VARS:  # the worker sets them in its (here: this) process: undone afterwards
        monkeypatch.setenv(name, "")  # (delenv alone would not restore a variable that was not set)
        monkeypatch.delenv(name)
    tasks, results = queue.Queue(), queue.Queue()
    tasks.put(STOP)  # stop at once after joining
    _worker_main(1, 2, 12345, "cuda", tasks, results)
    assert fake_init[:2] == [("set_device", torch.device("cuda", 1)),
                             ("init", ("nccl",), {"rank": 1, "world_size": 2, "device_id": torch.device("cuda", 1)})]
    ready = results.get_nowait()
    assert isinstance(ready, Ready) and ready.rank == 1


@pytest.mark.parametrize(("gpu_count", "local_rank", "expected"), [(4, 2, 2), (1, 3, 0)],
                         ids=["one-of-four", "the-only-visible-one"])
def test_under_torchrun_a_gpu_rank_joins_a_group_for_cuda_and_cpu_cases(gpus, fake_init, monkeypatch,
                                                                         gpu_count, local_rank, expected):
    gpus(gpu_count)
    monkeypatch.setenv("LOCAL_RANK", str(local_rank))
    join_process_group(SOFTMAX.replace(device="cpu"))  # a CPU case first must not decide for all
    device = torch.device("cuda", expected)
    assert fake_init[:2] == [("set_device", device), ("init", ("cpu:gloo,cuda:nccl",), {"device_id": device})]
    assert fake_init[2] == ("atexit", destroy_process_group)


def test_under_torchrun_more_processes_than_gpus_fail_in_one_line(gpus, fake_init, monkeypatch):
    gpus(4)
    monkeypatch.setenv("LOCAL_RANK", "5")
    with pytest.raises(CaseError, match=r"^LOCAL_RANK=5 but 4 GPUs are visible to this process; start at most 4"):
        join_process_group(SOFTMAX)
    assert fake_init == []


def test_a_gpu_pool_gets_the_memory_this_process_cached_before_each_case(monkeypatch):
    pool = WorkerPool.__new__(WorkerPool)  # its queues without processes behind them
    pool.world_size, pool.device_type, pool._token, pool.processes, pool._unrestored = 1, "cuda", 0, [], set()
    pool.requests, pool.results = [queue.Queue()], queue.Queue()
    pool.results.put(Done(token=1, rank=0, answer="rank 0's payload"))
    tasks_sent_when_emptied = []
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: tasks_sent_when_emptied.append(pool.requests[0].qsize()))
    assert pool.request(Request(RequestKind.RUN), SOFTMAX.id, timeout_s=10) == "rank 0's payload"
    assert tasks_sent_when_emptied == [0]  # once, before the task went out


def test_a_multi_device_case_cannot_name_one_gpu():
    with pytest.raises(CaseError, match=r"device='cuda:1' cannot be shared by world_size=2 ranks; valid choices"):
        SOFTMAX.replace(world_size=2, device="cuda:1")
    with pytest.raises(CaseError, match=r"invalid device='cuda:first'"):
        SOFTMAX.replace(device="cuda:first")


# ------------------------------------------------------------------------------------ torchrun
def torchrun_result(script, processes: int = 2):
    """Run ``script`` under torchrun on this machine; what rank 0 printed after "RESULT ", as JSON."""
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    completed = subprocess.run([torchrun, "--nproc-per-node", str(processes), "--master-port",
                                str(free_port()), str(script)], capture_output=True, text=True, timeout=300,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert completed.returncode == 0, completed.stderr[-3000:]
    line = next(line for line in completed.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


@pytest.mark.slow
def test_every_rank_evaluates_rank_zero_batchnorm_statistics(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent('''
        import json, types
        import torch, torch.distributed as dist
        from convbench.torchrun import destroy_process_group
        from torch import nn
        import convbench
        from convbench import Case
        from convbench.data import DatasetSplits
        from convbench.distributed import context_from_process_group
        from convbench.engine import PreparedRun, RunSettings
        from convbench.registry import load_registry

        def halves():
            x = torch.randn(400, 8, generator=torch.Generator().manual_seed(0))
            y = (x[:, 0] > 0).long()
            return DatasetSplits(train=(x[:300], y[:300]), test=(x[300:], y[300:]), num_outputs=2)

        def bn_mlp(input_shape, num_outputs):
            return nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, num_outputs))

        plugin = types.ModuleType("bn_plugin")
        plugin.convbench_register_models = convbench.hookimpl(lambda register: register("bn_mlp", bn_mlp))
        plugin.convbench_register_datasets = convbench.hookimpl(lambda register: register("halves", halves))
        registry = load_registry(entry_points=False, extra_plugins=[("bn_plugin", plugin)])

        dist.init_process_group("gloo")
        case = Case(model="bn_mlp", dataset="halves", optimizer="sgd", lr=0.1, batch_size=20, steps=5, world_size=2)
        run = PreparedRun(case, RunSettings(registry=registry, telemetry_interval_s=None),
                          context_from_process_group())
        for step, index in zip(range(5), run.batches.epoch()):
            run.train_step(index, step)  # the last forward updated each rank's statistics from its own half
        metrics = [None, None]
        dist.all_gather_object(metrics, run.evaluate())
        if dist.get_rank() == 0:
            print("RESULT " + json.dumps(metrics))
        # convbench's own clean-up, as its workers and torchrun runs do: on torch < 2.8 a bare destroy can hang (gloo's
        # destructor holds the GIL while joining threads that may need it to free the last collective's tensors)
        destroy_process_group()
    '''))
    rank0, rank1 = torchrun_result(script)
    assert rank0 == rank1


@pytest.mark.slow
def test_ranks_share_the_augmentation_stream_and_draw_dropout_from_their_own(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent('''
        import json, types
        import torch, torch.distributed as dist
        from convbench.torchrun import destroy_process_group
        import convbench
        from convbench import Case
        from convbench.components import copy_of_default_generator
        from convbench.data import DatasetSplits
        from convbench.distributed import context_from_process_group
        from convbench.engine import PreparedRun, RunSettings
        from convbench.registry import load_registry

        def images():
            x = torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(0))
            return DatasetSplits(train=(x, (x.mean(dim=(1, 2, 3)) > 0.5).long()), num_outputs=2)

        plugin = types.ModuleType("images_plugin")
        plugin.convbench_register_datasets = convbench.hookimpl(lambda register: register("images", images))
        settings = RunSettings(registry=load_registry(entry_points=False, extra_plugins=[("images_plugin", plugin)]),
                               telemetry_interval_s=None)

        dist.init_process_group("gloo")
        case = Case(model="mlp", model_kwargs={"dropout": 0.5}, dataset="images", optimizer="sgd", lr=0.1,
                    batch_size=10, steps=1, world_size=2,
                    augmentations=(("rotation", {"degrees": 30}), ("random_erasing", {"value": "random"})))
        run = PreparedRun(case, settings, context_from_process_group())
        share, x = run.share, run.data.train[0][:10]
        mine = run.augment(x[share.start:share.stop])
        dropout_draws = torch.rand(4)  # what the model's dropout draws from on this rank
        ranks = [None, None]
        dist.all_gather_object(ranks, {"augmented": mine.tolist(), "dropout_draws": dropout_draws.tolist()})
        if dist.get_rank() == 0:
            alone = PreparedRun(case.replace(world_size=1), settings)
            stream = copy_of_default_generator(torch.device("cpu"))  # where augmentation starts drawing
            one = {"stream_start": torch.rand(4, generator=stream).tolist(), "augmented": alone.augment(x).tolist()}
            print("RESULT " + json.dumps({"ranks": ranks, "one": one}))
        # convbench's own clean-up, as its workers and torchrun runs do: on torch < 2.8 a bare destroy can hang (gloo's
        # destructor holds the GIL while joining threads that may need it to free the last collective's tensors)
        destroy_process_group()
    '''))
    result = torchrun_result(script)
    rank0, rank1 = result["ranks"]
    one = result["one"]
    # the ranks' shares, put together, are augmented exactly as one process augments the whole batch
    torch.testing.assert_close(torch.tensor(rank0["augmented"] + rank1["augmented"]), torch.tensor(one["augmented"]))
    # while each rank's dropout stream is its own, and neither replays the augmentation stream's numbers
    draws = [rank0["dropout_draws"], rank1["dropout_draws"], one["stream_start"]]
    assert len({tuple(d) for d in draws}) == 3


@pytest.mark.slow
def test_a_rank_whose_data_fails_to_load_stops_every_rank(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent('''
        import json, os, types
        import torch, torch.distributed as dist
        from convbench.torchrun import destroy_process_group
        import convbench
        from convbench import Case
        from convbench.distributed import context_from_process_group
        from convbench.engine import PreparedRun, RunSettings
        from convbench.registry import load_registry

        def flaky(root, download=False):
            if dist.get_rank() == 1:
                raise RuntimeError("the download broke off")
            x = torch.randn(100, 4, generator=torch.Generator().manual_seed(0))
            return convbench.DatasetSplits(train=(x, (x[:, 0] > 0).long()), num_outputs=2)

        plugin = types.ModuleType("flaky_plugin")
        plugin.convbench_register_datasets = convbench.hookimpl(lambda register: register("flaky", flaky))
        registry = load_registry(entry_points=False, extra_plugins=[("flaky_plugin", plugin)])
        dist.init_process_group("gloo")
        case = Case(model="softmax", dataset="flaky", optimizer="sgd", lr=0.1, batch_size=20, steps=3, world_size=2)
        try:
            PreparedRun(case, RunSettings(registry=registry, download=True, data_root=os.getcwd(),
                                          telemetry_interval_s=None), context_from_process_group())
            outcome = "prepared"
        except Exception as exc:
            outcome = f"{type(exc).__name__}: {exc}"
        outcomes = [None, None]
        dist.all_gather_object(outcomes, outcome)
        if dist.get_rank() == 0:
            print("RESULT " + json.dumps(outcomes))
        # convbench's own clean-up, as its workers and torchrun runs do: on torch < 2.8 a bare destroy can hang (gloo's
        # destructor holds the GIL while joining threads that may need it to free the last collective's tensors)
        destroy_process_group()
    '''))
    rank0, rank1 = torchrun_result(script)
    assert rank0 == "ConvbenchError: dataset 'flaky' failed to load on another rank"
    assert rank1 == "RuntimeError: the download broke off"


@pytest.mark.slow
def test_torchrun_uses_its_own_process_group(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent('''
        import json, os, sys
        from convbench import Case
        from convbench import launch
        from convbench.pool import _POOLS
        case = Case(model="softmax", dataset="mnist-5k", optimizer="sgd", lr=0.5, batch_size=100, epochs=2,
                    eval_every=35, eval_train_samples=500, world_size=2)
        result = launch.run_case(case)
        assert not _POOLS  # no pool of our own under torchrun
        if os.environ["RANK"] == "0":
            print("RESULT " + json.dumps({"acc": result.final["test_accuracy"], "steps": result.steps}))
    '''))
    under_torchrun = torchrun_result(script)
    alone = launch.run_case(SOFTMAX)
    assert under_torchrun["steps"] == alone.steps
    assert under_torchrun["acc"] == pytest.approx(alone.final["test_accuracy"], abs=0.005)


@pytest.mark.slow
def test_torchrun_over_two_nodes_samples_each_node(tmp_path):
    """Two torchrun agents on this host stand in for two machines of one process each."""
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent('''
        import json, os
        from convbench import Case, launch
        case = Case(model="softmax", dataset="mnist-5k", optimizer="sgd", lr=0.5, batch_size=100, steps=20,
                    eval_every=10, eval_train_samples=200, world_size=2)
        telemetry = launch.run_case(case).telemetry.to_dict()
        if os.environ["RANK"] == "0":
            print("RESULT " + json.dumps(telemetry))
    '''))
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    port = str(free_port())
    nodes = [subprocess.Popen([torchrun, "--nnodes", "2", "--node-rank", str(node), "--nproc-per-node", "1",
                               "--master-addr", "127.0.0.1", "--master-port", port, str(script)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"}) for node in (0, 1)]
    try:
        outputs = [node.communicate(timeout=300)[0] for node in nodes]
    finally:  # one node failing leaves the other waiting for it
        for node in nodes:
            node.kill()
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    line = next(line for line in outputs[0].splitlines() if line.startswith("RESULT "))
    telemetry = json.loads(line[len("RESULT "):])
    # each node's first (here: only) rank sampled its machine, and rank 0 holds both
    assert [(device["rank"], device["name"]) for device in telemetry["devices"]] == [(0, "cpu"), (1, "cpu")]
    assert [rank["sampler"] for rank in telemetry["ranks"]] == ["psutil", "psutil"]


# ---------------------------------------------------------------------------- through pytest
pytest_plugins = ["pytester"]


@pytest.mark.slow
def test_world_sizes_option_expands_suites_and_records_multi_process_runs(pytester):
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(test_suite='''
        import pytest
        from convbench import Case

        CASE = Case(model="softmax", dataset="mnist-5k", optimizer="sgd", lr=0.5, batch_size=100, steps=20,
                    eval_every=10, eval_train_samples=200)

        @pytest.mark.parametrize("case", [CASE.param()])
        def test_case(convergence, case):
            assert not convergence(case).diverged
    ''')
    result = pytester.runpytest_subprocess("--convbench-world-sizes", "1,2", "--benchmark-json", "out.json",
                                           "--convbench-results", "r.jsonl", "--convbench-no-progress")
    result.assert_outcomes(passed=2)
    benchmarks = json.loads((pytester.path / "out.json").read_text())["benchmarks"]
    by_world = {b["extra_info"]["convbench"]["world_size"]: b["extra_info"]["convbench"] for b in benchmarks}
    assert set(by_world) == {1, 2}
    assert by_world[1]["case_id"] == "softmax-sgd-lr0.5-bs100"
    assert by_world[2]["case_id"] == "softmax-sgd-lr0.5-bs100-w2"
    assert by_world[2]["timing"]["startup_s"] > 0 and "startup_s" not in by_world[1]["timing"]
    assert by_world[2]["final"]["test_accuracy"] == pytest.approx(by_world[1]["final"]["test_accuracy"], abs=0.005)
    lines = (pytester.path / "r.jsonl").read_text().splitlines()
    assert len(lines) == 2


@pytest.mark.slow
def test_the_benchmark_times_a_multi_process_run_without_its_preparation(pytester):
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(test_suite='''
        import pytest
        from convbench import Case

        CASE = Case(model="softmax", dataset="mnist-5k", optimizer="sgd", lr=0.5, batch_size=100, steps=20,
                    eval_every=10, eval_train_samples=200, world_size=2)

        @pytest.mark.parametrize("case", [CASE.param()])
        def test_case(convergence, case):
            convergence(case)
    ''')
    result = pytester.runpytest_subprocess("--benchmark-json", "out.json", "--convbench-results", "none",
                                           "--convbench-no-progress")
    result.assert_outcomes(passed=1)
    (benchmark,) = json.loads((pytester.path / "out.json").read_text())["benchmarks"]
    timed_s, timing = benchmark["stats"]["max"], benchmark["extra_info"]["convbench"]["timing"]
    preparation_s = timing["setup_s"] + timing["startup_s"]  # the workers loaded the data; the pool started
    assert timing["startup_s"] > 0 and timing["pool_reused"] is False
    # the timed call encloses every rank's training and evaluation ...
    assert timed_s >= max(timing["train_s"], timing["eval_s"])
    # ... and adds to them far less than the preparation, which single-process cases leave out too
    assert timed_s - (timing["train_s"] + timing["eval_s"]) < preparation_s / 2


@pytest.mark.slow
def test_world_sizes_option_rejects_bad_values(pytester):
    pytester.makeini("[pytest]\n")
    result = pytester.runpytest_subprocess("--convbench-world-sizes", "1,two")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--convbench-world-sizes='1,two': expected positive integers like 1,2,4" in result.stderr.str()


def test_a_case_that_cannot_take_a_world_size_fails_in_one_line(pytester):
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(test_suite='''
        import pytest
        from convbench import Case

        CASE = Case(model="softmax", dataset="mnist-5k", optimizer="sgd", lr=0.5, steps=2, device="cuda:0")

        @pytest.mark.parametrize("case", [CASE.param()])
        def test_case(convergence, case):
            convergence(case)
    ''')
    result = pytester.runpytest("--convbench-world-sizes", "2", "--convbench-results", "none", "-p",
                                "no:cacheprovider")
    result.assert_outcomes(failed=1)
    output = result.stdout.str()
    assert "test_case[w2-softmax-sgd-lr0.5-bs100]: device='cuda:0' cannot be shared by world_size=2 ranks" in output
    assert "Traceback" not in output and "case.py" not in output


@pytest.mark.slow
def test_a_suite_under_torchrun_is_reported_once_by_rank_zero(tmp_path):
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "conftest.py").write_text(textwrap.dedent('''
        import os

        def pytest_benchmark_update_json(config, benchmarks, output_json):
            with open("saved-by.txt", "a") as log:  # one line per rank that writes the JSON
                log.write(os.environ["RANK"] + "\\n")
    '''))
    (tmp_path / "test_suite.py").write_text(textwrap.dedent('''
        import pytest
        from convbench import Case

        CASE = Case(model="softmax", dataset="mnist-5k", optimizer="sgd", lr=0.5, batch_size=100, steps=10,
                    eval_every=5, eval_train_samples=200)

        @pytest.mark.parametrize("case", [CASE.replace(world_size=2).param(), CASE.param()])
        def test_case(convergence, case):
            assert convergence(case).world_size == 2

        @pytest.mark.parametrize("case", [CASE.param()])
        def test_speed(throughput, case):
            throughput(case, steps=2, rounds=2)
    '''))
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    completed = subprocess.run(
        [torchrun, "--nproc-per-node", "2", "--master-port", str(free_port()), "-m", "pytest", "-q",
         "-p", "no:cacheprovider", "--benchmark-json", "out.json", "--convbench-results", "r.jsonl",
         "--convbench-no-progress", "-rs"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert completed.returncode == 0, (completed.stdout + completed.stderr)[-4000:]
    # both ranks ran the session (torchrun fails if one does not, and the world-size-2 case needs both), and
    # only rank 0 printed: rank 1, at -qq, would print only what fails there
    assert completed.stdout.count("1 passed, 2 skipped") == 1
    assert completed.stdout.count("convbench summary") == completed.stdout.count("benchmark 'test_case'") == 1
    skips = [line for line in completed.stdout.splitlines() if line.startswith("SKIPPED")]
    assert len(skips) == 1 and "[2]" in skips[0] and "world_size=1; torchrun started 2 processes" in skips[0]
    assert (tmp_path / "saved-by.txt").read_text().split() == ["0"]
    (benchmark,) = json.loads((tmp_path / "out.json").read_text())["benchmarks"]
    assert benchmark["extra_info"]["convbench"]["world_size"] == 2
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 1
