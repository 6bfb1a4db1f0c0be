"""Read convbench results out of pytest-benchmark JSON files and convbench results files (JSONL).

Both hold the same entries (``{"group", "name", "fullname", "extra_info": {"convbench": ...}}``), so
one reader serves both. Every problem with a file becomes one `ReportInputError` line naming it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from convbench.errors import ReportInputError
from convbench.report import identity
from convbench.result import (
    READABLE_SCHEMAS,
    RECORD_SCHEMA,
    THROUGHPUT_SCHEMA,
    ResultSchemaError,
    RunResult,
    ThroughputResult,
)

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
    """Load one file; raise `ReportInputError` if it holds no usable convbench result."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ReportInputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ReportInputError(f"{path}: a folder with no .json or .jsonl files") from None
    except OSError as exc:
        raise ReportInputError(f"{path}: cannot be read ({exc})") from None
    if path.suffix == ".jsonl":
        entries, warnings = _jsonl_entries(path, data)
        loaded = LoadedFile(path, [], warnings=warnings)
    else:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ReportInputError(f"{path}: cannot be read ({exc})") from None
        document = _parse(path, text)
        if not isinstance(document, dict) or not isinstance(document.get("benchmarks"), list):
            raise ReportInputError(f"{path}: not a pytest-benchmark JSON file (no 'benchmarks' list)")
        entries = document["benchmarks"]
        loaded = LoadedFile(path, [], machine_info=document.get("machine_info") or {},
                            commit_info=document.get("commit_info") or {})
    for index, entry in enumerate(entries):
        speed = (entry.get("extra_info") or {}).get("convbench_throughput") if isinstance(entry, dict) else None
        if isinstance(speed, dict):
            _add_throughput(path, loaded, entry, speed)
            continue
        record = _record(path, index, entry)
        if record is None:
            continue
        record["position"] = index
        record.update(_labels(path, loaded, entry))
        if record.get("failed_before_training"):
            loaded.warnings.append(f"{path}: {record['test']} failed before training: {record['error']}")
            loaded.failed.append(record)
        else:
            loaded.records.append(record)
    if not loaded.records and not loaded.throughput:
        raise ReportInputError(
            f"{path}: no convbench results among {len(entries)} entries "
            "(were the cases run with the convergence fixture?)"
        )
    return loaded


def _add_throughput(path: Path, loaded: LoadedFile, entry: dict[str, Any], speed: dict[str, Any]) -> None:
    """A `throughput` case: its measurement, or (results files only) a warning that it failed before one."""
    test = entry.get("fullname") or entry.get("name")
    if "schema" not in speed and speed.get("error"):
        loaded.warnings.append(f"{path}: {test} failed before measuring throughput: {speed['error']}")
    elif speed.get("schema") == THROUGHPUT_SCHEMA:
        loaded.throughput.append({**speed, "group": entry.get("group") or "ungrouped", "test": test,
                                  "source": str(path), **_labels(path, loaded, entry)})


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


def _labels(path: Path, loaded: LoadedFile, entry: dict[str, Any]) -> dict[str, str | None]:
    """Where an entry ran: each line of a results file says so; a benchmark JSON says it once for all."""
    if path.suffix == ".jsonl":
        return source_labels(entry.get("machine"), entry.get("commit"))
    return source_labels(loaded.machine_info, loaded.commit_info)


