"""Read convbench results out of pytest-benchmark JSON files and convbench results files (JSONL).

Both hold the same entries (``{"group", "name", "fullname", "extra_info": {"convbench": ...}}``), so
one reader serves both. A file that cannot be read at all becomes one `ReportInputError` line naming
it; an entry of a readable file that is not a valid result (`convbench.report.schema`) is left out with
one line naming the file, the entry and the field, and the file's other entries are still read.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from convbench.errors import ReportInputError
from convbench.report import identity, parallel, schema
from convbench.report.formats import one_line
from convbench.result import RECORD_SCHEMA, ResultSchemaError

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class LoadedFile:
    path: Path
    records: list[dict[str, Any]]
    machine_info: dict[str, Any] = field(default_factory=dict)
    commit_info: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    #: Cases that failed before training (no measurements): ``{"test", "scale", "error", ...}``.
    failed: list[dict[str, Any]] = field(default_factory=list)
    #: Results of the `throughput` fixture (``extra_info["convbench_throughput"]``), with group and test.
    throughput: list[dict[str, Any]] = field(default_factory=list)
    #: Entries left out because they are not valid results: one line each, naming the entry and the field.
    rejected: list[str] = field(default_factory=list)


def expand_inputs(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given; a folder (pytest-benchmark's ``.benchmarks/`` of ``--benchmark-autosave``) stands
    for every ``*.json`` and ``*.jsonl`` below it, oldest name first so that later runs supersede."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix in (".json", ".jsonl") and p.is_file())
            files += found or [path]  # an empty folder is reported as unreadable, not silently skipped
        else:
            files.append(path)
    return files


def load(path: str | Path) -> LoadedFile:
    """Load one file; raise `ReportInputError` if it holds no usable convbench result.

    An entry that is not a valid result is left out, with one line in `LoadedFile.rejected` naming the
    file, the benchmark and the field; the file's other entries are still read.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ReportInputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ReportInputError(f"{path}: a folder with no .json or .jsonl files") from None
    except OSError as exc:
        raise ReportInputError(f"{path}: cannot be read ({exc})") from None
    skipped = None
    if path.suffix == ".jsonl":
        numbered, skipped = _jsonl_entries(path, data)  # each line decoded alone: a bad one costs itself
        entries = [entry for _, entry in numbered]
        names = [f"line {number}" for number, _ in numbered]
        loaded = LoadedFile(path, [], warnings=[f"{path}: {skipped}"] if skipped else [])
    else:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ReportInputError(f"{path}: cannot be read ({exc})") from None
        entries, loaded = _benchmark_json(path, text)
        names = [f"entry {index}" for index in range(len(entries))]
    first_problem = None
    for index, (entry, where) in enumerate(zip(entries, names, strict=True)):
        try:
            _add_entry(loaded, index, entry)
        except ResultSchemaError as exc:
            problem = one_line(f"{_entry_name(entry, where)}: {exc}")
            loaded.rejected.append(f"{path}: {problem}; left out")
            first_problem = first_problem or problem
    if not loaded.records and not loaded.throughput and not loaded.failed:  # failures are results for compare
        why = [f"{len(loaded.rejected)} left out, the first: {first_problem}"] if first_problem else []
        why += [skipped] if skipped else []
        raise ReportInputError(f"{path}: no convbench results among {len(entries)} entries "
                               f"({'; '.join(why) or 'were the cases run with the convergence fixture?'})")
    return loaded


def _benchmark_json(path: Path, text: str) -> tuple[list[Any], LoadedFile]:
    """The entries of a pytest-benchmark JSON file, and the file with its machine and commit info."""
    document = _parse(path, text)
    if not isinstance(document, dict) or not isinstance(document.get("benchmarks"), list):
        raise ReportInputError(f"{path}: not a pytest-benchmark JSON file (no 'benchmarks' list)")
    loaded = LoadedFile(path, [])
    loaded.machine_info = _info(loaded, document, "machine_info")
    loaded.commit_info = _info(loaded, document, "commit_info")
    return document["benchmarks"], loaded


