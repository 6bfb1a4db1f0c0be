"""Where a case trains: in this process, on the session's pool of worker processes, or in the process
group torchrun already made. `prepare` is the one place that chooses; the `PreparedCase` it returns is
used the same way on every path, so that neither the pytest fixtures nor `run_case` choose again.

Preparation (loading data, building the model, and starting a worker pool where none runs yet) happens
in `prepare`; training happens in `PreparedCase.run` or `PreparedCase.time_steps`. A benchmark that
times only those therefore times the same thing on one process and on many.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from types import TracebackType

from convbench import torchrun
from convbench.case import Case
from convbench.distributed import launched_by_torchrun
from convbench.engine import PreparedRun, RunSettings, prepare_in_this_process, resolve_device
from convbench.errors import ConvbenchError
from convbench.isolation import CaseIsolation
from convbench.pool import DEFAULT_TIMEOUT_S, Lease, WorkerPool, close_pools, pool_for
from convbench.result import RunResult
from convbench.time_limit import time_limit

__all__ = ["DEFAULT_TIMEOUT_S", "PreparedCase", "close_pools", "prepare", "run_case"]


def run_case(case: Case, settings: RunSettings | None = None, timeout_s: float | None = None) -> RunResult:
    """Train ``case`` on ``case.world_size`` processes and return rank 0's result (see `prepare`)."""
    with prepare(case, settings, timeout_s) as prepared:
        return prepared.run()


def prepare(case: Case, settings: RunSettings | None = None, timeout_s: float | None = None) -> PreparedCase:
    """Make ``case`` ready to train on ``case.world_size`` processes.

    Under torchrun the existing process group is used and every rank must call this (torchrun's own
    failure handling governs). Otherwise world size 1 is prepared in this process, and larger ones on
    the session's worker pool. ``timeout_s`` (default: ``settings.timeout_s``) limits the preparation
    and then each run or round: in this process they are interrupted past it (no default, see
    `convbench.time_limit`); a pool's workers are killed and replaced past it (default 30 minutes).
    """
    settings = settings or RunSettings()
    timeout_s = settings.timeout_s if timeout_s is None else timeout_s
    if launched_by_torchrun():
        # no limit: interrupting one rank would leave the others waiting in a collective
        return _InThisProcess(case, lambda: prepare_in_this_process(case, settings, torchrun.join_for(case)), None)
    if case.world_size == 1:
        return _InThisProcess(case, lambda: prepare_in_this_process(case, settings), timeout_s)
    return _OnWorkerPool(case, settings, DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s)


class PreparedCase(abc.ABC):
    """A case ready to train on its processes: `run` it once, or time rounds of steps; then `close` it
    (or use it as a context manager) so that its processes let go of its data and put back the global
    torch state it changed (`convbench.isolation`)."""

    #: Seconds spent starting worker processes for this case (0 when they were running already).
    startup_s: float = 0.0

    def __init__(self, case: Case) -> None:
        self.case = case

    @property
    @abc.abstractmethod
    def global_batch(self) -> int:
        """Samples per step over all ranks, as preparation computed it (a full batch included)."""

    @abc.abstractmethod
    def run(self) -> RunResult:
        """Train and evaluate the case once; rank 0's result. A prepared case runs once."""

    @abc.abstractmethod
    def time_steps(self, steps: int) -> float:
        """A throughput round: the slowest rank's seconds for ``steps`` synchronised training steps.

        Rounds continue where the previous one stopped; the first round after `prepare` pays one-time
        costs (allocator, kernels, DDP buckets), so a warm-up round comes before the timed ones.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Let go of the prepared case and its data (idempotent)."""

    def __enter__(self) -> PreparedCase:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


class _InThisProcess(PreparedCase):
    """This process's rank of the case: alone, or in torchrun's process group.

    The global torch state the case finds is put back when it is closed (`convbench.isolation`), or at
    once if its preparation fails, so that what it changes does not reach the session's later cases.
    """

    def __init__(self, case: Case, prepare_here: Callable[[], PreparedRun], timeout_s: float | None) -> None:
        super().__init__(case)
        self._isolation = CaseIsolation(f"case {case.id!r}")
        self._timeout_s = timeout_s
        try:
            with time_limit(timeout_s, f"case {case.id!r}"):
                prepared = prepare_here()
        except BaseException:
            self._isolation.end_in_this_process()
            raise
        self._prepared: PreparedRun | None = prepared
        self._global_batch = prepared.batches.batch_size  # kept when the prepared run is let go

    @property
    def global_batch(self) -> int:
        return self._global_batch

    @property
    def prepared(self) -> PreparedRun:
        if self._prepared is None:
            raise ConvbenchError(f"case {self.case.id!r} was closed; prepare it again")
        return self._prepared

    def run(self) -> RunResult:
        with time_limit(self._timeout_s, f"case {self.case.id!r}"):
            return self.prepared.run()

    def time_steps(self, steps: int) -> float:
        with time_limit(self._timeout_s, f"throughput case {self.case.id!r}"):
            return self.prepared.time_steps(steps)

    def close(self) -> None:
        self._prepared = None  # its data and model, on the device, go with it
        self._isolation.end_in_this_process()


class _OnWorkerPool(PreparedCase):
    """The case prepared on every worker of the session's pool for its world size."""

    def __init__(self, case: Case, settings: RunSettings, timeout_s: float) -> None:
        if settings.registry is not None:  # it cannot follow the case into other processes
            raise ConvbenchError(
                f"case {case.id!r}: RunSettings.registry applies in this process only, but world_size="
                f"{case.world_size} trains in worker processes, which load plugins from entry points and "
                "conftest.py files; valid choices: registry=None, or world_size=1")
        super().__init__(case)
        self._settings = settings
        self._timeout_s = timeout_s
        device = resolve_device(case.device)
        pool_for(case.world_size, device).release_held(timeout_s)  # may retire it: a case left state behind
        self._pool: WorkerPool = pool_for(case.world_size, device)
        self._lease: Lease = self._pool.prepare(case, settings, timeout_s)
        self.startup_s = self._lease.startup_s

    @property
    def global_batch(self) -> int:
        return self._lease.global_batch

    def run(self) -> RunResult:
        return self._pool.run(self._lease, self._timeout_s, self._settings.progress)

    def time_steps(self, steps: int) -> float:
        return self._pool.time_steps(self._lease, steps, self._timeout_s)

    def close(self) -> None:
        self._pool.release(self._lease, self._timeout_s)
