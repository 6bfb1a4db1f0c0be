"""The hooks a convbench plugin implements.

Each hook receives a `register` callback and calls it once per component, the way simonw/llm's
`register_models` does: a plugin states what it adds, and convbench decides where it goes, records
which plugin added it and rejects duplicates. Built-ins use exactly these hooks (no back door).

What each kind of factory is called with (context arguments are passed by keyword; the ones marked
"if accepted" only when the factory's signature names them):

========== ====================================================== ===========================
kind       called as                                              returns
========== ====================================================== ===========================
optimizer  ``factory(params=..., lr=..., **kwargs)``              ``torch.optim.Optimizer``
model      ``factory(input_shape=..., num_outputs=..., **kwargs)`` ``torch.nn.Module``
scheduler  ``factory(optimizer=..., **kwargs)``; if accepted       ``torch.optim.lr_scheduler.LRScheduler``
           ``steps_per_epoch``, ``total_steps``, ``epochs``
augment.   ``factory(**kwargs)``                                  ``Callable[[Tensor], Tensor]`` on a batch
dataset    ``factory(**kwargs)``; if accepted ``root``,            ``convbench.data.DatasetSplits``
           ``download``
figure     ``factory(**kwargs)``, usually the class itself         ``convbench.report.figures.FigureKind``
========== ====================================================== ===========================

``kwargs`` are the case's keyword arguments for that component merged over the ``defaults`` given at
registration. Schedulers also take the option ``interval``: ``"epoch"`` (default) or ``"step"``, how
often the engine calls ``scheduler.step()``, or ``"eval"``: ``scheduler.step(metrics)`` after every
evaluation, with the dict of evaluation metrics (``{"val_loss": ..., "val_accuracy": ..., ...}``).

A model may define ``convbench_trajectory() -> dict[str, float]``: the engine then records those
values with the loss curve (``curves["params"]``), e.g. W and b of the linear-regression toy problem.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import pluggy

PROJECT_NAME = "convbench"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


class Register(Protocol):
    """The callback every registration hook receives."""

    def __call__(
        self,
        name: str,
        factory: Callable[..., Any],
        *,
        description: str = "",
        defaults: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> None: ...


@hookspec
def convbench_register_optimizers(register: Register) -> None:
    """Register optimizers: ``factory(params=..., lr=..., **kwargs) -> torch.optim.Optimizer``."""


@hookspec
def convbench_register_models(register: Register) -> None:
    """Register models: ``factory(input_shape=..., num_outputs=..., **kwargs) -> torch.nn.Module``.

    ``input_shape`` is one sample's shape, e.g. ``(1, 28, 28)``; ``num_outputs`` the number of classes
    (or regression targets).
    """


@hookspec
def convbench_register_schedulers(register: Register) -> None:
    """Register LR schedulers: ``factory(optimizer=..., **kwargs) -> LRScheduler``.

    Pass ``interval="step"`` to `register` for schedulers that advance every batch, ``interval="eval"``
    for ones that take the evaluation metrics (``scheduler.step(metrics)``).
    """


@hookspec
def convbench_register_augmentations(register: Register) -> None:
    """Register augmentations: ``factory(**kwargs) -> callable(batch) -> batch``, run on the device."""


@hookspec
def convbench_register_datasets(register: Register) -> None:
    """Register datasets: ``factory(**kwargs) -> convbench.data.DatasetSplits`` (tensors on the CPU)."""


@hookspec
def convbench_register_figures(register: Register) -> None:
    """Register report figures: ``factory(**kwargs) -> convbench.report.figures.FigureKind``, usually a
    `FigureKind` subclass. The name is the kind's name for ``convbench report --figures`` and in file names.

    `convbench report` loads figure plugins without the training components, but training processes load
    every hook: import matplotlib inside ``draw`` (or register with `convbench.report.figures.lazy`), not at
    the top of the plugin module.
    """
