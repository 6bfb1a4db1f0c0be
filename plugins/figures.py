"""Built-in report figures.

Registered by module path (`convbench.report.figures.lazy`): every training process loads the plugins,
and this keeps matplotlib out of them; `convbench report` imports a figure's module when it draws it.
The order here is the order ``--figures`` lists them and the report draws them (kinds added later come
last, so that existing listings keep their order). Which ones are drawn without ``--figures``: every kind
marked `FigureKind.default` (all but ``utilisation``) wherever its `FigureKind.applies` holds.
"""

from __future__ import annotations

from convbench import hookimpl
from convbench.report.figures import lazy

BUILTIN_FIGURES = (
    ("loss", "curves:LossFigure", "train loss against step, epoch or time"),
    ("accuracy", "curves:AccuracyFigure", "held-out accuracy against step, epoch or time"),
    ("lr", "sweeps:LrFigure", "final accuracy (else loss) against learning rate, for cases that differ only in it"),
    ("heatmap", "sweeps:HeatmapFigure", "final accuracy (else loss) over the grid of two varied case fields"),
    ("params", "params:ParamsFigure", "parameter trajectories of models with convbench_trajectory"),
    ("target", "targets:TargetFigure", "time to target per case with a target"),
    ("utilisation", "utilisation:UtilisationFigure", "each sampled device's utilisation over each run"),
    ("profile", "targets:ProfileFigure", "performance profile across the groups with a target"),
    ("scaling", "scaling:ScalingFigure", "speedup and where the time goes, for cases on several world sizes"),
    ("loss-scales", "curves:LossScalesFigure", "train loss on a linear and a log axis side by side"),
    ("error", "curves:ErrorFigure", "held-out error against epochs and against training time, side by side"),
    ("seeds", "seeds:SeedsFigure", "each seed's final accuracy (else loss) per configuration, mean and range"),
    ("gap", "gap:GapFigure", "final train against held-out accuracy per configuration, and the gap"),
)

@hookimpl
def convbench_register_figures(register):
    for name, target, description in BUILTIN_FIGURES:
        register(name, lazy(f"convbench.report.figures.{target}"), description=description)
