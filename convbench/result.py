"""The result contract: what one training run, and one throughput measurement, recorded.

Every part of a result is a dataclass with one ``to_dict`` (plain JSON types: what lands in
``extra_info["convbench"]`` of pytest-benchmark's JSON and in the results file) and one
``from_dict`` (what `convbench report` and `compare` read back). ``from_dict`` checks every field it
reads and raises `ResultSchemaError` naming the field, so a malformed file is one line, not a
``KeyError`` deep in a table.

Versions: ``convbench.result/2`` added ``stop_reason``; files written as ``convbench.result/1`` are
read unchanged (their stop reason is unknown). ``convbench.result/3`` added the stalled verdict
(``stalled``, ``stall``, stop reason ``"stalled"``); in older files it is unknown (``stalled`` None),
and a run that never learned may show stop reason ``"budget"`` there. ``machine_load`` and ``energy`` came later within
version 2: they are optional, and None in files written before them (as are a throughput result's
``round_s.median``, ``round_s.std`` and ``machine_load`` within ``convbench.throughput/1``). ``parallel``
came later within version 3: it is written only for a run that shared the machine with other cases
(pytest-xdist), and absent, read as None, for a run that had it to itself and in files written before it. Bump
`SCHEMA` when a field changes meaning, and keep the older versions in `READABLE_SCHEMAS` while they
can be read.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, TypeVar

from convbench.errors import ConvbenchError

SCHEMA = "convbench.result/3"
READABLE_SCHEMAS = ("convbench.result/1", "convbench.result/2", SCHEMA)
#: A line of the results file: a pytest-benchmark-like entry whose extra_info["convbench"] is a result.
RECORD_SCHEMA = "convbench.record/1"
#: ``extra_info["convbench_throughput"]`` of a `throughput` fixture benchmark.
THROUGHPUT_SCHEMA = "convbench.throughput/1"
SPLITS = ("train", "val", "test")


class ResultSchemaError(ConvbenchError, ValueError):
    """A result read from JSON lacks a field or has one of the wrong type; the message names the field."""


# ------------------------------------------------------------------------------- field readers
_NUMBER = "a number"


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class _Fields:
    """Reads the fields of one JSON object, naming each by its dotted path in any error."""

    def __init__(self, data: Any, path: str) -> None:
        if not isinstance(data, Mapping):
            where = f"field {path!r}" if path else "a result"
            raise ResultSchemaError(f"{where}: expected an object, got {_describe(data)}")
        self.data, self.path = data, path

    def _name(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def _present(self, key: str, optional: bool) -> Any:
        if key not in self.data:
            if optional:
                return None
            raise ResultSchemaError(f"field {self._name(key)!r} is missing")
        return self.data[key]

    def _wrong(self, key: str, expected: str, value: Any) -> ResultSchemaError:
        return ResultSchemaError(f"field {self._name(key)!r}: expected {expected}, got {_describe(value)}")

    def number(self, key: str, *, optional: bool = False) -> float | None:
        """A number (non-finite ones included: a diverged run's numbers are shown as such), or None."""
        value = self._present(key, optional)
        if value is None:
            if optional:
                return None
            raise self._wrong(key, _NUMBER, value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self._wrong(key, _NUMBER + (" or null" if optional else ""), value)
        return value

    def integer(self, key: str, *, optional: bool = False) -> int | None:
        value = self._present(key, optional)
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._wrong(key, "a whole number", value)
        return value

    def flag(self, key: str, *, optional: bool = False) -> bool | None:
        value = self._present(key, optional)
        if value is None and optional:
            return None
        if not isinstance(value, bool):
            raise self._wrong(key, "true or false", value)
        return value

    def text(self, key: str, *, optional: bool = False) -> str | None:
        value = self._present(key, optional)
        if value is None and optional:
            return None
        if not isinstance(value, str):
            raise self._wrong(key, "a string", value)
        return value

    def mapping(self, key: str, *, optional: bool = False) -> dict[str, Any] | None:
        value = self._present(key, optional)
        if value is None and optional:
            return None
        if not isinstance(value, Mapping):
            raise self._wrong(key, "an object", value)
        return dict(value)

    def sequence(self, key: str, *, optional: bool = False) -> list[Any] | None:
        value = self._present(key, optional)
        if value is None and optional:
            return None
        if not isinstance(value, list):
            raise self._wrong(key, "a list", value)
        return value

    def objects(self, key: str) -> list[dict[str, Any]]:
        """An optional list of JSON objects (a run's devices, hosts, counters); each entry checked to be one,
        named ``key[index]`` in the error. Absent: an empty list."""
        entries = self.sequence(key, optional=True) or []
        for index, entry in enumerate(entries):
            _Fields(entry, f"{self._name(key)}[{index}]")
        return entries

    def numbers(self, key: str) -> dict[str, float | None]:
        """An object of metric name -> number or null (``final``, ``best``)."""
        values = self.mapping(key)
        assert values is not None
        inner = _Fields(values, self._name(key))
        return {str(name): inner.number(name, optional=True) for name in values}

    def child(self, key: str, *, optional: bool = False) -> _Fields | None:
        value = self._present(key, optional)
        if value is None and optional:
            return None
        return _Fields(value, self._name(key))


# ------------------------------------------------------------------------------- the parts
@dataclass(frozen=True)
class Timing:
    """Where a run's time went, in seconds. Only ``train_s`` is the training time tables compare.

    ``startup_s``, ``process_group_init_s`` and ``pool_reused`` exist for runs on a worker pool only:
    start-up is charged to the first case a pool runs (0 for the cases after it).

    ``first_in_process`` is True when no run had trained on this device type in the training process
    before this one: its ``train_s`` may hold one-time costs (kernels loaded on first use, the
    allocator growing, thread pools starting), a cold start the scaling check names when a
    world-size-1 baseline looks too slow. Absent (None) in files written before it was recorded.
    """

    setup_s: float
    train_s: float
    eval_s: float
    train_per_step_s: float | None = None
    startup_s: float | None = None
    process_group_init_s: float | None = None
    pool_reused: bool | None = None
    first_in_process: bool | None = None
    #: A compiled case's (``Case.compile``) compilation before training, and its first training step (in
    #: ``train_s``); absent for other runs and in files written before they were recorded.
    compile_s: float | None = None
    first_step_s: float | None = None

    _POOL_FIELDS = ("startup_s", "process_group_init_s", "pool_reused")
    _ABSENT_WHEN_NONE = (*_POOL_FIELDS, "first_in_process", "compile_s", "first_step_s")

    def to_dict(self) -> dict[str, Any]:
        # the pool's fields are absent, not null, for in-process runs: a null start-up would read as unknown
        return {k: v for k, v in asdict(self).items() if not (k in self._ABSENT_WHEN_NONE and v is None)}

    @classmethod
    def from_dict(cls, data: Any, path: str = "timing") -> Timing:
        f = _Fields(data, path)
        return cls(setup_s=f.number("setup_s"), train_s=f.number("train_s"), eval_s=f.number("eval_s"),
                   train_per_step_s=f.number("train_per_step_s", optional=True),
                   startup_s=f.number("startup_s", optional=True),
                   process_group_init_s=f.number("process_group_init_s", optional=True),
                   pool_reused=f.flag("pool_reused", optional=True),
                   first_in_process=f.flag("first_in_process", optional=True),
                   compile_s=f.number("compile_s", optional=True), first_step_s=f.number("first_step_s", optional=True))


@dataclass(frozen=True)
class Target:
    """The case's target and when the run first met it (training time, evaluation excluded)."""

    metric: str | None = None  # "accuracy" or "loss"; None: the case has no target
    split: str | None = None
    value: float | None = None
    reached: bool = False
    step: int | None = None
    epoch: float | None = None
    time_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, path: str = "target") -> Target:
        f = _Fields(data, path)
        return cls(metric=f.text("metric", optional=True), split=f.text("split", optional=True),
                   value=f.number("value", optional=True), reached=bool(f.flag("reached", optional=True)),
                   step=f.integer("step", optional=True), epoch=f.number("epoch", optional=True),
                   time_s=f.number("time_s", optional=True))


@dataclass(frozen=True)
class _Verdict:
    """A verdict on a run: the step it applies to and why, in words with the numbers."""

    step: int
    reason: str
    #: The field's name in a result, for error messages.
    _field: ClassVar[str] = "verdict"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls: type[_V], data: Any, path: str | None = None) -> _V:
        f = _Fields(data, path or cls._field)
        return cls(step=f.integer("step"), reason=f.text("reason"))


