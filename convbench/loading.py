"""A case's data set, loaded through the per-process cache, and in turns across ranks when it downloads."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from convbench.case import Case
from convbench.data import DatasetSplits, default_data_root, load_cached
from convbench.distributed import DistContext
from convbench.errors import ConvbenchError
from convbench.registry import Registry

if TYPE_CHECKING:
    from convbench.engine import RunSettings


def load_dataset(case: Case, registry: Registry, settings: RunSettings) -> DatasetSplits:
    """The case's data set from this process's cache, or built by its plugin (downloading if allowed)."""
    component = registry.get("dataset", case.dataset)
    root = Path(settings.data_root) if settings.data_root else default_data_root()
    return load_cached(
        {"name": case.dataset, "plugin": component.plugin, "kwargs": dict(case.dataset_kwargs),
         "root": str(root), "download": settings.download},
        lambda: component.build(case.dataset_kwargs, optional_context={"root": root, "download": settings.download}),
    )


def load_in_turns(case: Case, registry: Registry, settings: RunSettings, dist: DistContext,
                  device: torch.device) -> DatasetSplits:
    """Load the data set; when it may be downloaded, ranks take turns so that no two write one folder.

    Rank 0 goes first (on a shared file system the others then find its files), then the first
    rank of every other machine, then the rest, which read what is on disk by then. A rank whose
    turn fails still joins the remaining barriers, so a failure never leaves the others waiting, and
    then tells them, so that none goes on into training alone.
    """
    if not (dist.distributed and settings.download):
        return load_dataset(case, registry, settings)
    my_turn = 0 if dist.rank == 0 else 1 if dist.local_rank == 0 else 2
    loaded: DatasetSplits | None = None
    failure: BaseException | None = None
    for turn in range(3):
        if turn == my_turn:
            try:
                loaded = load_dataset(case, registry, settings)
            except BaseException as exc:
                failure = exc
        dist.barrier()
    if failure is not None:
        dist.any(True, device)
        raise failure
    if dist.any(False, device):
        raise ConvbenchError(f"dataset {case.dataset!r} failed to load on another rank")
    assert loaded is not None
    return loaded
