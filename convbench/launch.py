"""Run a case on 1, 2 or 4 processes: in this process, on a persistent pool of DDP workers, or on
the process group torchrun already made.

Starting worker processes and a process group costs seconds (about 6-7 s for two CPU workers on a
2-core machine), more than a quick case trains, so each world size keeps one pool of workers for the
whole session and sends it case after case. A pool whose case failed or hung is torn down and a new
one started for the next case, so no case inherits a broken process group.
"""

from __future__ import annotations

import atexit
import contextlib
import multiprocessing
import os
import queue
import socket
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any

import torch
import torch.multiprocessing as mp

from convbench import errors
from convbench.case import Case
from convbench.distributed import DistContext, backend_for, context_from_process_group, launched_by_torchrun
from convbench.engine import PreparedRun, Progress, RunSettings, resolve_device
from convbench.errors import CaseError, CaseTimeoutError, ConvbenchError, RankFailedError
from convbench.registry import conftest_plugin_files, use_conftest_plugin_files
from convbench.result import RunResult
from convbench.time_limit import time_limit

DEFAULT_TIMEOUT_S = 1800.0
_POLL_S = 0.5
_PORT_ATTEMPTS = 3


@dataclass(frozen=True)
class _Task:
    token: int
    kind: str  # "case": train and evaluate; "bench_start" / "bench_round" / "bench_end": throughput rounds
    case: dict[str, Any]
    data_root: str | None
    download: bool
    scale: str
    telemetry_interval_s: float | None
    steps: int = 0
    conftest_plugins: tuple[tuple[str, str], ...] = ()  # (name, file) of the session's conftest plugins


def run_case(case: Case, settings: RunSettings | None = None, timeout_s: float | None = None) -> RunResult:
    """Train ``case`` on ``case.world_size`` processes and return rank 0's result.

    Under torchrun the existing process group is used and every rank must call this; otherwise
    world size 1 runs in this process and larger ones on the session's worker pool, killed and
    replaced if the case fails or runs past ``timeout_s`` (default 30 minutes). A world-size-1 case is
    interrupted if it runs past ``timeout_s`` (no default: see `convbench.time_limit`).
    """
    settings = settings or RunSettings()
    timeout_s = settings.timeout_s if timeout_s is None else timeout_s
    if launched_by_torchrun():
        return _run_under_torchrun(case, settings)
    if case.world_size == 1:
        with time_limit(timeout_s, f"case {case.id!r}"):
            return PreparedRun(case, settings).run()
    pool = _pool_for(case.world_size, resolve_device(case.device))
    return pool.run(case, settings, DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s)


class ThroughputSession:
    """A case prepared once (on this process or the pool) for repeated timed rounds of training steps."""

    def __init__(self, case: Case, settings: RunSettings | None = None, warmup_steps: int = 5,
                 timeout_s: float | None = None) -> None:
        self.case = case
        self.settings = settings or RunSettings()
        #: Limit of the preparation and of each round: workers are killed past it (default 30 minutes);
        #: in this process a round is interrupted (no default). Under torchrun, the process group's own.
        self.timeout_s = self.settings.timeout_s if timeout_s is None else timeout_s
        self.startup_s = 0.0
        self._what = f"throughput case {case.id!r}"
        torchrun = launched_by_torchrun()
        if case.world_size == 1 or torchrun:
            if torchrun:
                _run_under_torchrun_init(case)
            with self._in_process_limit():
                self._local: PreparedRun | None = PreparedRun(case, self.settings, context_from_process_group())
                self._local.time_steps(warmup_steps)
            self._pool: WorkerPool | None = None
        else:
            self._local = None
            device = resolve_device(case.device)
            fresh = (case.world_size, device.type) not in _POOLS
            self._pool = _pool_for(case.world_size, device)
            self.startup_s = self._pool.startup_s if fresh else 0.0
            self._pool_global_batch: int = self._pool.request("bench_start", case, self.settings,
                                                              self._pool_timeout_s, steps=warmup_steps)

    @property
    def _pool_timeout_s(self) -> float:
        return DEFAULT_TIMEOUT_S if self.timeout_s is None else self.timeout_s

    def _in_process_limit(self) -> contextlib.AbstractContextManager[None]:
        # under torchrun, interrupting one rank would leave the others waiting in a collective
        return time_limit(None if launched_by_torchrun() else self.timeout_s, self._what)

    @property
    def global_batch(self) -> int:
        """Samples per step over all ranks, as the prepared run computed it (full batch included)."""
        if self._local is not None:
            return self._local.batches.batch_size
        return self._pool_global_batch

    def round(self, steps: int) -> float:
        """Run ``steps`` synchronised steps; the slowest rank's seconds."""
        if self._local is not None:
            with self._in_process_limit():
                return self._local.time_steps(steps)
        assert self._pool is not None
        return self._pool.request("bench_round", self.case, self.settings, self._pool_timeout_s, steps=steps)

    def close(self) -> None:
        if self._pool is not None and self._pool.alive():
            self._pool.request("bench_end", self.case, self.settings, self._pool_timeout_s)


