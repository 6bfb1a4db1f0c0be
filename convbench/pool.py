"""A persistent pool of DDP worker processes per world size, and the messages the session and its workers exchange.

Starting worker processes and a process group costs seconds (about 6-7 s for two CPU workers on a
2-core machine), more than a quick case trains, so each world size keeps one pool of workers for the
whole session and sends it case after case. A pool whose case failed or hung is torn down and a new
one started for the next case, so no case inherits a broken process group.

The protocol: the session sends every rank the same `Request`; every rank answers it with `Done` or
`Failed` (rank 0's `Done` carries the answer), and rank 0 reports each evaluation of a run as it
happens. A case is first prepared (data on the device, fresh model: outside any benchmark's timing),
then run once or timed in rounds of steps, then released.
"""

from __future__ import annotations

import atexit
import contextlib
import enum
import multiprocessing
import os
import queue
import socket
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.multiprocessing as mp

from convbench import errors
from convbench.case import Case
from convbench.distributed import DistContext
from convbench.engine import PreparedRun, Progress, RunSettings, prepare_in_this_process
from convbench.errors import CaseError, CaseTimeoutError, ConvbenchError, RankFailedError
from convbench.registry import conftest_plugin_files, use_conftest_plugin_files
from convbench.result import RunResult
from convbench.torchrun import destroy_process_group

#: A request's time limit when the settings name none.
DEFAULT_TIMEOUT_S = 1800.0
_POLL_S = 0.5
_PORT_ATTEMPTS = 3


# ------------------------------------------------------------------------------------ messages
class RequestKind(enum.Enum):
    PREPARE = "prepare"  # build the case on every rank; answer: the global batch
    RUN = "run"  # train and evaluate the prepared case once; answer: rank 0's RunResult as a dict
    TIME_STEPS = "time_steps"  # a throughput round of `steps` steps; answer: the slowest rank's seconds
    RELEASE = "release"  # drop the prepared case
    STOP = "stop"  # leave the process group and exit


@dataclass(frozen=True)
class Request:
    kind: RequestKind
    token: int = 0  # numbered by the pool: a late answer to an earlier request is told apart by it
    case: dict[str, Any] | None = None  # PREPARE
    settings: RunSettings | None = None  # PREPARE: the session's, less what cannot cross to another process
    conftest_plugins: tuple[tuple[str, str], ...] = ()  # PREPARE: (name, file) of the session's conftest plugins
    steps: int = 0  # TIME_STEPS


@dataclass(frozen=True)
class Ready:
    """A rank joined the process group, in ``init_s`` seconds."""

    rank: int
    init_s: float


@dataclass(frozen=True)
class ProgressReport:
    """Rank 0 evaluated during the run that request ``token`` started."""

    token: int
    progress: Progress


@dataclass(frozen=True)
class Done:
    token: int
    rank: int
    answer: Any = None  # rank 0's; None from the others


@dataclass(frozen=True)
class Failed:
    token: int  # 0: while joining the process group
    rank: int
    text: str  # a user error's one-line message, else the rank's traceback
    error_type: str | None = None  # a convbench error's class name: the session raises the same type


Message = Ready | ProgressReport | Done | Failed
STOP = Request(RequestKind.STOP)


# ---------------------------------------------------------------------------- the session's pools
_POOLS: dict[tuple[int, str], WorkerPool] = {}


def pool_for(world_size: int, device: torch.device) -> WorkerPool:
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