_V = TypeVar("_V", bound=_Verdict)


@dataclass(frozen=True)
class Divergence(_Verdict):
    """Why and where a run was stopped as diverged."""

    _field: ClassVar[str] = "divergence"


@dataclass(frozen=True)
class Stall(_Verdict):
    """Why a run is judged never to have learned (`convbench.stall`): its last step and the numbers."""

    _field: ClassVar[str] = "stall"


@dataclass(frozen=True)
class Telemetry:
    """Device (NVML) or CPU (psutil) sampling during a run (`convbench.telemetry` writes it).

    ``devices`` has one summary per sampled device (its keys depend on the sampler); in a process
    group each is tagged with its ``rank`` and ``host``, and ``ranks`` keeps every rank's own
    telemetry (None where a rank did not sample).
    """

    sampler: str
    interval_s: float | None = None
    host: str | None = None
    reason: str | None = None  # why this sampler (e.g. "NVML is unavailable: ..."), when not the first choice
    error: str | None = None
    samples: int = 0
    duration_s: float | None = None
    devices: list[dict[str, Any]] = field(default_factory=list)
    timeline: dict[str, list[Any]] = field(default_factory=dict)
    ranks: list[dict[str, Any] | None] | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.ranks is None:
            del data["ranks"]  # a single process: its one timeline is the result's own
        return data

    @classmethod
    def from_dict(cls, data: Any, path: str = "telemetry") -> Telemetry:
        f = _Fields(data, path)
        devices = f.objects("devices")
        return cls(sampler=f.text("sampler"), interval_s=f.number("interval_s", optional=True),
                   host=f.text("host", optional=True), reason=f.text("reason", optional=True),
                   error=f.text("error", optional=True), samples=f.integer("samples", optional=True) or 0,
                   duration_s=f.number("duration_s", optional=True), devices=devices,
                   timeline=f.mapping("timeline", optional=True) or {}, ranks=f.sequence("ranks", optional=True))