def check_devices_for(world_size: int, device: torch.device) -> None:
    """Fail before spawning anything when the ranks cannot each have a device.

    NCCL refuses two ranks on one GPU, so N ranks need N visible GPUs; CPU ranks share the cores.
    """
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if world_size > count:
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            shown = f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
            raise CaseError(
                f"world_size={world_size} needs {world_size} GPUs, one per rank, but {count} "
                f"{'is' if count == 1 else 'are'} visible{shown}; valid choices: a world size up to {count}, "
                "or device='cpu' (gloo)")
    elif device.type != "cpu":
        raise CaseError(f"world_size={world_size} on device {str(device)!r}: DistributedDataParallel runs on "
                        "'cuda' (nccl) or 'cpu' (gloo); valid choices: device='auto', 'cuda' or 'cpu'")


def _run_under_torchrun_init(case: Case) -> None:
    """Join torchrun's process group once per process, fit for every case the session may run.

    With GPUs, the group has nccl for CUDA tensors and gloo for CPU ones (a session may run both
    kinds of cases, and the first case must not decide for the rest), and this rank's GPU is set and
    bound to the group, so NCCL's set-up happens here rather than inside the first case's timing.
    """
    import torch.distributed as dist

    if dist.is_initialized():
        return
    if torch.cuda.is_available():
        device = torch.device("cuda", local_gpu_index(int(os.environ.get("LOCAL_RANK", 0))))
        torch.cuda.set_device(device)
        dist.init_process_group("cpu:gloo,cuda:nccl", device_id=device)
    else:
        dist.init_process_group(backend_for(resolve_device(case.device)))
    atexit.register(_destroy_process_group)  # torch warns of leaked resources without it


def local_gpu_index(local_rank: int) -> int:
    """The GPU of the rank with this LOCAL_RANK: its own index, or 0 where the launcher made only one
    GPU visible to each process (srun --gpus-per-task=1, some MPI set-ups)."""
    count = torch.cuda.device_count()
    if count == 1:
        return 0
    if local_rank >= count:
        raise CaseError(f"LOCAL_RANK={local_rank} but {count} GPUs are visible to this process; start at most "
                        f"{count} processes per machine (torchrun --nproc-per-node {count})")
    return local_rank


def _destroy_process_group() -> None:
    """At exit, while the interpreter is whole: collect what still holds the group (DDP's reducer sits
    in reference cycles), then destroy it. Left to interpreter finalization, gloo's threads can still
    hold work with tensors, and the process aborts ("terminate called without an active exception")."""
    import gc

    import torch.distributed as dist

    gc.collect()
    if dist.is_initialized():
        dist.destroy_process_group()


def _run_under_torchrun(case: Case, settings: RunSettings) -> RunResult:
    _run_under_torchrun_init(case)
    context = context_from_process_group()
    if case.world_size != context.world_size:
        raise ConvbenchError(
            f"world_size={case.world_size} but torchrun started {context.world_size} processes; run this case "
            f"with --nproc-per-node {case.world_size}, or select the cases of this world size"
        )
    return PreparedRun(case, settings, context).run()


# ------------------------------------------------------------------------------------- the pool
_POOLS: dict[tuple[int, str], WorkerPool] = {}


def _pool_for(world_size: int, device: torch.device) -> WorkerPool:
    """The session's pool of ``world_size`` workers on ``device``'s type, started (after the device
    check) if there is none or the last one died."""
    check_devices_for(world_size, device)
    key = (world_size, device.type)
    pool = _POOLS.get(key)
    if pool is None or not pool.alive():
        if pool is not None:
            pool.close()
        pool = _POOLS[key] = WorkerPool(world_size, device.type)
    return pool


