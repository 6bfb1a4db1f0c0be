"""The checked-in sessions (``tests/data``) as if the machine that made them had been quiet.

``tests/data/make_fixtures.py`` records the machine's load as it was, and on a shared machine it is
often busy: then the time rule of `convbench compare` does not judge the runs, and legends say
``(busy machine)``. Tests about other things (the time rule on a quiet machine, how curves are drawn)
read these copies instead of depending on the load of the day the fixtures were made; the busy rules
have tests of their own, which mark runs busy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULT_KEYS = ("convbench", "convbench_throughput")


def quiet(result: dict[str, Any]) -> None:
    """Mark one result's machine as not busy (where it recorded its load at all)."""
    if result.get("machine_load") is not None:
        result["machine_load"]["busy"] = False


def quiet_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """A benchmark-JSON entry or results-file line, its results marked quiet (in place; returned)."""
    for key in RESULT_KEYS:
        if key in entry.get("extra_info", {}):
            quiet(entry["extra_info"][key])
    return entry


def quiet_copy(source: Path, folder: Path) -> Path:
    """``folder/<source's name>``: a benchmark JSON or a results file with every run marked quiet."""
    text = source.read_text(encoding="utf-8")
    if source.suffix == ".jsonl":
        lines = [quiet_entry(json.loads(line)) for line in text.splitlines() if line.strip()]
        copied = "".join(json.dumps(line) + "\n" for line in lines)
    else:
        document = json.loads(text)
        for entry in document["benchmarks"]:
            quiet_entry(entry)
        copied = json.dumps(document)
    path = Path(folder) / source.name
    path.write_text(copied, encoding="utf-8")
    return path
