"""The report's search section: per study found in the inputs, its best trial (the winning ``Case(...)``,
ready to paste into a suite) and Optuna's own figures (optimisation history, parameter importance, parallel
coordinates; its matplotlib backend).

The study is rebuilt from the trials' results-file lines (``extra_info["convbench_search"]``: parameters,
distributions, value), not read from the study's storage: a report is made from the files the workers
wrote, on any machine, merged from many, with no database to reach. Trials that were pruned or failed wrote
no line (nothing was measured to the end), so the figures show the finished trials.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convbench.report.formats import heading
from convbench.report.names import Names
from convbench.search.record import SEARCH_KEY, SEARCH_SCHEMA

#: Optuna's matplotlib plots drawn for each study: file suffix -> (function name, what it needs).
PLOTS = {"history": "plot_optimization_history", "importance": "plot_param_importances",
         "parallel": "plot_parallel_coordinate"}


@dataclass
class Study:
    """One study's finished trials as the results files hold them, the last reading of each trial kept."""

    name: str
    direction: str
    objective: str
    trials: dict[int, dict[str, Any]] = field(default_factory=dict)

    def best(self) -> dict[str, Any] | None:
        measured = [t for t in self.trials.values() if t["value"] is not None]
        if not measured:
            return None
        better = max if self.direction == "maximize" else min
        return better(measured, key=lambda t: (t["value"], -t["trial"]) if self.direction == "maximize"
                      else (t["value"], t["trial"]))


def read_studies(paths: list[Path]) -> dict[str, Study]:
    """The studies whose trials the inputs hold (results files; benchmark JSON files hold no trials)."""
    studies: dict[str, Study] = {}
    for path in paths:
        if path.suffix != ".jsonl":
            continue
        try:
            lines = path.read_bytes().split(b"\n")
        except OSError:
            continue  # the report's loader says why, once
        for line in lines:
            search = _search_facts(line)
            if search is None:
                continue
            study = studies.setdefault(search["study"], Study(search["study"], search["direction"],
                                                              search["objective"]))
            study.trials.pop(search["trial"], None)
            study.trials[search["trial"]] = search
    return studies


def _search_facts(line: bytes) -> dict[str, Any] | None:
    """A line's search facts, or None: not a trial's line, or not readable (the loader reports bad lines)."""
    if SEARCH_KEY.encode() not in line:
        return None
    try:
        entry = json.loads(line)
        search = entry["extra_info"][SEARCH_KEY]
    except (ValueError, KeyError, TypeError):
        return None
    wanted = {"study": str, "trial": int, "direction": str, "objective": str, "params": dict,
              "distributions": dict, "case_source": str}
    if not isinstance(search, dict) or search.get("schema") != SEARCH_SCHEMA or any(
            not isinstance(search.get(key), kind) for key, kind in wanted.items()):
        return None
    value = search.get("value")
    search["value"] = value if isinstance(value, (int, float)) and math.isfinite(value) else None
    return search


def best_trial_text(study: Study) -> str:
    """The study's section of the report: how many trials, the best one's value and its Case to paste."""
    title = heading(2, f"search {study.name}: best trial")
    best = study.best()
    count = f"{len(study.trials)} finished trial{'s' * (len(study.trials) != 1)}"
    if best is None:
        return f"{title}\n\n{count}; none measured its objective ({study.objective})."
    params = ", ".join(f"{name}={value!r}" for name, value in best["params"].items())
    return (f"{title}\n\n{count}; best: trial {best['trial']}, {study.objective} {best['value']:.6g} "
            f"({study.direction}), with {params}\n\n```python\n{best['case_source']}\n```")


def optuna_study(study: Study) -> Any:
    """An in-memory Optuna study holding the trials, for Optuna's plots."""
    import optuna
    from optuna.distributions import json_to_distribution

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rebuilt = optuna.create_study(direction=study.direction, study_name=study.name)
    worst = -math.inf if study.direction == "maximize" else math.inf
    for number in sorted(study.trials):
        trial = study.trials[number]
        distributions = {name: json_to_distribution(text) for name, text in trial["distributions"].items()}
        rebuilt.add_trial(optuna.trial.create_trial(
            params=trial["params"], distributions=distributions,
            value=worst if trial["value"] is None else trial["value"]))
    return rebuilt


def write_search(paths: list[Path], out_dir: Path, names: Names, figures: bool = True,
                 notes: list[str] | None = None, formats: tuple[str, ...] = ("png",)) -> tuple[str, list[Path]]:
    """The search section (text) and the figures written, for every study in the inputs; a plot Optuna
    cannot draw for a study (one trial has no importance) is a note, and the others are still drawn."""
    studies = read_studies(paths)
    sections, written = [], []
    for study in studies.values():
        sections.append(best_trial_text(study))
        if figures:
            written += _draw(study, out_dir, names, notes if notes is not None else [], formats)
    return "\n\n".join(sections), written


def _draw(study: Study, out_dir: Path, names: Names, notes: list[str], formats: tuple[str, ...]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as plots
    from optuna.exceptions import ExperimentalWarning

    from convbench.report.figures.style import save

    rebuilt = optuna_study(study)
    out = out_dir / "figures"
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for suffix, function in PLOTS.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)  # Optuna's matplotlib backend is marked so
            try:
                axes = getattr(plots, function)(rebuilt)
            except (ValueError, RuntimeError) as exc:
                notes.append(f"search {study.name}: no {suffix} figure ({exc})")
                plt.close("all")
                continue
        figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
        figure.set_size_inches(7, 4.5)
        figure.tight_layout()
        written += save(figure, out / names.file("figures", f"search-{study.name}", suffix), formats)
    return written