@atexit.register
def close_pools() -> None:
    """Stop every worker pool (also called at interpreter exit: no orphan processes)."""
    while _POOLS:
        _, pool = _POOLS.popitem()
        pool.close()


def free_port() -> int:
    """A TCP port free right now on the loopback interface, chosen by the OS (so sessions do not collide)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class WorkerPool:
    """``world_size`` worker processes joined in one process group, running cases on request."""

    def __init__(self, world_size: int, device_type: str, start_timeout_s: float = 300.0) -> None:
        started = time.perf_counter()
        self.world_size = world_size
        self.device_type = device_type
        self._token = 0
        self.cases_run = 0
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            try:
                self.process_group_init_s = self._start(device_type, free_port(), start_timeout_s)
                break
            except RankFailedError as exc:
                # Between free_port() closing its probe socket and rank 0 listening, another program
                # (another session's pool, say) may take the port: choose another one and start again.
                if "EADDRINUSE" not in str(exc) or attempt == _PORT_ATTEMPTS:
                    raise
        self.startup_s = time.perf_counter() - started

    def _start(self, device_type: str, port: int, start_timeout_s: float) -> float:
        """Spawn the workers and wait until all joined the process group; the slowest one's join time."""
        context = mp.get_context("spawn")  # fork would copy threads and CUDA state
        self.results: Any = context.Queue()
        self.tasks = [context.Queue() for _ in range(self.world_size)]
        self.processes = [
            context.Process(target=_worker_main, daemon=True, name=f"convbench-rank{rank}",
                            args=(rank, self.world_size, port, device_type, self.tasks[rank], self.results))
            for rank in range(self.world_size)
        ]
        for process in self.processes:
            process.start()
        init_times = []
        deadline = time.monotonic() + start_timeout_s
        try:
            while len(init_times) < self.world_size:
                message = self._next_message(deadline, what="start the worker pool")
                if message[0] == "ready":
                    init_times.append(message[2])
                elif message[0] == "error":
                    raise RankFailedError(f"rank {message[2]} failed to join the process group:\n{message[3]}")
        except BaseException:
            self.close()  # the ranks that did start must not wait for the others forever
            raise
        return max(init_times)

    def alive(self) -> bool:
        return all(process.is_alive() for process in self.processes)

    def _next_message(self, deadline: float, what: str) -> tuple[Any, ...]:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CaseTimeoutError(f"timed out after waiting to {what}")
            try:
                return self.results.get(timeout=min(_POLL_S, remaining))
            except queue.Empty:
                dead = [p for p in self.processes if not p.is_alive()]
                if dead:
                    # a rank that dies without a word (killed, segfault) must not leave us waiting
                    with contextlib.suppress(queue.Empty):
                        return self.results.get(timeout=_POLL_S)
                    raise RankFailedError(
                        f"{dead[0].name} exited with code {dead[0].exitcode} while trying to {what}") from None

    def run(self, case: Case, settings: RunSettings, timeout_s: float) -> RunResult:
        first_case = self.cases_run == 0
        result = RunResult.from_dict(self.request("case", case, settings, timeout_s))
        self.cases_run += 1
        return result.replace_timing(startup_s=self.startup_s if first_case else 0.0,
                                     process_group_init_s=self.process_group_init_s, pool_reused=not first_case)

    def request(self, kind: str, case: Case, settings: RunSettings, timeout_s: float, steps: int = 0) -> Any:
        """Send one task to every rank and wait for all of them; returns rank 0's payload."""
        if self.device_type == "cuda" and torch.cuda.is_initialized():
            # single-process cases ran on cuda:0 in this process, which rank 0 shares: hand back the
            # memory torch's allocator keeps cached, or rank 0 may run out and its NVML readings include it
            torch.cuda.empty_cache()
        self._token += 1
        task = _Task(self._token, kind, case.to_dict(), None if settings.data_root is None else str(settings.data_root),
                     settings.download, settings.scale, settings.telemetry_interval_s, steps,
                     conftest_plugin_files())
        for tasks in self.tasks:
            tasks.put(task)
        deadline = time.monotonic() + timeout_s
        done: set[int] = set()
        result: Any = None
        try:
            while len(done) < self.world_size:
                try:
                    message = self._next_message(deadline, what=f"finish case {case.id!r} within {timeout_s:g} s")
                except CaseTimeoutError:
                    raise CaseTimeoutError(
                        f"case {case.id!r} did not finish within {timeout_s:g} s on {self.world_size} processes; "
                        "its workers were stopped") from None
                message_kind, token = message[0], message[1]
                if token != task.token:
                    continue  # a late message of an earlier case
                if message_kind == "progress" and settings.progress is not None:
                    settings.progress(Progress(**message[2]))
                elif message_kind == "error":
                    rank, text, user_error = message[2], message[3], message[4]
                    if user_error:  # the class name of a convbench error: keep the type the user can catch
                        error_type = getattr(errors, user_error, ConvbenchError)
                        raise error_type(text)
                    raise RankFailedError(f"rank {rank} failed in case {case.id!r}:\n{text}")
                elif message_kind == "done":
                    done.add(message[2])
                    if message[3] is not None:
                        result = message[3]
        except BaseException:
            self.close()  # a failed or hung case leaves the process group unusable
            _POOLS.pop((self.world_size, self.device_type), None)
            raise
        return result

    def close(self) -> None:
        for tasks in self.tasks:
            with contextlib.suppress(Exception):
                tasks.put(None)
        for process in self.processes:
            process.join(timeout=2)
        for process in self.processes:
            if process.is_alive():
                process.kill()
                process.join(timeout=5)


