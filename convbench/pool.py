"""A persistent pool of DDP worker processes per world size, and the messages the session and its workers exchange.

Starting worker processes and a process group costs seconds (about 6-7 s for two CPU workers on a
2-core machine), more than a quick case trains, so each world size keeps one pool of workers for the
whole session and sends it case after case. A pool whose case failed or hung is torn down and a new
one started for the next case, so no case inherits a broken process group.

The protocol: the session sends every rank the same `Request`; every rank answers it with `Done` or
`Failed` (rank 0's `Done` carries the answer), and rank 0 reports each evaluation of a run as it
happens. A case is first prepared (data on the device, fresh model: outside any benchmark's timing),
then run once or timed in rounds of steps, then released. When it ends, each worker puts back the global
torch state the case changed (`convbench.isolation`); state a worker cannot put back retires the pool.

A rank that dies (killed, ``os._exit``, a crash in C) makes the others fail at once with gloo's
"connection reset by peer"; the session reports the death, naming the rank, its pid and its exit code
or signal, rather than the echo that reaches it first.
"""

from __future__ import annotations

import atexit
import contextlib
import enum
import multiprocessing
import multiprocessing.connection
import os
import queue
import signal
import socket
import threading
import time
import traceback
import warnings
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
from convbench.isolation import CaseIsolation, IsolationWarning
from convbench.registry import conftest_plugin_files, use_conftest_plugin_files
from convbench.result import RunResult
from convbench.torchrun import destroy_process_group

#: A request's time limit when the settings name none.
DEFAULT_TIMEOUT_S = 1800.0
_POLL_S = 0.5
_PORT_ATTEMPTS = 3
#: How long a rank's failure waits for another rank to die before it is reported. When a rank dies (killed,
#: ``os._exit``) the others fail at once with gloo's "connection reset by peer": the death is the story.
_DEATH_GRACE_S = 1.0


# ------------------------------------------------------------------------------------ messages
class RequestKind(enum.Enum):
    PREPARE = "prepare"  # build the case on every rank; answer: the global batch
    RUN = "run"  # train and evaluate the prepared case once; answer: rank 0's RunResult as a dict
    TIME_STEPS = "time_steps"  # a throughput round of `steps` steps; answer: the slowest rank's seconds
    RELEASE = "release"  # drop the prepared case
    STOP = "stop"  # leave the process group and exit


#: What the workers are doing while they answer a request: named in time-outs and in a dead rank's story.
_DOING = {RequestKind.PREPARE: "preparing", RequestKind.RUN: "running", RequestKind.TIME_STEPS: "timing steps of",
          RequestKind.RELEASE: "releasing"}


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
    #: Global torch state a case that ended with this request left changed and the worker could not put
    #: back (`convbench.isolation`): the pool is replaced before the next case.
    unrestored: tuple[str, ...] = ()


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
        self._unrestored: set[str] = set()  # global state a case left that the workers could not put back
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
        what = "starting the worker pool"
        try:
            while len(init_times) < self.world_size:
                message = self._next_message(deadline, what)
                if isinstance(message, Ready):
                    init_times.append(message.init_s)
                elif isinstance(message, Failed):
                    raise RankFailedError(self._death_behind(message, what)
                                          or f"rank {message.rank} failed to join the process group:\n{message.text}")
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

    def release_held(self, timeout_s: float) -> None:
        """Let the workers drop whatever case they hold, before another is prepared in its place.

        Releasing it puts back the global state it changed, and retires the pool where that cannot be
        done (see `request`); superseding it by a PREPARE alone would train the next case on workers
        still holding that state.
        """
        if self._held is not None:
            self.release(self._held, timeout_s)

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
            answer = self._answer_to(request.token, case_id, _DOING.get(request.kind, request.kind.value), timeout_s,
                                     progress)
        except BaseException:
            self._retire()
            raise
        if self._unrestored and request.kind in (RequestKind.RUN, RequestKind.RELEASE):
            warnings.warn(f"case {case_id!r} changed global torch state that its workers cannot put back "
                          f"({', '.join(sorted(self._unrestored))}); the next case starts new workers",
                          IsolationWarning, stacklevel=4)
            self._retire()
        return answer

    def _retire(self) -> None:
        """Stop the workers and forget this pool, so that the next case of its world size starts a new one."""
        self.close()
        if _POOLS.get((self.world_size, self.device_type)) is self:
            del _POOLS[(self.world_size, self.device_type)]

    def _answer_to(self, token: int, case_id: str, doing: str, timeout_s: float,
                   progress: Callable[[Progress], None] | None) -> Any:
        """Wait until every rank is done with request ``token`` (``doing`` case ``case_id``: "running", ...),
        forwarding rank 0's progress; its answer."""
        deadline = time.monotonic() + timeout_s
        what = f"{doing} case {case_id!r}"
        done: set[int] = set()
        answer: Any = None
        while len(done) < self.world_size:
            try:
                message = self._next_message(deadline, what)
            except CaseTimeoutError:
                raise CaseTimeoutError(f"case {case_id!r} did not finish within {timeout_s:g} s on {self.world_size} "
                                       "processes; its workers were stopped") from None
            if getattr(message, "token", None) != token:
                continue  # a late message of an earlier request
            if isinstance(message, ProgressReport) and progress is not None:
                progress(message.progress)
            elif isinstance(message, Failed):
                died = self._death_behind(message, what)
                raise RankFailedError(died) if died else _error_of(message, case_id)
            elif isinstance(message, Done):
                done.add(message.rank)
                self._unrestored.update(message.unrestored)
                if message.rank == 0:
                    answer = message.answer
        return answer

    def _next_message(self, deadline: float, what: str) -> Message:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CaseTimeoutError(f"timed out while {what}")
            try:
                return self.results.get(timeout=min(_POLL_S, remaining))
            except queue.Empty:
                if any(process.exitcode is not None for process in self.processes):
                    # a rank that dies without a word (killed, segfault) must not leave us waiting
                    return self._last_words(what)

    # ------------------------------------------------------------------------------ dead ranks
    def _last_words(self, what: str) -> Failed:
        """The failure a rank that has exited reported before it did; else its death, raised.

        A worker that cannot join the process group reports it and then exits, so its own message may
        still be on its way. A living rank's failure meanwhile is the death's echo, told after it.
        """
        echo: Failed | None = None
        deadline = time.monotonic() + _POLL_S
        with contextlib.suppress(queue.Empty):
            while (remaining := deadline - time.monotonic()) > 0:
                message = self.results.get(timeout=remaining)
                if isinstance(message, Failed):
                    if self.processes[message.rank].exitcode is not None:
                        return message
                    echo = echo or message
        exited = [rank for rank, process in enumerate(self.processes) if process.exitcode is not None]
        raise RankFailedError(self._deaths(exited, what, echo)) from None

    def _death_behind(self, failure: Failed, what: str) -> str | None:
        """If another rank died around ``failure``, the death's story, which is the one to tell; else None.

        A user error is its own story. Any other failure waits up to `_DEATH_GRACE_S` for another rank
        to die: the rank that saw a peer's socket close may report before the peer is known to be dead.
        Exit code 0 is no death: a worker that cannot join the process group says so, then returns.
        """
        if failure.error_type is not None:
            return None
        others = {rank: process for rank, process in enumerate(self.processes) if rank != failure.rank}
        deadline = time.monotonic() + _DEATH_GRACE_S
        while True:
            dead = [rank for rank, process in others.items() if process.exitcode not in (None, 0)]
            if dead:
                return self._deaths(dead, what, failure)
            alive = [process.sentinel for process in others.values() if process.exitcode is None]
            remaining = deadline - time.monotonic()
            if not alive or remaining <= 0:
                return None
            multiprocessing.connection.wait(alive, timeout=remaining)

    def _deaths(self, ranks: list[int], what: str, echo: Failed | None) -> str:
        """"rank 1 (pid 123) died with signal SIGKILL while running case 'x'", and the echo on another rank."""
        deaths = [f"rank {rank} (pid {self.processes[rank].pid}) died with "
                  f"{_exit_story(self.processes[rank].exitcode)}" for rank in ranks]
        story = f"{'; '.join(deaths)} while {what}"
        if echo is not None:
            last_line = echo.text.strip().splitlines()[-1] if echo.text.strip() else "(no message)"
            story += f"\n(rank {echo.rank} then failed: {last_line})"
        return story

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