def _add_entry(loaded: LoadedFile, index: int, entry: Any) -> None:
    """File one entry as a run, a case that failed before training or a throughput result, each checked
    whole before it is kept (`ResultSchemaError` names the first bad field)."""
    path = loaded.path
    extra_info = _extra_info(entry)
    if "convbench_throughput" in extra_info:
        speed = extra_info["convbench_throughput"]
        if isinstance(speed, dict) and "schema" not in speed and speed.get("error"):  # a results-file line
            loaded.warnings.append(one_line(f"{path}: {_test(entry)} failed before measuring throughput: "
                                            f"{speed['error']}"))
            return
        schema.check_throughput(speed)
        labels = _labels(loaded, entry)
        loaded.throughput.append({**speed, "group": _group(entry, speed), "test": _test(entry), "source": str(path),
                                  **labels})
        return
    record = _record(path, entry)
    if record is None:
        return
    record["position"] = index
    record.update(_labels(loaded, entry))
    if record.get("failed_before_training"):
        loaded.warnings.append(one_line(f"{path}: {record['test']} failed before training: {record['error']}"))
        loaded.failed.append(record)
    else:
        loaded.records.append(record)


def source_labels(machine_info: Any, commit_info: Any) -> dict[str, str | None]:
    """``{"machine": host name, "commit": short commit id (+"-dirty")}`` from pytest-benchmark's
    machine and commit info, so results of different machines or commits stay apart and labelled."""
    machine = machine_info.get("node") if isinstance(machine_info, dict) else None
    commit = commit_info.get("id") if isinstance(commit_info, dict) else None
    if commit in (None, "unversioned", "unknown"):
        commit = None
    else:
        commit = str(commit)[:10] + ("-dirty" if commit_info.get("dirty") else "")
    return {"machine": machine or None, "commit": commit}


def _labels(loaded: LoadedFile, entry: dict[str, Any]) -> dict[str, str | None]:
    """Where an entry ran: each line of a results file says so; a benchmark JSON says it once for all."""
    if loaded.path.suffix == ".jsonl":
        for key in ("machine", "commit"):
            schema.check_info(entry.get(key), key)
        return source_labels(entry.get("machine"), entry.get("commit"))
    return source_labels(loaded.machine_info, loaded.commit_info)


def _info(loaded: LoadedFile, document: dict[str, Any], key: str) -> dict[str, Any]:
    """The document's ``machine_info`` or ``commit_info``; when malformed, a warning and none (its runs are
    then not labelled with a machine or commit, but still reported)."""
    info = document.get(key)
    try:
        schema.check_info(info, key)
    except ResultSchemaError as exc:
        loaded.warnings.append(one_line(f"{loaded.path}: {exc}; its runs are reported without it"))
        return {}
    return info or {}