# ----------------------------------------------------------------------------------- a worker
def _worker_main(rank: int, world_size: int, port: int, device_type: str, tasks: Any, results: Any) -> None:
    import torch.distributed as dist

    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(rank)})
    try:
        started = time.perf_counter()
        if device_type == "cuda":
            device = torch.device("cuda", rank)
            torch.cuda.set_device(device)
            # bound to its GPU, NCCL connects now: its set-up counts as start-up, not as the first case's time
            dist.init_process_group("nccl", rank=rank, world_size=world_size, device_id=device)
        else:  # N workers sharing the cores: more threads than cores makes every rank crawl
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
            dist.init_process_group("gloo", rank=rank, world_size=world_size)
        results.put(("ready", 0, time.perf_counter() - started))
    except BaseException:
        results.put(("error", 0, rank, traceback.format_exc(), None))
        return
    context = DistContext(rank=rank, world_size=world_size, local_rank=rank)
    threading.Thread(target=_exit_with_parent, name="convbench-orphan-watch", daemon=True).start()
    try:
        while True:
            task = tasks.get()
            if task is None:
                return
            _run_task(task, context, results)
    finally:
        _BENCH.clear()
        with contextlib.suppress(Exception):
            _destroy_process_group()


def _exit_with_parent() -> None:
    """End this worker as soon as the session that started it is gone, even in the middle of a case.

    A killed session (SIGKILL, an out-of-memory kill) runs no clean-up, and its workers would go on
    training, or waiting for the next task, for good. The parent's sentinel becomes ready when it exits.
    """
    parent = multiprocessing.parent_process()
    if parent is not None:
        parent.join()
        os._exit(1)


_BENCH: dict[str, PreparedRun] = {}  # the prepared run a worker keeps between throughput rounds


def _run_task(task: _Task, context: DistContext, results: Any) -> None:
    def progress(event: Progress) -> None:
        results.put(("progress", task.token, event.__dict__))

    settings = RunSettings(data_root=task.data_root, download=task.download, scale=task.scale,
                           progress=progress if context.is_main else None,
                           telemetry_interval_s=task.telemetry_interval_s)
    try:
        use_conftest_plugin_files(task.conftest_plugins)
        payload: Any = None
        if task.kind == "case":
            payload = PreparedRun(Case(**task.case), settings, context).run().to_dict()
        elif task.kind == "bench_start":
            _BENCH["run"] = PreparedRun(Case(**task.case), settings, context)
            _BENCH["run"].time_steps(task.steps)  # warm-up: allocator, kernels, DDP buckets
            payload = _BENCH["run"].batches.batch_size
        elif task.kind == "bench_round":
            payload = _BENCH["run"].time_steps(task.steps)
        elif task.kind == "bench_end":
            _BENCH.clear()
        results.put(("done", task.token, context.rank, payload if context.is_main else None))
    except ConvbenchError as exc:
        results.put(("error", task.token, context.rank, str(exc), type(exc).__name__))
    except BaseException:
        results.put(("error", task.token, context.rank, traceback.format_exc(), None))