def free_port() -> int:
    """A TCP port free right now on the loopback interface, chosen by the OS (so sessions do not collide)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -------------------------------------------------------------------------------------- a pool
@dataclass(frozen=True)
class Lease:
    """A case prepared on a pool's workers. The workers hold one case at a time: until it has run, is
    released, or another case is prepared on the same pool."""

    token: int
    case_id: str
    global_batch: int
    startup_s: float  # the pool's start-up, charged to the first case prepared on it; 0 for later ones
    pool_reused: bool


class WorkerPool:
    """``world_size`` worker processes joined in one process group, preparing and running cases on request."""

    def __init__(self, world_size: int, device_type: str, start_timeout_s: float = 300.0) -> None:
        started = time.perf_counter()
        self.world_size = world_size
        self.device_type = device_type
        self._token = 0
        self._held: Lease | None = None
        self._startup_charged = False
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
        self.requests = [context.Queue() for _ in range(self.world_size)]
        self.processes = [
            context.Process(target=_worker_main, daemon=True, name=f"convbench-rank{rank}",
                            args=(rank, self.world_size, port, device_type, self.requests[rank], self.results))
            for rank in range(self.world_size)
        ]
        for process in self.processes:
            process.start()
        init_times = []
        deadline = time.monotonic() + start_timeout_s
        try:
            while len(init_times) < self.world_size:
                message = self._next_message(deadline, what="start the worker pool")
                if isinstance(message, Ready):
                    init_times.append(message.init_s)
                elif isinstance(message, Failed):
                    raise RankFailedError(f"rank {message.rank} failed to join the process group:\n{message.text}")
        except BaseException:
            self.close()  # the ranks that did start must not wait for the others forever
            raise
        return max(init_times)

    def alive(self) -> bool:
        return all(process.is_alive() for process in self.processes)

    # ----------------------------------------------------------------------------- a case's life
    def prepare(self, case: Case, settings: RunSettings, timeout_s: float) -> Lease:
        """Build ``case`` on every rank; it supersedes the case prepared before, if any."""
        self._held = None
        crossing = replace(settings, progress=None, registry=None)  # workers have their own of each
        request = Request(RequestKind.PREPARE, case=case.to_dict(), settings=crossing,
                          conftest_plugins=conftest_plugin_files())
        global_batch = self.request(request, case.id, timeout_s)
        reused, self._startup_charged = self._startup_charged, True
        self._held = Lease(self._token, case.id, global_batch, 0.0 if reused else self.startup_s, reused)
        return self._held

    def holds(self, lease: Lease) -> bool:
        """Whether the workers still hold ``lease``'s case (not run, released, superseded, or lost with the pool)."""
        return self._held is lease and self.alive()

    def run(self, lease: Lease, timeout_s: float, progress: Callable[[Progress], None] | None = None) -> RunResult:
        """Train and evaluate the prepared case once; its result, with the pool's start-up in its timing."""
        self._check(lease)
        self._held = None  # a prepared run trains once
        result = RunResult.from_dict(self.request(Request(RequestKind.RUN), lease.case_id, timeout_s, progress))
        return result.replace_timing(startup_s=lease.startup_s, process_group_init_s=self.process_group_init_s,
                                     pool_reused=lease.pool_reused)

    def time_steps(self, lease: Lease, steps: int, timeout_s: float) -> float:
        """A throughput round: the slowest rank's seconds for ``steps`` synchronised training steps."""
        self._check(lease)
        return self.request(Request(RequestKind.TIME_STEPS, steps=steps), lease.case_id, timeout_s)

    def release(self, lease: Lease, timeout_s: float) -> None:
        """Let the workers drop the prepared case (nothing to do if they no longer hold it)."""
        if self.holds(lease):
            self._held = None
            self.request(Request(RequestKind.RELEASE), lease.case_id, timeout_s)

    def _check(self, lease: Lease) -> None:
        if not self.holds(lease):
            raise ConvbenchError(f"case {lease.case_id!r} is no longer prepared on the {self.world_size}-process "
                                 "pool (it ran, was closed, another case was prepared there, or the pool was "
                                 "replaced after a failure); prepare it again")

    # ------------------------------------------------------------------------------- messaging
    def request(self, request: Request, case_id: str, timeout_s: float,
                progress: Callable[[Progress], None] | None = None) -> Any:
        """Send ``request`` to every rank and wait for all of them; rank 0's answer.

        A failure or a time-out stops the pool: a failed or hung case leaves its process group unusable.
        """
        if self.device_type == "cuda" and torch.cuda.is_initialized():
            # single-process cases ran on cuda:0 in this process, which rank 0 shares: hand back the
            # memory torch's allocator keeps cached, or rank 0 may run out and its NVML readings include it
            torch.cuda.empty_cache()
        self._token += 1
        request = replace(request, token=self._token)
        for requests in self.requests:
            requests.put(request)
        try:
            return self._answer_to(request.token, case_id, timeout_s, progress)
        except BaseException:
            self.close()
            if _POOLS.get((self.world_size, self.device_type)) is self:
                del _POOLS[(self.world_size, self.device_type)]
            raise

    def _answer_to(self, token: int, case_id: str, timeout_s: float,
                   progress: Callable[[Progress], None] | None) -> Any:
        """Wait until every rank is done with request ``token``, forwarding rank 0's progress; its answer."""
        deadline = time.monotonic() + timeout_s
        done: set[int] = set()
        answer: Any = None
        while len(done) < self.world_size:
            try:
                message = self._next_message(deadline, what=f"finish case {case_id!r} within {timeout_s:g} s")
            except CaseTimeoutError:
                raise CaseTimeoutError(f"case {case_id!r} did not finish within {timeout_s:g} s on {self.world_size} "
                                       "processes; its workers were stopped") from None
            if getattr(message, "token", None) != token:
                continue  # a late message of an earlier request
            if isinstance(message, ProgressReport) and progress is not None:
                progress(message.progress)
            elif isinstance(message, Failed):
                raise _error_of(message, case_id)
            elif isinstance(message, Done):
                done.add(message.rank)
                if message.rank == 0:
                    answer = message.answer
        return answer

    def _next_message(self, deadline: float, what: str) -> Message:
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

    def close(self) -> None:
        self._held = None
        for requests in self.requests:
            with contextlib.suppress(Exception):
                requests.put(STOP)
        for process in self.processes:
            process.join(timeout=2)
        for process in self.processes:
            if process.is_alive():
                process.kill()
                process.join(timeout=5)


