"""Time to target: per configuration within a group, and across groups as an AlgoPerf-style performance profile."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from convbench.report.figures import FigureKind, FigureOptions
from convbench.report.figures.style import finish, plt
from convbench.report.identity import Record, configuration_name, seed_sets


def _has_target(record: Record) -> bool:
    return record["target"].get("value") is not None


def _reached(record: Record) -> bool:
    """Reached, at a time that can be drawn: a NaN or infinite time counts as not reached."""
    time = record["target"].get("time_s")
    return bool(record["target"].get("reached")) and time is not None and math.isfinite(time)


def target_times(records: list[Record]) -> list[tuple[str, float | None, int, int]]:
    """Per configuration with a target: (label, mean time to target in s or None, seeds reached, seeds)."""
    rows = []
    for runs in seed_sets(r for r in records if _has_target(r)):
        times = [r["target"]["time_s"] for r in runs if _reached(r)]
        name = configuration_name(runs)
        mean = float(np.mean(times)) if len(times) == len(runs) else None
        rows.append((name, mean, len(times), len(runs)))
    return rows


def target_figure(group: str, records: list[Record]) -> Figure:
    """Horizontal bars of time to target; configurations that missed it (any seed) as hatched grey bars."""
    rows = target_times(records)
    targets = {(r["target"].get("metric"), r["target"].get("split"), r["target"].get("value")) for r in records
               if _has_target(r)}
    fig, ax = plt.subplots(figsize=(8, 2.0 + 0.45 * len(rows)), layout="constrained")
    reached = [t for _, t, _, _ in rows if t is not None]
    full = max(reached) * 1.15 if reached else 1.0
    positions = np.arange(len(rows))[::-1]
    for y, (_name, mean, hits, total) in zip(positions, rows, strict=True):
        if mean is not None:
            ax.barh(y, mean, color="tab:blue", label="reached (mean over seeds)")
            ax.text(mean, y, f" {mean:.3g} s", va="center", fontsize="small")
        else:
            ax.barh(y, full, color="lightgrey", hatch="//", edgecolor="grey", label="not reached")
            ax.text(full, y, f" not reached ({hits}/{total} seeds)" if total > 1 else " not reached",
                    va="center", fontsize="small")
    ax.set_yticks(positions, [name for name, *_ in rows])
    ax.set_xlabel("training time to target (s, evaluation excluded)")
    ax.set_xlim(0, full * 1.35)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    fig.legend(unique.values(), unique.keys(), fontsize="small", loc="outside lower center", ncols=2)
    what = "; ".join(f"{split} {metric} {'>=' if metric == 'accuracy' else '<='} {value:g}"
                     for metric, split, value in sorted(targets, key=str))
    ax.set_title(f"{group}: time to target ({what})")
    ax.grid(True, axis="x", alpha=0.3)
    return fig


def performance_ratios(records: list[Record]) -> tuple[list[str], dict[str, list[float]]]:
    """AlgoPerf-style: (problems, optimizer -> time-to-target ratio to the fastest optimizer per problem).

    A problem is a group whose cases have a target. An optimizer's time on a problem is that of its
    fastest configuration there (mean over the seeds, all of which must reach the target); an optimizer
    that never reached the target on a problem, or was not run on it, has ratio infinity.
    """
    groups: dict[str, list[Record]] = {}
    for record in records:
        if _has_target(record):
            groups.setdefault(record["group"], []).append(record)
    optimizers = list(dict.fromkeys(str(r["case"]["optimizer"]) for rs in groups.values() for r in rs))
    problems, ratios = [], {name: [] for name in optimizers}
    for group, members in groups.items():
        best: dict[str, float] = {}
        for runs in seed_sets(members):
            if all(_reached(r) for r in runs):
                name = str(runs[0]["case"]["optimizer"])
                time = float(np.mean([r["target"]["time_s"] for r in runs]))
                best[name] = min(best.get(name, math.inf), time)
        fastest = min(best.values(), default=math.inf)
        if not math.isfinite(fastest) or fastest <= 0:
            continue
        problems.append(group)
        for name in optimizers:
            ratios[name].append(best.get(name, math.inf) / fastest)
    return problems, ratios


def profile_curve(ratios: Sequence[float], taus: Sequence[float]) -> np.ndarray:
    """The fraction of problems solved within tau times the fastest, at each tau."""
    values = np.asarray(ratios, dtype=float)
    return np.array([np.mean(values <= tau) if values.size else 0.0 for tau in taus])


def profile_figure(records: list[Record]) -> Figure:
    """Each optimizer's fraction of problems solved within tau times the fastest optimizer's time."""
    problems, ratios = performance_ratios(records)
    finite = [r for rs in ratios.values() for r in rs if math.isfinite(r)]
    tau_max = max(2.0, max(finite, default=1.0) * 1.5)
    taus = np.unique(np.concatenate([[1.0, tau_max], finite]))
    fig, ax = plt.subplots(figsize=(8, 5), layout="constrained")
    for name, values in ratios.items():
        ax.plot(taus, profile_curve(values, taus), drawstyle="steps-post", marker="o", markersize=3, label=name)
    ax.set_xscale("log")
    ax.set_xlim(1, tau_max)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("tau: time to target relative to the fastest optimizer on the problem (log scale)")
    ax.set_ylabel(f"fraction of the {len(problems)} problems solved within tau")
    finish(ax, "performance profile (problems: " + ", ".join(problems) + ")")
    return fig


class TargetFigure(FigureKind):
    """Time to target per case; cases where some seed missed it as hatched 'not reached' bars."""

    default = True
    needs = "a case with a target (target_accuracy or target_loss)"

    def applies(self, records: list[Record], options: FigureOptions) -> bool:
        return any(_has_target(r) for r in records)

    def draw(self, group: str | None, records: list[Record], options: FigureOptions) -> Figure:
        return target_figure(str(group), records)


class ProfileFigure(FigureKind):
    """Performance profile across the groups with a target (AlgoPerf-style)."""

    across_groups = True
    default = True
    file_stem = "performance-profile"
    needs = ("2 or more groups with a target that some optimizer reached, one of them run with 2 or more "
             "optimizers (a profile compares optimizers over problems)")

    def applies(self, records: list[Record], options: FigureOptions) -> bool:
        problems, _ = performance_ratios(records)
        optimizers: dict[str, set[str]] = {}
        for record in records:
            if record["group"] in problems and _has_target(record):
                optimizers.setdefault(record["group"], set()).add(str(record["case"]["optimizer"]))
        return len(problems) >= 2 and any(len(names) >= 2 for names in optimizers.values())

    def draw(self, group: str | None, records: list[Record], options: FigureOptions) -> Figure:
        return profile_figure(records)