@dataclass(frozen=True)
class MachineLoad:
    """Whether other work shared the machine while the run was measured (`convbench.machine_load`).

    ``other_cpu_share`` is the fraction of all the machine's core-seconds during the run that other
    processes used (the machine's busy CPU time minus this run's processes'); on several machines,
    the largest. ``other_gpu_processes`` counts processes on the run's GPUs that are not the run's
    (None off GPUs, or where NVML cannot tell). ``busy`` is True when others took more than
    `convbench.machine_load.BUSY_CPU_SHARE` of the cores' time or any foreign process was on a GPU;
    None when neither could be judged (unread, or a short run's share too close to the threshold for
    the kernel's 10 ms ticks). ``reason`` says why it is busy, or why it could not tell; ``hosts``
    has each machine's own numbers (with ``cpu_share_resolution``, how far its shares may be off;
    ``cores``, its logical cores; ``ranks``, the run's ranks there, and ``threads``, their torch
    intra-op threads together: the last two absent in files written before them).
    """

    busy: bool | None
    other_cpu_share: float | None = None
    own_cpu_share: float | None = None
    other_gpu_processes: int | None = None
    duration_s: float | None = None
    reason: str | None = None
    hosts: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, path: str = "machine_load") -> MachineLoad:
        f = _Fields(data, path)
        hosts = f.objects("hosts")
        return cls(busy=f.flag("busy", optional=True), other_cpu_share=f.number("other_cpu_share", optional=True),
                   own_cpu_share=f.number("own_cpu_share", optional=True),
                   other_gpu_processes=f.integer("other_gpu_processes", optional=True),
                   duration_s=f.number("duration_s", optional=True), reason=f.text("reason", optional=True),
                   hosts=hosts)


@dataclass(frozen=True)
class Energy:
    """Energy the run used, from hardware counters (`convbench.energy`); None, never 0, where unknown.

    ``source`` is "nvml" (each rank's GPU, summed) or "rapl" (the CPU packages of each machine, once
    per machine); None when no counter could be read, and ``reason`` says why. ``run_j`` covers the
    run from its first evaluation to its end, evaluations included (the counters cannot leave them
    out); ``to_target_j`` the same up to the end of the evaluation that first reached the target
    (None when it was not reached). ``counters`` has each counter's own readings.
    """

    source: str | None
    run_j: float | None = None
    to_target_j: float | None = None
    reason: str | None = None
    counters: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, path: str = "energy") -> Energy:
        f = _Fields(data, path)
        counters = f.objects("counters")
        return cls(source=f.text("source", optional=True), run_j=f.number("run_j", optional=True),
                   to_target_j=f.number("to_target_j", optional=True), reason=f.text("reason", optional=True),
                   counters=counters)