def _error_of(failure: Failed, case_id: str) -> ConvbenchError:
    """The exception a rank's failure raises in the session: a user error keeps the type the user can catch."""
    if failure.error_type:
        return getattr(errors, failure.error_type, ConvbenchError)(failure.text)
    return RankFailedError(f"rank {failure.rank} failed in case {case_id!r}:\n{failure.text}")


# ----------------------------------------------------------------------------------- a worker
def _worker_main(rank: int, world_size: int, port: int, device_type: str, requests: Any, results: Any) -> None:
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
        results.put(Ready(rank, time.perf_counter() - started))
    except BaseException:
        results.put(Failed(0, rank, traceback.format_exc()))
        return
    threading.Thread(target=_exit_with_parent, name="convbench-orphan-watch", daemon=True).start()
    worker = _Worker(DistContext(rank=rank, world_size=world_size, local_rank=rank), results)
    try:
        while (request := requests.get()).kind is not RequestKind.STOP:
            worker.answer(request)
    finally:
        worker.prepared = None
        with contextlib.suppress(Exception):
            destroy_process_group()


def _exit_with_parent() -> None:
    """End this worker as soon as the session that started it is gone, even in the middle of a case.

    A killed session (SIGKILL, an out-of-memory kill) runs no clean-up, and its workers would go on
    training, or waiting for the next request, for good. The parent's sentinel becomes ready when it exits.
    """
    parent = multiprocessing.parent_process()
    if parent is not None:
        parent.join()
        os._exit(1)


class _Worker:
    """One rank's side of the protocol: it keeps the prepared case between requests."""

    def __init__(self, context: DistContext, results: Any) -> None:
        self.context = context
        self.results = results
        self.prepared: PreparedRun | None = None
        self._token = 0  # of the request being answered: progress reports carry it

    def answer(self, request: Request) -> None:
        self._token = request.token
        rank = self.context.rank
        try:
            answer = self._handle(request)
            self.results.put(Done(request.token, rank, answer if self.context.is_main else None))
        except ConvbenchError as exc:
            self.results.put(Failed(request.token, rank, str(exc), type(exc).__name__))
        except BaseException:
            self.results.put(Failed(request.token, rank, traceback.format_exc()))

    def _handle(self, request: Request) -> Any:
        if request.kind is RequestKind.PREPARE:
            assert request.case is not None and request.settings is not None
            self.prepared = None  # the superseded case's memory goes before the next one loads
            use_conftest_plugin_files(request.conftest_plugins)
            settings = replace(request.settings, progress=self._report if self.context.is_main else None)
            self.prepared = prepare_in_this_process(Case(**request.case), settings, self.context)
            return self.prepared.batches.batch_size
        if request.kind is RequestKind.RELEASE:
            self.prepared = None
            return None
        prepared = self.prepared
        if prepared is None:
            raise ConvbenchError(f"no case is prepared on this worker for a {request.kind.value!r} request")
        if request.kind is RequestKind.RUN:
            self.prepared = None  # a prepared run trains once
            return prepared.run().to_dict()
        if request.kind is RequestKind.TIME_STEPS:
            return prepared.time_steps(request.steps)
        raise ValueError(f"unknown request kind {request.kind!r}")

    def _report(self, progress: Progress) -> None:
        self.results.put(ProgressReport(self._token, progress))