def _parse(path: Path, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReportInputError(f"{path}: malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None


def _jsonl_entries(path: Path, data: bytes) -> tuple[list[dict[str, Any]], list[str]]:
    """The readable lines of a results file, and one warning naming the lines skipped and why.

    A results file collects many sessions' lines: one killed mid-write, one of another convbench,
    one edited by hand must cost its own line only. Each line is decoded on its own (a line that is
    not UTF-8 is a bad line, not an unreadable file); a file with no readable line at all is an error.
    """
    entries: list[dict[str, Any]] = []
    skipped: dict[str, list[int]] = {}  # why -> line numbers
    lines = data.split(b"\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entries.append(_jsonl_entry(line, cut=number == len(lines)))
        except _BadLine as why:
            skipped.setdefault(str(why), []).append(number)
    if not skipped:
        return entries, []
    count = sum(map(len, skipped.values()))
    summary = f"skipped {count} unreadable line{'s' if count > 1 else ''}: " + "; ".join(
        f"{_line_numbers(numbers)} ({why})" for why, numbers in skipped.items())
    if not entries:
        raise ReportInputError(f"{path}: no readable line; {summary}")
    return entries, [f"{path}: {summary}"]


class _BadLine(Exception):
    """Why one line of a results file cannot be read (its message goes into the loader's warning)."""


def _jsonl_entry(line: bytes, cut: bool) -> dict[str, Any]:
    """One line as a results-file entry whose result reads back (`RunResult.from_dict`, or
    `ThroughputResult.from_dict` for a throughput case), or `_BadLine`.

    ``cut``: the line is the last and has no newline, which every finished write ends with.
    """
    try:
        entry = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        raise _BadLine("not UTF-8") from None
    except json.JSONDecodeError:
        raise _BadLine("malformed JSON" + (": cut short, as a killed session leaves it" if cut else "")) from None
    if not isinstance(entry, dict):
        raise _BadLine(f"{json.dumps(entry)[:20]}, not an object")
    if entry.get("schema") != RECORD_SCHEMA:
        raise _BadLine(f"record schema {entry.get('schema')!r}; this convbench reads {RECORD_SCHEMA!r}")
    extra_info = entry.get("extra_info")
    extra_info = extra_info if isinstance(extra_info, dict) else {}
    kind, read = ("convbench_throughput", ThroughputResult.from_dict) if "convbench_throughput" in extra_info \
        else ("convbench", RunResult.from_dict)
    result = extra_info.get(kind)
    failed_before_measuring = isinstance(result, dict) and "schema" not in result and result.get("error")
    if not failed_before_measuring:  # which has its error instead of a result
        try:
            read(result)
        except ResultSchemaError as exc:
            raise _BadLine(str(exc)) from None
    return entry


def _line_numbers(numbers: list[int], shown: int = 10) -> str:
    """``line 7`` or ``lines 2, 7, 9`` (the first ``shown`` of them, then how many more)."""
    listed = ", ".join(map(str, numbers[:shown])) + (f" and {len(numbers) - shown} more" if len(numbers) > shown
                                                     else "")
    return f"line{'s' if len(numbers) > 1 else ''} {listed}"


def _record(path: Path, index: int, entry: Any) -> dict[str, Any] | None:
    if not isinstance(entry, dict):
        raise ReportInputError(f"{path}: entry {index} is {type(entry).__name__}, not an object")
    result = (entry.get("extra_info") or {}).get("convbench")
    if result is None:
        return None
    if isinstance(result, dict) and "schema" not in result and result.get("error"):
        return {"failed_before_training": True, "test": entry.get("fullname") or entry.get("name"),
                "error": result["error"], "scale": result.get("scale"), "outcome": result.get("outcome"),
                "group": entry.get("group") or result.get("group") or "ungrouped", "source": str(path)}
    if not isinstance(result, dict) or result.get("schema") not in READABLE_SCHEMAS:
        schema = result.get("schema") if isinstance(result, dict) else None
        raise ReportInputError(f"{path}: entry {index} has result schema {schema!r}; this convbench reads "
                               f"{', '.join(READABLE_SCHEMAS)}")
    missing = [key for key in ("case", "final", "best", "timing", "curves", "target") if key not in result]
    if missing:
        raise ReportInputError(f"{path}: entry {index} lacks {', '.join(missing)}")
    return {**result, "group": entry.get("group") or result.get("group") or "ungrouped",
            "test": entry.get("fullname") or entry.get("name"), "source": str(path)}


#: Frame columns that describe the case (rather than measure it): what tables can be grouped and pivoted by.
CASE_FIELDS = ("group", "model", "dataset", "optimizer", "lr", "batch_size", "scheduler", "seed", "world_size",
               "scale", "machine", "commit")


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


def to_frame(records: list[dict[str, Any]], split: str) -> pd.DataFrame:
    """One row per case with the case fields and its numbers on ``split``; curves stay in the records."""
    import pandas as pd  # here, so that the command line starts without it

    # results from several machines or commits: the case names say which, as the tables mix them
    mixed = identity.mixes_sources(records)
    rows = []
    for r in records:
        case, final, best, timing, target = r["case"], r["final"], r["best"], r["timing"], r["target"]
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
            "scale": r.get("scale"),
            "outcome": r.get("outcome"),
            "diverged": r["diverged"],
            f"final_{split}_accuracy": final.get(f"{split}_accuracy"),
            f"best_{split}_accuracy": best.get(f"{split}_accuracy"),
            "final_train_loss": final.get("train_loss"),
            f"final_{split}_loss": final.get(f"{split}_loss"),
            "target": target.get("value"),
            "time_to_target_s": target.get("time_s"),
            "steps_to_target": target.get("step"),
            "steps": r["steps"],
            "train_time_s": timing.get("train_s"),
            "eval_time_s": timing.get("eval_s"),
            "samples_per_s": None if r.get("samples_per_s") is None else round(r["samples_per_s"]),
            "source": r["source"],
            "_config": identity.config_key(r),  # internal: which runs are seeds of one configuration; never written
        })
    return pd.DataFrame(rows)
