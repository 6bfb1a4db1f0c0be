"""Generalisation gap: final train accuracy against held-out accuracy per configuration, and their difference.

Augmentation and regularisation studies (with and without an augmentation, dropout on and off) change
held-out accuracy less than they change the gap between it and the training accuracy; this figure puts
both numbers, and the gap, side by side per configuration. The train accuracy is the one the runs evaluate
on their fixed subset of the training split; the held-out split is the headline's (test, else val).
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure

from convbench.report.figures import FigureKind, FigureOptions
from convbench.report.figures.style import number, plt, row_label
from convbench.report.identity import Record, metric_split, seed_sets

HELD_OUT = ("test", "val")


def held_out_split(records: list[Record]) -> str | None:
    """The split the headline is read on when it is held out (test or val); None when it is the training split."""
    split = metric_split(records)
    return split if split in HELD_OUT else None


def gap_rows(records: list[Record]) -> list[tuple[list[Record], np.ndarray, np.ndarray]]:
    """(runs, train accuracy per seed, held-out accuracy per seed) per configuration whose seeds recorded both
    (seeds that did not are left out of it)."""
    split = held_out_split(records)
    if split is None:
        return []
    rows = []
    for runs in seed_sets(records):
        pairs = [(number(r["final"].get("train_accuracy")), number(r["final"].get(f"{split}_accuracy"))) for r in runs]
        kept = [(t, h) for t, h in pairs if math.isfinite(t) and math.isfinite(h)]
        if kept:
            train, held = np.array(kept, dtype=float).T
            rows.append((runs, train, held))
    return rows


def gap_figure(group: str, records: list[Record]) -> Figure:
    """Left: mean final train and held-out accuracy per configuration; right: the gap (train minus held-out),
    mean over the seeds with a min-max bar, written at the bar's end."""
    split = held_out_split(records)
    rows = gap_rows(records)
    positions = np.arange(len(rows))[::-1]
    fig, (acc_ax, gap_ax) = plt.subplots(1, 2, figsize=(12, 1.8 + 0.55 * len(rows)), layout="constrained",
                                         sharey=True, width_ratios=(3, 2))
    train = np.array([t.mean() for _, t, _ in rows])
    held = np.array([h.mean() for _, _, h in rows])
    acc_ax.barh(positions + 0.2, train, height=0.4, color="tab:orange", label="train (mean over seeds)")
    acc_ax.barh(positions - 0.2, held, height=0.4, color="tab:blue", label=f"{split} (mean over seeds)")
    acc_ax.set_yticks(positions, [row_label(runs) for runs, _, _ in rows])
    acc_ax.set_xlim(0, 1)
    acc_ax.set_xlabel("final accuracy (fraction correct)")
    acc_ax.set_title("train and held-out accuracy")
    acc_ax.grid(True, axis="x", alpha=0.3)
    fig.legend(fontsize="small", loc="outside lower center", ncols=2)
    gaps = [t - h for _, t, h in rows]
    mean_gaps = np.array([g.mean() for g in gaps])
    errors = np.array([[m - g.min() for m, g in zip(mean_gaps, gaps, strict=True)],
                       [g.max() - m for m, g in zip(mean_gaps, gaps, strict=True)]])
    seeded = any(len(g) > 1 for g in gaps)
    gap_ax.barh(positions, mean_gaps, height=0.5, color=np.where(mean_gaps >= 0, "tab:red", "tab:green"),
                xerr=errors if seeded else None, capsize=3)
    for y, value, seeds in zip(positions, mean_gaps, gaps, strict=True):  # written beyond the bar's min-max
        end = max(value, seeds.max()) if value >= 0 else min(value, seeds.min())
        gap_ax.annotate(f"{value:+.3f}", (end, y), xytext=(5 if value >= 0 else -5, 0), textcoords="offset points",
                        ha="left" if value >= 0 else "right", va="center", fontsize="small")
    gap_ax.axvline(0, color="black", linewidth=0.8)
    low, high = gap_ax.get_xlim()
    gap_ax.set_xlim(min(low, 0) - 0.3 * (high - low), max(high, 0) + 0.3 * (high - low))
    gap_ax.set_xlabel("accuracy difference" + (" (line: min to max over seeds)" if seeded else ""))
    gap_ax.set_title(f"gap: train minus {split}")
    gap_ax.grid(True, axis="x", alpha=0.3)
    fig.suptitle(f"{group}: train against {split} accuracy")
    return fig


class GapFigure(FigureKind):
    """Final train against held-out accuracy per configuration, and the gap between them; for groups with 2
    or more configurations that evaluated both (such as with and without an augmentation)."""

    default = True
    needs = "2 or more configurations whose runs evaluated both train and held-out (test or val) accuracy"

    def applies(self, records: list[Record], options: FigureOptions) -> bool:
        return len(gap_rows(records)) >= 2

    def draw(self, group: str | None, records: list[Record], options: FigureOptions) -> Figure:
        return gap_figure(str(group), records)