def _exit_story(exitcode: int | None) -> str:
    """How a process ended: "exit code 3", or "signal SIGKILL" (multiprocessing gives a signal as -N)."""
    if exitcode is None or exitcode >= 0:
        return f"exit code {exitcode}"
    try:
        return f"signal {signal.Signals(-exitcode).name}"
    except ValueError:
        return f"signal {-exitcode}"


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
    """One rank's side of the protocol: it keeps the prepared case between requests.

    A case lives from its PREPARE until it has run, is released, or the next PREPARE supersedes it; the
    global torch state it changed in that time is then put back to what the worker had before it
    (`convbench.isolation`: the worker's own thread count included), and what cannot be is reported.
    """

    def __init__(self, context: DistContext, results: Any) -> None:
        self.context = context
        self.results = results
        self.prepared: PreparedRun | None = None
        self._token = 0  # of the request being answered: progress reports carry it
        self._isolation: CaseIsolation | None = None  # of the case prepared or running now
        self._unrestored: list[str] = []

    def answer(self, request: Request) -> None:
        self._token = request.token
        rank = self.context.rank
        try:
            answer = self._handle(request)
            unrestored, self._unrestored = tuple(self._unrestored), []
            self.results.put(Done(request.token, rank, answer if self.context.is_main else None, unrestored))
        except ConvbenchError as exc:
            self.results.put(Failed(request.token, rank, str(exc), type(exc).__name__))
        except BaseException:
            self.results.put(Failed(request.token, rank, traceback.format_exc()))

    def _handle(self, request: Request) -> Any:
        if request.kind is RequestKind.PREPARE:
            assert request.case is not None and request.settings is not None
            self._end_case()  # the superseded case's memory goes before the next one loads
            case = Case(**request.case)
            self._isolation = CaseIsolation(f"case {case.id!r}")
            use_conftest_plugin_files(request.conftest_plugins)
            settings = replace(request.settings, progress=self._report if self.context.is_main else None)
            self.prepared = prepare_in_this_process(case, settings, self.context)
            return self.prepared.batches.batch_size
        if request.kind is RequestKind.RELEASE:
            self._end_case()
            return None
        prepared = self.prepared
        if prepared is None:
            raise ConvbenchError(f"no case is prepared on this worker for a {request.kind.value!r} request")
        if request.kind is RequestKind.RUN:
            self.prepared = None  # a prepared run trains once
            try:
                return prepared.run().to_dict()
            finally:
                self._end_case()
        if request.kind is RequestKind.TIME_STEPS:
            return prepared.time_steps(request.steps)
        raise ValueError(f"unknown request kind {request.kind!r}")

    def _end_case(self) -> None:
        """Let go of the case and put back the global state it changed."""
        self.prepared = None
        if self._isolation is not None:
            self._unrestored += self._isolation.end()
            self._isolation = None

    def _report(self, progress: Progress) -> None:
        self.results.put(ProgressReport(self._token, progress))
