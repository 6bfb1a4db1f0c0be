"""Interactive training curves for ``index.html``: hover a curve to read its case, step and value, click a
legend entry to hide or show a case (in both panels at once), drag to zoom, double-click to reset.

A PNG cannot be asked "which line is that?" when twelve cases overlap; people used to TensorBoard or W&B
expect to ask it. Plotly draws the curves from the same numbers as the ``loss`` and ``accuracy`` figures
(`convbench.report.figures.curves`: mean over seeds, loss optionally smoothed, a cross where a run
diverged or stalled). Its JavaScript is written once beside ``index.html`` (``plotly.min.js``) and
loaded by a relative path, so the page works from disk, offline, with no server.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from convbench.report.figures.curves import accuracy_targets, curve_series, moving_mean
from convbench.report.figures.style import failed, set_label
from convbench.report.identity import Record, metric_split, seed_sets

#: The file holding plotly's JavaScript, beside index.html.
PLOTLY_JS = "plotly.min.js"
#: The figure kinds the interactive curves draw again: index.html links to them instead of showing both.
INTERACTIVE_KINDS = ("loss", "accuracy")


def _finite(values: np.ndarray) -> list[float | None]:
    """Values as JSON-safe numbers: NaN and infinities (a diverged run) become gaps, not invalid JSON."""
    return [float(v) if math.isfinite(v) else None for v in values]


def has_curves(records: list[Record]) -> bool:
    """Whether some run logged a train-loss curve to draw."""
    return any((r.get("curves") or {}).get("train", {}).get("loss") for r in records)


def curves_div(records: list[Record], *, smooth: int = 1, div_id: str = "curves") -> str:
    """An HTML ``<div>`` with the group's train loss (log scale) and held-out accuracy against step, one
    legend entry per configuration; needs `PLOTLY_JS` loaded first."""
    from plotly.subplots import make_subplots

    split = metric_split(records)
    accuracy = any(r["final"].get(f"{split}_accuracy") is not None for r in records)
    columns = 2 if accuracy else 1
    titles = ["train loss" + (f" (moving mean of {smooth} points)" if smooth > 1 else "")]
    titles += [f"{split} accuracy"] if accuracy else []
    figure = make_subplots(rows=1, cols=columns, subplot_titles=titles, horizontal_spacing=0.08)
    palette = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
               "#bcbd22", "#17becf")
    for index, runs in enumerate(seed_sets(records)):
        name, colour = set_label(runs), palette[index % len(palette)]
        panels = [("loss", 1)] + ([("accuracy", 2)] if accuracy else [])
        for metric, column in panels:
            xs, values = curve_series(runs, metric, split, "step")
            if metric == "loss":
                values = moving_mean(values, smooth)
            if values.size == 0:
                continue
            mean = values.mean(axis=0)
            figure.add_scatter(
                x=_finite(xs), y=_finite(mean), name=name, legendgroup=name, showlegend=column == 1,
                mode="lines" if metric == "loss" else "lines+markers", line={"color": colour},
                hovertemplate=f"%{{fullData.name}}<br>step %{{x}}<br>{metric} %{{y:.4g}}<extra></extra>",
                row=1, col=column)
            finite = np.flatnonzero(np.isfinite(mean))
            if any(failed(r) for r in runs) and finite.size:  # where the run diverged or stalled
                last = int(finite[-1])
                figure.add_scatter(x=[float(xs[last])], y=[float(mean[last])], name=name, legendgroup=name,
                                   showlegend=False, mode="markers", hoverinfo="skip",
                                   marker={"symbol": "x", "size": 12, "color": colour}, row=1, col=column)
    figure.update_yaxes(type="log", title_text="train loss (log scale)", row=1, col=1)
    figure.update_xaxes(title_text="step")
    if accuracy:
        figure.update_yaxes(range=[0, 1], title_text=f"{split} accuracy (fraction correct)", row=1, col=2)
        for value, target_split in accuracy_targets(records):
            figure.add_hline(y=value, line_dash="dash", line_color="#666", line_width=1, row=1, col=2,
                             annotation_text=f"target: {target_split or ''} accuracy {value:g}",
                             annotation_position="bottom right")
    figure.update_layout(height=460, margin={"t": 40, "b": 40, "l": 60, "r": 20}, hovermode="closest",
                         legend={"orientation": "h", "yanchor": "top", "y": -0.15})
    return figure.to_html(full_html=False, include_plotlyjs=False, div_id=div_id,
                          config={"displaylogo": False, "responsive": True})


def write_plotly_js(out_dir: Path) -> Path:
    """Write plotly's JavaScript beside index.html (about 4.6 MB), once per report."""
    from plotly.offline import get_plotlyjs

    path = Path(out_dir) / PLOTLY_JS
    path.write_text(get_plotlyjs(), encoding="utf-8")
    return path