def _check_curves(curves: dict[str, Any], path: str = "curves") -> dict[str, Any]:
    """The loss curve and the evaluations must be lists of equal length per part (figures zip them)."""
    f = _Fields(curves, path)
    for part in ("train", "eval"):
        series = f.child(part)
        assert series is not None
        length = len(series.sequence("step") or [])
        for name, values in series.data.items():
            if not isinstance(values, list):
                raise ResultSchemaError(f"field '{path}.{part}.{name}': expected a list, got {_describe(values)}")
            if part == "eval" and len(values) != length:
                raise ResultSchemaError(f"field '{path}.{part}.{name}': {len(values)} values for {length} steps")
    return curves


@dataclass(frozen=True)
class Parallel:
    """How a run shared the machine: pytest-xdist ran ``workers`` cases at once, this one on ``worker``
    (``gw1``), pinned to ``device`` (``cuda:1`` in the session's numbering, ``cuda:2,cuda:3``, or ``cpu``
    with ``threads`` torch threads, its share of the cores; `convbench.worker_devices`).

    Its quality numbers are the same as alone; its times were taken side by side with other cases, so
    `convbench compare` does not judge them against times taken alone, and tables and figures say so.
    """

    workers: int
    worker: str
    device: str
    threads: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, path: str = "parallel") -> Parallel:
        f = _Fields(data, path)
        return cls(workers=f.integer("workers"), worker=f.text("worker"), device=f.text("device"),
                   threads=f.integer("threads", optional=True))


# ------------------------------------------------------------------------------- the results
@dataclass
class RunResult:
    """One run's measurements. Metrics that could not be computed (NaN, no such split) are None."""

    case_id: str
    case: dict[str, Any]
    scale: str
    device: str
    world_size: int
    steps: int
    steps_planned: int
    epochs: float
    samples: int
    diverged: bool
    divergence: Divergence | None
    timing: Timing
    samples_per_s: float | None
    final: dict[str, float | None]
    best: dict[str, float | None]
    target: Target
    curves: dict[str, dict[str, list[Any]]]
    telemetry: Telemetry | None = None
    schema: str = field(default=SCHEMA)
    #: Why training ended: "budget", "target", "diverged", ... (`convbench.engine`); None in version 1 files.
    stop_reason: str | None = None
    #: Whether other work shared the machine during the run; None in files written before it was recorded.
    machine_load: MachineLoad | None = None
    #: Energy for the run and up to the target; None in files written before it was recorded.
    energy: Energy | None = None
    #: Whether the run ended at chance level (`convbench.stall`); None in files written before the verdict.
    stalled: bool | None = False
    stall: Stall | None = None
    #: Which other cases ran beside it (pytest-xdist); None, and absent from `to_dict`, for a run alone.
    parallel: Parallel | None = None

    # Conveniences for assertions in suites ------------------------------------------------------
    @property
    def initial_train_loss(self) -> float | None:
        losses = self.curves["train"]["loss"]
        return losses[0] if losses else None

    @property
    def final_train_loss(self) -> float | None:
        """The mean train loss over the last logged stretch of steps (less noisy than one batch)."""
        losses = self.curves["train"]["loss"]
        return losses[-1] if losses else None

    @property
    def target_reached(self) -> bool:
        return self.target.reached

    def metric(self, split: str, name: str = "accuracy", which: str = "final") -> float | None:
        """e.g. ``result.metric("test")`` is the final test accuracy."""
        return getattr(self, which).get(f"{split}_{name}")

    def replace_timing(self, **changes: Any) -> RunResult:
        """This result with some timing fields changed (the launcher adds what only it knows)."""
        from dataclasses import replace

        return replace(self, timing=replace(self.timing, **changes))

    def to_dict(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in self.__dataclass_fields__}
        for name in ("divergence", "timing", "target", "telemetry", "machine_load", "energy", "stall", "parallel"):
            part = data[name]
            data[name] = None if part is None else part.to_dict()
        if data["parallel"] is None:  # a run alone: its record stays as before parallel runs were recorded
            del data["parallel"]
        return _json_clean(data)

    @classmethod
    def from_dict(cls, data: Any) -> RunResult:
        """A result read back from JSON, every field checked (`ResultSchemaError` names the bad one)."""
        f = _Fields(data, "")
        schema = f.text("schema")
        if schema not in READABLE_SCHEMAS:
            raise ResultSchemaError(f"result schema {schema!r}; this convbench reads {', '.join(READABLE_SCHEMAS)}")
        divergence, telemetry = f.mapping("divergence", optional=True), f.mapping("telemetry", optional=True)
        machine_load, energy = f.mapping("machine_load", optional=True), f.mapping("energy", optional=True)
        stall, parallel = f.mapping("stall", optional=True), f.mapping("parallel", optional=True)
        stalled = f.flag("stalled") if schema == SCHEMA else None
        return cls(
            case_id=f.text("case_id"), case=f.mapping("case"), scale=f.text("scale"), device=f.text("device"),
            world_size=f.integer("world_size"), steps=f.integer("steps"), steps_planned=f.integer("steps_planned"),
            epochs=f.number("epochs"), samples=f.integer("samples"), diverged=f.flag("diverged"),
            divergence=None if divergence is None else Divergence.from_dict(divergence),
            timing=Timing.from_dict(f.mapping("timing")),
            samples_per_s=f.number("samples_per_s", optional=True),
            final=f.numbers("final"), best=f.numbers("best"),
            target=Target.from_dict(f.mapping("target")),
            curves=_check_curves(f.mapping("curves")),
            telemetry=None if telemetry is None else Telemetry.from_dict(telemetry),
            schema=schema, stop_reason=f.text("stop_reason", optional=True),
            machine_load=None if machine_load is None else MachineLoad.from_dict(machine_load),
            energy=None if energy is None else Energy.from_dict(energy),
            stalled=stalled, stall=None if stall is None else Stall.from_dict(stall),
            parallel=None if parallel is None else Parallel.from_dict(parallel),
        )


