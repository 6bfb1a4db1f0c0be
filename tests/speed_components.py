"""Small components for the speed-option tests: a learnable image data set and a tiny CNN, fast on a CPU."""

from __future__ import annotations

import functools
import types
from pathlib import Path

import torch
from conftest import TESTING_PLUGIN, make_blobs
from torch import nn

import convbench
from convbench.case import Case
from convbench.data import DatasetSplits
from convbench.engine import RunSettings
from convbench.registry import Registry, load_registry


def make_blob_images(seed: int = 0) -> DatasetSplits:
    """The blobs as 1x4x4 images: learnable in a few dozen steps by a CNN."""
    data = make_blobs(dim=16, spread=2.5, seed=seed)

    def images(split: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return split[0].reshape(-1, 1, 4, 4), split[1]

    return DatasetSplits(train=images(data.train), val=images(data.val), test=images(data.test),
                         num_outputs=data.num_outputs)


class TinyCNN(nn.Module):
    """One 3x3 convolution, BatchNorm (a buffer that a compile warm-up must leave untouched), dropout, a linear head."""

    def __init__(self, input_shape, num_outputs):
        super().__init__()
        channels, height, width = input_shape
        self.conv = nn.Conv2d(channels, 8, 3, padding=1)
        self.norm = nn.BatchNorm2d(8)
        self.drop = nn.Dropout(0.1)
        self.head = nn.Linear(8 * height * width, num_outputs)

    def forward(self, x):
        return self.head(self.drop(torch.relu(self.norm(self.conv(x))).flatten(1)))


def _plugin() -> types.ModuleType:
    plugin = types.ModuleType("convbench_speed_testing")

    @convbench.hookimpl
    def convbench_register_datasets(register):
        register("blob-images", make_blob_images, description="blobs as 1x4x4 images")

    @convbench.hookimpl
    def convbench_register_models(register):
        register("tiny_cnn", TinyCNN, description="one conv layer and a linear head")

    plugin.convbench_register_datasets = convbench_register_datasets
    plugin.convbench_register_models = convbench_register_models
    return plugin


SPEED_PLUGIN = _plugin()

#: 60 steps of a CNN on the blob images: the loss falls from ~1.4 to ~0.1.
CNN = Case(model="tiny_cnn", dataset="blob-images", optimizer="adam", lr=0.01, batch_size=20, epochs=3)


@functools.cache
def speed_registry() -> Registry:
    """Built-ins, the tests' components and these."""
    return load_registry(entry_points=False, extra_plugins=[("convbench_testing", TESTING_PLUGIN),
                                                            ("convbench_speed_testing", SPEED_PLUGIN)])


def speed_settings(tmp_path: Path) -> RunSettings:
    return RunSettings(registry=speed_registry(), data_root=tmp_path / "data", telemetry_interval_s=None)
