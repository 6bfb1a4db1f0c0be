"""Shared fixtures: a registry with small, fast test components next to the built-ins."""

from __future__ import annotations

import threading
import types

import pytest
import torch
from torch import nn

import convbench
from convbench.data import DatasetSplits, split_off
from convbench.engine import RunSettings
from convbench.registry import load_registry


def make_blobs(num_classes: int = 4, per_class: int = 150, dim: int = 8, spread: float = 0.6,
               seed: int = 0) -> DatasetSplits:
    """Gaussian clusters around random centres: learnable to ~100% in a few dozen steps."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, dim, generator=generator) * 2
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    inputs = centres[labels] + spread * torch.randn(labels.shape[0], dim, generator=generator)
    test, val, train = split_off(inputs, labels, [100, 100], seed=seed)
    return DatasetSplits(train=train, val=val, test=test, num_outputs=num_classes)


def make_shuffled_blobs(num_classes: int = 10, per_class: int = 200, seed: int = 0) -> DatasetSplits:
    """Blobs whose labels are permuted independently of the inputs: nothing a model can learn."""
    data = make_blobs(num_classes=num_classes, per_class=per_class, seed=seed)
    generator = torch.Generator().manual_seed(seed + 1)

    def shuffled(split):
        inputs, labels = split
        return inputs, labels[torch.randperm(labels.shape[0], generator=generator)]

    return DatasetSplits(train=shuffled(data.train), val=shuffled(data.val), test=shuffled(data.test),
                         num_outputs=num_classes)


def make_line(size: int = 200, weight: float = 2.0, bias: float = 0.5, seed: int = 0) -> DatasetSplits:
    """Noise-free y = weight * x + bias on x in [-1, 1]: a regression problem with a known answer."""
    x = torch.rand(size, 1, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    return DatasetSplits(train=(x, weight * x + bias), num_outputs=1, task="regression")


class FaultAfter(nn.Module):
    """A linear model that misbehaves (`fault`) once it has made ``steps`` training forward passes."""

    def __init__(self, input_shape, num_outputs, steps: int):
        super().__init__()
        self.linear = nn.Linear(int(torch.tensor(input_shape).prod()), num_outputs)
        self.steps = steps
        self.calls = 0

    def forward(self, x):
        if self.training:
            self.calls += 1
        out = self.linear(x.flatten(1))
        return self.fault(out) if self.calls > self.steps else out

    def fault(self, out: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class NanAfter(FaultAfter):
    """Outputs turn NaN."""

    def __init__(self, input_shape, num_outputs, steps: int = 5):
        super().__init__(input_shape, num_outputs, steps)

    def fault(self, out: torch.Tensor) -> torch.Tensor:
        return out * float("nan")


class HangAfter(FaultAfter):
    """The forward pass never returns (a bounded "forever": a regression fails instead of hanging the tests)."""

    def __init__(self, input_shape, num_outputs, steps: int = 3):
        super().__init__(input_shape, num_outputs, steps)

    def fault(self, out: torch.Tensor) -> torch.Tensor:
        threading.Event().wait(120)
        raise RuntimeError("hang_after waited 120 s and nothing interrupted it")


def _testing_plugin() -> types.ModuleType:
    plugin = types.ModuleType("convbench_testing")

    @convbench.hookimpl
    def convbench_register_datasets(register):
        register("blobs", make_blobs, description="Gaussian blobs for tests")
        register("shuffled-blobs", make_shuffled_blobs, description="blobs with labels independent of the inputs")
        register("line", make_line, description="y = 2x + 0.5 for tests")

    @convbench.hookimpl
    def convbench_register_models(register):
        register("nan_after", NanAfter, description="turns NaN after some steps")
        register("hang_after", HangAfter, description="hangs after some steps")

    plugin.convbench_register_datasets = convbench_register_datasets
    plugin.convbench_register_models = convbench_register_models
    return plugin


TESTING_PLUGIN = _testing_plugin()


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Tests train tiny models, which gain nothing from a second torch thread; on a busy two-core machine
    torch's spinning worker threads make each small step tens of times slower (0.35 s against 0.012 s for
    60 softmax steps on the blobs). Worker pools and subprocesses set their own thread counts."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def registry():
    """Built-ins plus the `blobs` dataset and `nan_after` model; no third-party entry points."""
    return load_registry(entry_points=False, extra_plugins=[("convbench_testing", TESTING_PLUGIN)])


@pytest.fixture
def settings(registry, tmp_path):
    return RunSettings(registry=registry, data_root=tmp_path / "data")