@dataclass(frozen=True)
class RoundTimes:
    """Seconds per throughput round: the statistics pytest-benchmark also reports, kept with the result.

    ``median`` and ``std`` (the sample standard deviation; None for a single round, which has no
    spread) say how much one round's time can be trusted: a large spread means the rounds were
    disturbed. They are None in files written before they were recorded.
    """

    mean: float
    min: float
    max: float
    median: float | None = None
    std: float | None = None

    @classmethod
    def of(cls, seconds: list[float]) -> RoundTimes:
        return cls(statistics.fmean(seconds), min(seconds), max(seconds), median=statistics.median(seconds),
                   std=statistics.stdev(seconds) if len(seconds) > 1 else None)

    @classmethod
    def from_dict(cls, data: Any, path: str = "round_s") -> RoundTimes:
        f = _Fields(data, path)
        return cls(mean=f.number("mean"), min=f.number("min"), max=f.number("max"),
                   median=f.number("median", optional=True), std=f.number("std", optional=True))


@dataclass(frozen=True)
class ThroughputResult:
    """What the `throughput` fixture measured: samples per second over timed rounds of training steps.

    ``machine_load`` covers the timed rounds (not the warm-up); None in files written before it was
    recorded.
    """

    case_id: str
    case: dict[str, Any]
    world_size: int
    steps_per_round: int
    rounds: int
    samples_per_round: int
    round_s: RoundTimes
    startup_s: float = 0.0
    schema: str = THROUGHPUT_SCHEMA
    machine_load: MachineLoad | None = None

    @property
    def samples_per_s(self) -> float:
        return self.samples_per_round / self.round_s.mean

    @property
    def samples_per_s_per_device(self) -> float:
        return self.samples_per_s / self.world_size

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(samples_per_s=self.samples_per_s, samples_per_s_per_device=self.samples_per_s_per_device)
        return _json_clean(data)

    @classmethod
    def from_dict(cls, data: Any) -> ThroughputResult:
        f = _Fields(data, "")
        schema = f.text("schema")
        if schema != THROUGHPUT_SCHEMA:
            raise ResultSchemaError(f"throughput schema {schema!r}; this convbench reads {THROUGHPUT_SCHEMA!r}")
        machine_load = f.mapping("machine_load", optional=True)
        return cls(case_id=f.text("case_id"), case=f.mapping("case"), world_size=f.integer("world_size"),
                   steps_per_round=f.integer("steps_per_round"), rounds=f.integer("rounds"),
                   samples_per_round=f.integer("samples_per_round"),
                   round_s=RoundTimes.from_dict(f.mapping("round_s")),
                   startup_s=f.number("startup_s", optional=True) or 0.0, schema=schema,
                   machine_load=None if machine_load is None else MachineLoad.from_dict(machine_load))


def _json_clean(value: Any) -> Any:
    """NaN and infinities are not JSON: they become None (divergence is recorded separately)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_clean(v) for v in value]
    return value
