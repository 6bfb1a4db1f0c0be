"""Device utilisation over each run, from the telemetry timelines: shows idle devices and start-up stalls."""

from __future__ import annotations

from matplotlib.figure import Figure

from convbench.report.figures import FigureKind, FigureOptions
from convbench.report.figures.style import finish, plt
from convbench.report.identity import Record


def utilisation_series(record: Record) -> dict[str, tuple[list[float], list[float]]]:
    """Per device, (seconds since the run started, utilisation %): GPU utilisation from NVML (``gpuN``)
    or the machine's CPU percent from psutil (``cpu``), from the telemetry timeline of every rank that
    sampled. Devices of a run over several machines are named ``host/gpuN``."""
    telemetry = record.get("telemetry") or {}
    timelines = [t for t in telemetry.get("ranks") or [telemetry] if t]
    several_hosts = len({t.get("host") for t in timelines}) > 1
    series = {}
    for sampled in timelines:
        timeline = sampled.get("timeline") or {}
        times = timeline.get("t_s") or []
        for key, values in timeline.items():
            gpu = key.startswith("gpu") and key.endswith("_utilization") and "memory" not in key
            if gpu or key == "cpu_percent":
                points = [(t, v) for t, v in zip(times, values, strict=False) if v is not None]
                if points:
                    name = key.removesuffix("_utilization").replace("_percent", "")
                    name = f"{sampled.get('host')}/{name}" if several_hosts else name
                    series[name] = ([t for t, _ in points], [v for _, v in points])
    return series


def utilisation_figure(group: str, records: list[Record]) -> Figure:
    """Utilisation of every sampled device over each run."""
    fig, ax = plt.subplots(figsize=(8, 5), layout="constrained")
    for record in records:
        for device, (times, values) in utilisation_series(record).items():
            ax.plot(times, values, label=f"{record['case_id']}: {device}")
    ax.set_xlabel("time since the run started (s)")
    ax.set_ylabel("utilisation (%)")
    finish(ax, f"{group}: device utilisation")
    return fig


class UtilisationFigure(FigureKind):
    """Each sampled device's utilisation over each run (GPU from NVML, else CPU percent).

    Not drawn by default: every run longer than the sampling interval has a timeline, so it would be drawn
    for almost every group, and it tells about the machine, not about the study (the scaling table and
    figure already give each run's mean utilisation). Ask for it with ``--figures utilisation``.
    """

    needs = "sampled telemetry: a device timeline with 2 or more samples"

    def applies(self, records: list[Record], options: FigureOptions) -> bool:
        return any(len(times) >= 2 for r in records for times, _ in utilisation_series(r).values())

    def draw(self, group: str | None, records: list[Record], options: FigureOptions) -> Figure:
        return utilisation_figure(str(group), records)