def _parse(path: Path, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReportInputError(f"{path}: malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except (RecursionError, ValueError) as exc:  # nested too deeply for Python, or an integer too long to read
        raise ReportInputError(f"{path}: cannot be read as JSON ({_exception_line(exc)})") from None


def _exception_line(exc: BaseException) -> str:
    return one_line(f"{type(exc).__name__}: {exc}")


def _jsonl_entries(path: Path, data: bytes) -> tuple[list[tuple[int, dict[str, Any]]], str | None]:
    """The readable lines of a results file with their line numbers, and what was skipped and why.

    A results file collects many sessions' lines: one killed mid-write, one of another convbench,
    one edited by hand must cost its own line only. Each line is decoded on its own (a line that is
    not UTF-8 is a bad line, not an unreadable file); a file with no readable line at all is an error.
    A line that reads as a record but whose result is invalid is not skipped here: `load` leaves it out
    with an error naming the field, as it does for an entry of a benchmark JSON file.
    """
    entries: list[tuple[int, dict[str, Any]]] = []
    skipped: dict[str, list[int]] = {}  # why -> line numbers
    lines = data.split(b"\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entries.append((number, _jsonl_entry(line, cut=number == len(lines))))
        except _BadLine as why:
            skipped.setdefault(str(why), []).append(number)
    if not skipped:
        return entries, None
    count = sum(map(len, skipped.values()))
    summary = f"skipped {count} unreadable line{'s' if count > 1 else ''}: " + "; ".join(
        f"{_line_numbers(numbers)} ({why})" for why, numbers in skipped.items())
    if not entries:
        raise ReportInputError(f"{path}: no readable line; {summary}")
    return entries, summary


class _BadLine(Exception):
    """Why one line of a results file cannot be read (its message goes into the loader's warning)."""


def _jsonl_entry(line: bytes, cut: bool) -> dict[str, Any]:
    """One line as a results-file record, or `_BadLine` saying why it is not one.

    ``cut``: the line is the last and has no newline, which every finished write ends with.
    """
    try:
        entry = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        raise _BadLine("not UTF-8") from None
    except json.JSONDecodeError:
        raise _BadLine("malformed JSON" + (": cut short, as a killed session leaves it" if cut else "")) from None
    except (RecursionError, ValueError) as exc:  # nested too deeply for Python, or an integer too long to read
        raise _BadLine(f"cannot be read as JSON ({_exception_line(exc)})") from None
    if not isinstance(entry, dict):
        raise _BadLine(f"{json.dumps(entry)[:20]}, not an object")
    if entry.get("schema") != RECORD_SCHEMA:
        raise _BadLine(f"record schema {entry.get('schema')!r}; this convbench reads {RECORD_SCHEMA!r}")
    return entry


def _line_numbers(numbers: list[int], shown: int = 10) -> str:
    """``line 7`` or ``lines 2, 7, 9`` (the first ``shown`` of them, then how many more)."""
    listed = ", ".join(map(str, numbers[:shown])) + (f" and {len(numbers) - shown} more" if len(numbers) > shown
                                                     else "")
    return f"line{'s' if len(numbers) > 1 else ''} {listed}"


def _entry_name(entry: Any, where: str) -> str:
    """``benchmark NAME (line N)`` or ``(entry N)``: how an error names an entry of a file."""
    names = [entry.get(key) for key in ("fullname", "name")] if isinstance(entry, dict) else []
    name = next((n for n in names if isinstance(n, str) and n), None)
    return f"benchmark {name} ({where})" if name else where


def _extra_info(entry: Any) -> dict[str, Any]:
    """The entry's ``extra_info`` (empty when it has none); `ResultSchemaError` when the entry or it is no object."""
    if not isinstance(entry, dict):
        raise ResultSchemaError(f"expected an object, got {schema.describe(entry)}")
    extra_info = entry.get("extra_info")
    if extra_info is not None and not isinstance(extra_info, dict):
        raise ResultSchemaError(f"field 'extra_info': expected an object, got {schema.describe(extra_info)}")
    return extra_info or {}


def _test(entry: dict[str, Any]) -> str:
    """The entry's test name: pytest-benchmark's ``fullname``, else its ``name``."""
    for key in ("fullname", "name"):
        if entry.get(key) is not None and not isinstance(entry[key], str):
            raise ResultSchemaError(f"field {key!r}: expected a string, got {schema.describe(entry[key])}")
    test = entry.get("fullname") or entry.get("name")
    if not test:
        raise ResultSchemaError("field 'name' is missing (no 'fullname' either)")
    return test


def _group(entry: dict[str, Any], result: dict[str, Any]) -> str:
    """The entry's benchmark group, else the one its result names, else ``ungrouped``."""
    group = entry.get("group")
    if group is not None and not isinstance(group, str):
        raise ResultSchemaError(f"field 'group': expected a string or null, got {schema.describe(group)}")
    return group or result.get("group") or "ungrouped"


def _record(path: Path, entry: Any) -> dict[str, Any] | None:
    """The run an entry holds, with its group, test name and file; None for an entry that is not convbench's.

    Raises `ResultSchemaError` naming the first field the report could not read."""
    extra_info = _extra_info(entry)
    if "convbench" not in extra_info:
        return None
    result, test = extra_info["convbench"], _test(entry)
    if isinstance(result, dict) and "schema" not in result and "error" in result:
        schema.check_failed(result)
        return {"failed_before_training": True, "test": test, "error": result["error"], "scale": result.get("scale"),
                "outcome": result.get("outcome"), "group": _group(entry, result), "source": str(path)}
    schema.check_run(result)
    return {**result, "group": _group(entry, result), "test": test, "source": str(path)}


#: Frame columns that describe the case (rather than measure it): what tables can be grouped and pivoted by.
CASE_FIELDS = ("group", "model", "dataset", "optimizer", "lr", "batch_size", "scheduler", "seed", "world_size",
               "scale", "machine", "commit",
               "precision", "channels_last", "compile")  # speed options (convbench.speed)


def latest_only(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """One record per (test, scale, machine, commit): the last one read; also how many it superseded.

    The results file keeps every session's runs and the benchmark JSON repeats the latest, so the
    same case often arrives more than once; the later reading of it supersedes the earlier.
    """
    latest: dict[tuple[Any, ...], dict[str, Any]] = {}
    for record in records:
        key = identity.run_key(record)
        latest.pop(key, None)
        latest[key] = record
    return list(latest.values()), len(records) - len(latest)


def whole(value: float | None) -> float | int | None:
    """A number rounded to a whole one for showing (samples per second); None and non-finite ones as they are."""
    return value if value is None or not math.isfinite(value) else round(value)


def busy_label(machine_load: dict[str, Any] | None) -> str | None:
    """``yes`` or ``no``: whether other work kept the machine busy during the run; ``?`` where it could not
    tell; None (shown ``-``) for a run written before machine load was recorded."""
    if machine_load is None:
        return None
    return {True: "yes", False: "no"}.get(machine_load.get("busy"), "?")


def to_frame(records: list[dict[str, Any]], split: str) -> pd.DataFrame:
    """One row per case with the case fields and its numbers on ``split``; curves stay in the records.

    Every column holds plain Python values (object dtype), so that a number a run did not record (None)
    stays apart from a NaN it did record: `convbench.report.formats` shows the one as ``-``, the other as ``nan``.
    ``energy_j`` and ``energy_to_target_j`` are columns only where some run read an energy counter, and
    ``busy`` only where some run recorded the machine's load, and ``parallel`` (``alone``, ``2 workers``)
    with ``parallel_device`` only where some run was measured beside other cases (``pytest -n N``): a table
    of older results stays as narrow as it was, and energy nobody measured is never shown as 0.
    """
    import pandas as pd  # here, so that the command line starts without it

    # results from several machines or commits: the case names say which, as the tables mix them
    mixed = identity.mixes_sources(records)
    with_load = any(r.get("machine_load") is not None for r in records)
    with_energy = any((r.get("energy") or {}).get("source") is not None for r in records)
    with_parallel = parallel.any_parallel(records)  # pytest -n N: runs measured beside other cases
    with_compile = any(r["timing"].get("compile_s") is not None for r in records)  # compiled runs (Case.compile)
    # the train accuracy beside the held-out one (a train/test table), where some run evaluated it
    with_train_accuracy = split != "train" and any(r["final"].get("train_accuracy") is not None for r in records)
    rows = []
    for r in records:
        case, final, best, timing, target = r["case"], r["final"], r["best"], r["timing"], r["target"]
        energy = r.get("energy") or {}
        rows.append({
            "group": r["group"],
            "case": identity.case_name(r, mixed_sources=mixed),
            "machine": r.get("machine"),
            "commit": r.get("commit"),
            "model": case["model"],
            "dataset": case["dataset"],
            "optimizer": case["optimizer"],
            "lr": case["lr"],
            "batch_size": case["batch_size"],
            "scheduler": case["scheduler"],
            "seed": case["seed"],
            "world_size": case["world_size"],
            # speed options; absent in results written before they existed, which ran fp32 uncompiled
            "precision": case.get("precision", "fp32"),
            "channels_last": case.get("channels_last", False),
            "compile": case.get("compile", False),
            "scale": r.get("scale"),
            "outcome": r.get("outcome"),
            "diverged": r["diverged"],
            "stalled": r.get("stalled"),  # None: the result predates the stalled verdict
            f"final_{split}_accuracy": final.get(f"{split}_accuracy"),
            **({"final_train_accuracy": final.get("train_accuracy")} if with_train_accuracy else {}),
            f"best_{split}_accuracy": best.get(f"{split}_accuracy"),
            "final_train_loss": final.get("train_loss"),
            f"final_{split}_loss": final.get(f"{split}_loss"),
            "target": target.get("value"),
            "time_to_target_s": target.get("time_s"),
            "steps_to_target": target.get("step"),
            "steps": r["steps"],
            "train_time_s": timing.get("train_s"),
            "eval_time_s": timing.get("eval_s"),
            **({"compile_time_s": timing.get("compile_s")} if with_compile else {}),
            "samples_per_s": whole(r.get("samples_per_s")),
            **({"energy_j": energy.get("run_j"), "energy_to_target_j": energy.get("to_target_j")}
               if with_energy else {}),
            **({"busy": busy_label(r.get("machine_load"))} if with_load else {}),
            **({parallel.COLUMN: parallel.label(r), "parallel_device": parallel.device(r)} if with_parallel else {}),
            "source": r["source"],
            "_config": identity.config_key(r),  # internal: which runs are seeds of one configuration; never written
        })
    return pd.DataFrame(rows, dtype=object)
