"""Every field the report reads of an input entry, checked before anything reads it.

`RunResult.from_dict` and `ThroughputResult.from_dict` check the result contract; the report reads more
than the contract pins down (the case's fields, the numbers inside the curves and the telemetry, the
pytest-benchmark envelope around a result), and each of those, wrong, used to surface as a KeyError or a
TypeError deep in a table or a figure, losing every other input with it. Here each is checked up front,
so that a bad entry is one line naming its field (`ResultSchemaError`) and the report goes on without it.
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Callable, Mapping
from typing import Any

from convbench.result import READABLE_SCHEMAS, THROUGHPUT_SCHEMA, ResultSchemaError, RunResult, ThroughputResult

#: Deeper JSON than this is refused: nothing convbench writes comes near it, and Python's own recursion
#: (``json.dumps`` of a case's keys) fails somewhere past a few hundred levels.
MAX_DEPTH = 64
#: Whole numbers must fit in 64 bits: larger ones do not convert to a float, or overflow pandas' columns.
MAX_INTEGER = 2**63 - 1

Check = Callable[[Any], bool]


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxlong, _REPR.maxother = 3, 40, 40, 40


def describe(value: Any) -> str:
    """A value as an error message quotes it: its repr, at most 40 characters and 3 levels deep (a plain
    repr of JSON nested a thousand levels deep would itself exceed Python's recursion limit)."""
    text = _REPR.repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_finite(value: Any) -> bool:
    return _is_number(value) and math.isfinite(value)


def _is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_text(value: Any) -> bool:
    return isinstance(value, str)


def _one_of(values: tuple[str, ...]) -> tuple[Check, str]:
    return (lambda value: value in values), f"one of {', '.join(map(repr, values))}"


def _or_null(check: Check) -> Check:
    return lambda value: value is None or check(value)


NUMBER_OR_NULL = (_or_null(_is_number), "a number or null")
#: A world size: the scaling tables divide by it.
WORLD_SIZE = (lambda value: _is_whole(value) and value >= 1, "a whole number >= 1")
TEXT = (_is_text, "a string")
TEXT_OR_NULL = (_or_null(_is_text), "a string or null")
WHOLE_OR_NULL = (_or_null(_is_whole), "a whole number or null")

#: The case fields tables, figures and `compare` read, with what each must be.
CASE_FIELDS: dict[str, tuple[Check, str]] = {
    "model": TEXT, "dataset": TEXT, "optimizer": TEXT,
    "lr": (_is_finite, "a finite number"),
    "batch_size": WHOLE_OR_NULL,
    "scheduler": TEXT_OR_NULL,
    "seed": (_is_whole, "a whole number"),
    "world_size": WORLD_SIZE,
}
#: Case fields that may be absent (older files), but not wrong.
OPTIONAL_CASE_FIELDS: dict[str, tuple[Check, str]] = {
    "label": TEXT_OR_NULL,
    "scaling": (lambda value: value in ("strong", "weak"), "'strong' or 'weak'"),
}
#: What names the machine and the commit of a run, in ``machine_info`` and ``commit_info``.
INFO_FIELDS: dict[str, tuple[Check, str]] = {
    "node": TEXT_OR_NULL, "id": TEXT_OR_NULL, "dirty": (_or_null(lambda value: isinstance(value, bool)), "a boolean"),
}
#: Per-device telemetry summaries: the fields the scaling table reads.
DEVICE_FIELDS: dict[str, tuple[Check, str]] = {
    "host": TEXT_OR_NULL, "name": TEXT_OR_NULL, "index": WHOLE_OR_NULL,
    "utilization_mean": NUMBER_OR_NULL, "cpu_percent_mean": NUMBER_OR_NULL,
}


def _fields(data: Mapping[str, Any], path: str, fields: Mapping[str, tuple[Check, str]], *,
            optional: bool = False) -> None:
    """Each of ``fields`` present (unless ``optional``) and passing its check; else name the first that is not."""
    for key, (check, description) in fields.items():
        name = f"{path}.{key}" if path else key
        if key not in data:
            if optional:
                continue
            raise ResultSchemaError(f"field {name!r} is missing")
        if not check(data[key]):
            raise ResultSchemaError(f"field {name!r}: expected {description}, got {describe(data[key])}")


def _object(value: Any, path: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ResultSchemaError(f"field {path!r}: expected an object, got {describe(value)}")
    return value


def plain_json(value: Any, path: str = "") -> None:
    """No nesting deeper than `MAX_DEPTH` and no whole number beyond 64 bits anywhere in ``value``.

    Walks without recursion, so that the check itself cannot hit Python's recursion limit.
    """
    stack: list[tuple[Any, str, int]] = [(value, path, 0)]
    while stack:
        item, where, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ResultSchemaError(f"field {where!r}: nested more than {MAX_DEPTH} levels deep")
        if _is_whole(item) and abs(item) > MAX_INTEGER:
            raise ResultSchemaError(f"field {where!r}: {describe(item)} is too large a number")
        if isinstance(item, Mapping):
            stack += [(v, _below(where, f".{k}" if where else str(k)), depth + 1) for k, v in item.items()]
        elif isinstance(item, list):
            stack += [(v, _below(where, f"[{i}]"), depth + 1) for i, v in enumerate(item)]


def _below(path: str, step: str) -> str:
    """The path one step down; a path past 60 characters stops growing (``...``): a message names where the
    trouble starts, not each of a thousand levels."""
    if len(path) > 60:
        return path if path.endswith("...") else path + "..."
    return path + step


def check_run(data: Any) -> None:
    """A training run's result (``extra_info["convbench"]``), every field the report reads."""
    plain_json(data)  # first: the contract's own checks quote values with a plain repr
    _fields(_object(data, "extra_info.convbench"), "", {"schema": _one_of(READABLE_SCHEMAS)})
    RunResult.from_dict(data)
    case = data["case"]
    _fields(case, "case", CASE_FIELDS)
    _fields(case, "case", OPTIONAL_CASE_FIELDS, optional=True)
    _fields(data, "", {"world_size": WORLD_SIZE})
    _fields(data, "", {"group": TEXT_OR_NULL, "outcome": TEXT_OR_NULL}, optional=True)
    _check_curves(data["curves"])
    if data.get("telemetry") is not None:
        _check_telemetry(data["telemetry"], "telemetry")


def check_failed(data: Any) -> None:
    """A case that failed before training: ``{"error", "scale", "outcome", "group"}``."""
    _object(data, "extra_info.convbench")
    plain_json(data)
    _fields(data, "", {"error": TEXT})
    _fields(data, "", {"scale": TEXT_OR_NULL, "outcome": TEXT_OR_NULL, "group": TEXT_OR_NULL}, optional=True)


def check_throughput(data: Any) -> None:
    """A `throughput` fixture's result (``extra_info["convbench_throughput"]``)."""
    plain_json(data)
    _fields(_object(data, "extra_info.convbench_throughput"), "", {"schema": _one_of((THROUGHPUT_SCHEMA,))})
    ThroughputResult.from_dict(data)
    _fields(data, "", {"samples_per_s": (_is_number, "a number"),
                       "samples_per_s_per_device": (_is_number, "a number"), "world_size": WORLD_SIZE})
    _fields(data, "", {"group": TEXT_OR_NULL}, optional=True)
    _fields(data["case"], "case", OPTIONAL_CASE_FIELDS, optional=True)


def _numbers(values: Any, path: str) -> list[Any]:
    if not isinstance(values, list):
        raise ResultSchemaError(f"field {path!r}: expected a list, got {describe(values)}")
    for index, value in enumerate(values):
        if not (value is None or _is_number(value)):
            raise ResultSchemaError(f"field '{path}[{index}]': expected a number or null, got {describe(value)}")
    return values


#: The series the figures read of each part of the curves (a part may hold more).
CURVE_SERIES = {"train": ("step", "loss"), "eval": ("step", "time_s"), "params": ("step",)}


def _check_curves(curves: Mapping[str, Any]) -> None:
    """Every series of every part (train, eval, params) a list of numbers or nulls; the figures plot each
    against its part's steps, so the train loss and the parameters need one value per step."""
    for part, series in curves.items():
        series = _object(series, f"curves.{part}")
        for name in CURVE_SERIES.get(part, ()):
            if name not in series:
                raise ResultSchemaError(f"field 'curves.{part}.{name}' is missing")
        for name, values in series.items():
            _numbers(values, f"curves.{part}.{name}")
        steps = len(series.get("step") or [])
        paired = series if part == "params" else {k: v for k, v in series.items() if part == "train" and k == "loss"}
        for name, values in paired.items():
            if len(values) != steps:
                raise ResultSchemaError(f"field 'curves.{part}.{name}': {len(values)} values for {steps} steps")


def _check_telemetry(telemetry: Any, path: str) -> None:
    telemetry = _object(telemetry, path)
    _fields(telemetry, path, {"host": TEXT_OR_NULL}, optional=True)
    for index, device in enumerate(telemetry.get("devices") or []):
        _fields(_object(device, f"{path}.devices[{index}]"), f"{path}.devices[{index}]", DEVICE_FIELDS, optional=True)
    timeline = _object(telemetry.get("timeline") or {}, f"{path}.timeline")
    for key, values in timeline.items():
        if key == "t_s" or key.endswith(("_utilization", "_percent")):
            _numbers(values, f"{path}.timeline.{key}")
    for index, rank in enumerate(telemetry.get("ranks") or []):
        if rank is not None:
            _check_telemetry(rank, f"{path}.ranks[{index}]")


def check_info(info: Any, path: str) -> None:
    """pytest-benchmark's ``machine_info`` or ``commit_info`` (a results file's ``machine``, ``commit``): null,
    or an object whose host name (``node``) and commit (``id``, ``dirty``) are what `load.source_labels` reads."""
    if info is not None:
        _fields(_object(info, path), path, INFO_FIELDS, optional=True)
