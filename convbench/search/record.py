"""A finished trial as a line of the results file, beside the suites' cases: the run's result under
``extra_info["convbench"]`` (so every table, figure and `compare` reads it as any case), and the search's
own facts under ``extra_info["convbench_search"]``: the study, the trial's number, its drawn parameters with
their distributions (so `convbench report` can rebuild the study's figures from the results files alone,
merged from many machines), its objective value, and the trial's case as source code to paste into a suite.
"""

from __future__ import annotations

import datetime
import math
import platform
from typing import Any

from convbench import __version__
from convbench.case import _DEFAULTS, Case, _plain
from convbench.result import RECORD_SCHEMA, RunResult

#: ``extra_info`` key of a trial's search facts.
SEARCH_KEY = "convbench_search"
SEARCH_SCHEMA = "convbench.search/1"


def case_source(case: Case) -> str:
    """``Case(model='tf_cnn', ..., lr=0.0123)``: the fields that differ from the defaults (and the ones every
    case needs), ready to paste into a suite."""
    data = case.to_dict()
    required = ("model", "optimizer", "lr")
    shown = [name for name in data if name in required or _plain_default(name) != data[name]]
    return "Case(" + ", ".join(f"{name}={_literal(data[name])}" for name in shown) + ")"


def _plain_default(name: str) -> Any:
    return _plain(_DEFAULTS.get(name))


def _literal(value: Any) -> str:
    """A Python literal of a JSON value, with lists as tuples (the form `Case` fields take)."""
    if isinstance(value, list):
        inner = ", ".join(map(_literal, value))
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k!r}: {_literal(v)}" for k, v in value.items()) + "}"
    return repr(value)


def trial_line(*, study: str, number: int, result: RunResult, case: Case, declared: Case, scale: str, value: float,
               params: dict[str, Any], distributions: dict[str, str], objective: str, direction: str,
               session: str, commit: dict[str, Any], retry_of: int | None) -> dict[str, Any]:
    """The results-file line of a finished trial (the same record a suite's case writes): ``case`` is what
    trained (at ``scale``), ``declared`` the case as a suite would declare it (printed as the best trial's)."""
    group = f"search-{study}"
    test = f"search:{study}::trial{number}"
    fields = {"case_id": case.id, "scale": scale, "outcome": "passed", "error": None, "group": group,
              **result.to_dict()}
    search = {"schema": SEARCH_SCHEMA, "study": study, "trial": number,
              "value": value if math.isfinite(value) else None,  # JSON has no infinity: the worst value
              "objective": objective, "direction": direction, "params": params, "distributions": distributions,
              "retry_of": retry_of,
              "case_source": case_source(declared)}
    return {
        "schema": RECORD_SCHEMA,
        "machine": {"node": platform.node()},
        "commit": commit,
        "convbench_version": __version__,
        "session": session,
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "fullname": test,
        "name": f"trial{number}[{case.id}]",
        "group": group,
        "extra_info": {"convbench": fields, SEARCH_KEY: search},
    }


def commit_info() -> dict[str, Any]:
    """The working folder's commit, as pytest-benchmark reads it for a suite's lines."""
    from pytest_benchmark.utils import get_commit_info

    info = get_commit_info()
    return {"id": info.get("id"), "dirty": info.get("dirty")}
