"""Which runs are "the same", and which number ranks them: asked of this module by every part of the report.

Tables, figures, the scaling section and `convbench compare` all put runs together (the seeds of a
configuration, the world sizes of a scaling family, the re-readings of one run) and all rank them by a
headline metric. Each used to work this out for itself, and the copies drifted: scaling families forgot
the machine and the commit, so runs from two machines merged into one speedup line. Here is the one
answer to each question.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

Record = dict[str, Any]

#: Case fields that never make two runs different configurations: the seed, and the id that names it.
SEED_FIELDS = ("seed", "label")
#: Case fields a scaling family spans (besides the id): the world size, and the per-scale overrides, which
#: the case fields already hold resolved.
WORLD_SIZE_FIELDS = ("world_size", "label", "scales")
#: Where the headline metric is read, most telling first: held-out test, else validation, else training.
SPLITS = ("test", "val", "train")

_SEED_TOKEN = re.compile(r"(?:^|-)seed\d+(?=-|$)")


# ------------------------------------------------------------------------------------ names
def seedless_id(case_id: str) -> str:
    """A case id without its ``seedN`` token: ``softmax-sgd-lr0.1-bs100-seed2`` -> ``softmax-sgd-lr0.1-bs100``."""
    stripped = _SEED_TOKEN.sub("", case_id).strip("-")
    return stripped or case_id


def seedless_test_name(test: str) -> str:
    """A test name with the seed token removed from its parameter id, so the seeds of a case share one name."""
    match = re.fullmatch(r"(.*)\[(.*)\]", test)
    if not match:
        return test
    return f"{match.group(1)}[{seedless_id(match.group(2))}]"


def configuration_name(runs: Sequence[Record]) -> str:
    """The name of the seeds of one configuration: the case id, without its seed token when there are several."""
    return runs[0]["case_id"] if len(runs) == 1 else seedless_id(runs[0]["case_id"])


def source(record: Record) -> str:
    """Where a run ran, ``host@commit`` (either part may be missing; empty when both are)."""
    return "@".join(str(part) for part in (record.get("machine"), record.get("commit")) if part)


def mixes_sources(records: Iterable[Record]) -> bool:
    """Whether the runs come from more than one machine or commit, so that names must say which."""
    return len({(r.get("machine"), r.get("commit")) for r in records}) > 1


def case_name(record: Record, *, mixed_sources: bool) -> str:
    """The run's case id, followed by ``[host@commit]`` when the report mixes machines or commits."""
    return f"{record['case_id']} [{source(record) or 'unlabelled'}]" if mixed_sources else record["case_id"]


# ----------------------------------------------------------------------------------- keys
def configuration(record: Record, ignoring: Sequence[str] = SEED_FIELDS) -> dict[str, Any]:
    """The case fields that define the run, without ``ignoring`` (by default the seed)."""
    return {k: v for k, v in record["case"].items() if k not in ignoring}


def _key(record: Record, ignoring: Sequence[str]) -> str:
    # the machine and the commit belong to every key: runs measured elsewhere are never pooled
    return json.dumps([record["group"], record.get("scale"), record.get("machine"), record.get("commit"),
                       configuration(record, ignoring)], sort_keys=True, default=str)


def config_key(record: Record) -> str:
    """Runs with equal keys are seeds of one configuration: same group, scale, machine, commit and case
    fields but the seed."""
    return _key(record, SEED_FIELDS)


def scaling_family(record: Record) -> str:
    """Runs with equal keys are one case on different world sizes (same machine and commit)."""
    return _key(record, WORLD_SIZE_FIELDS)


def run_key(record: Record) -> tuple[Any, ...]:
    """Readings with equal keys are of one run (a results file and a benchmark JSON both hold it)."""
    return record["test"], record.get("scale"), record.get("machine"), record.get("commit")


def seed_sets(records: Iterable[Record]) -> list[list[Record]]:
    """Records split into configurations (runs that differ only in their seed), in first-seen order."""
    sets: dict[str, list[Record]] = {}
    for record in records:
        sets.setdefault(config_key(record), []).append(record)
    return list(sets.values())


# ------------------------------------------------------------------------------- headline
def metric_split(records: Iterable[Record]) -> str:
    """The split the headline metric is read on: test, else val, else train (the first any run has)."""
    records = list(records)
    for split in SPLITS:
        if any(r["final"].get(f"{split}_loss") is not None or r["final"].get(f"{split}_accuracy") is not None
               for r in records):
            return split
    return "train"


@dataclass(frozen=True)
class Headline:
    """The number runs are ranked and compared by: the final accuracy on ``split``, else its final loss."""

    split: str
    accuracy: bool

    @property
    def column(self) -> str:
        """Its name as a table column and in ``final``: ``final_test_accuracy``."""
        return f"final_{self.split}_{'accuracy' if self.accuracy else 'loss'}"

    @property
    def label(self) -> str:
        """Its name for people: ``final test accuracy``."""
        return self.column.replace("_", " ")

    @property
    def higher_is_better(self) -> bool:
        return self.accuracy

    def value(self, record: Record) -> float | None:
        """The run's headline number; None when the run did not record it."""
        value = record["final"].get(self.column.removeprefix("final_"))
        return None if value is None else float(value)


def headline(records: Iterable[Record], split: str | None = None) -> Headline:
    """The headline metric of a set of runs: on ``split`` (default `metric_split`), the final accuracy
    where any run has one, else the final loss; one metric for all, so that they can be compared."""
    records = list(records)
    split = metric_split(records) if split is None else split
    return Headline(split, any(r["final"].get(f"{split}_accuracy") is not None for r in records))
