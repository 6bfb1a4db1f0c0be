"""Tests of ``cifar10-standin``, the offline stand-in for CIFAR-10 made from the bundled MNIST sample.

It must look like CIFAR-10 to a model (3x32x32 RGB bytes / 255, 10 classes), be reproducible, and be
learnable: quick-scale CIFAR studies assert that a CNN learns on it and that a broken setting stalls,
which random images (``fake-images``) cannot show. The learnability checks train a tiny CNN for a
second with three seeds; the same model on a label-shuffled copy stays at chance, so what it learns
is the label, not an artefact of the split.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from error_text import one_line
from torch import nn

from convbench import Case
from convbench.data import DatasetSplits
from convbench.engine import RunSettings, run_in_this_process
from convbench.errors import ComponentArgumentError
from convbench.registry import load_registry

NAME = "cifar10-standin"
SIZES = {"train": 3500, "val": 500, "test": 1000}


@pytest.fixture(scope="module")
def reg():
    return load_registry(entry_points=False)


def build(reg, **kwargs) -> DatasetSplits:
    return reg.get("dataset", NAME).build(kwargs, optional_context={"root": Path("/nonexistent"), "download": False})


@pytest.fixture(scope="module")
def standin(reg) -> DatasetSplits:
    return build(reg)


def rows(inputs: torch.Tensor) -> list[bytes]:
    return sorted(row.numpy().tobytes() for row in inputs.reshape(inputs.shape[0], -1))


# ============================================================================ what it is
def test_registered_under_a_name_and_description_that_say_stand_in(reg):
    component = reg.get("dataset", NAME)
    assert "standin" in component.name
    assert "STAND-IN" in component.description and "not CIFAR-10" in component.description
    assert component.defaults == {"val_size": 500, "test_size": 1000, "split_seed": 0, "seed": 0, "noise_std": 0.06}


def test_has_cifar10_shape_dtype_classes_and_mnist_5k_splits(standin):
    assert standin.num_outputs == 10 and standin.task == "classification"
    assert standin.input_shape == (3, 32, 32)
    for name, (inputs, labels) in standin.splits().items():
        assert inputs.shape == (SIZES[name], 3, 32, 32) and inputs.dtype == torch.float32, name
        assert labels.shape == (SIZES[name],) and labels.dtype == torch.int64, name
        assert set(labels.tolist()) == set(range(10)), name
    counts = torch.bincount(standin.train[1], minlength=10)
    assert counts.min() >= 300 and counts.max() <= 400  # mnist-5k has 500 per digit; 70% of them train


def test_labels_are_the_mnist_5k_digits_under_the_same_split(reg, standin):
    mnist = reg.get("dataset", "mnist-5k").build({})
    for name in SIZES:
        assert torch.equal(standin.splits()[name][1], mnist.splits()[name][1]), name


def test_values_are_bytes_over_255_in_the_unit_interval_and_vary_in_colour(standin):
    inputs = torch.cat([standin.train[0], standin.val[0], standin.test[0]])
    assert inputs.min() >= 0 and inputs.max() <= 1
    assert torch.equal(inputs, torch.round(inputs * 255) / 255)
    per_image_colour = inputs.mean(dim=(2, 3))  # (N, 3)
    assert per_image_colour.std(dim=0).min() > 0.1  # colours differ from image to image in every channel
    assert inputs.std(dim=(1, 2, 3)).min() > 0.05  # no blank image: every digit stands out from its background


# ============================================================================ reproducible
def test_two_calls_give_identical_data(reg, standin):
    again = build(reg)
    for name, (inputs, labels) in standin.splits().items():
        assert torch.equal(inputs, again.splits()[name][0]) and torch.equal(labels, again.splits()[name][1]), name


def test_another_split_seed_holds_out_other_images_of_the_same_set(reg, standin):
    other = build(reg, split_seed=1)
    assert not torch.equal(other.test[0], standin.test[0])
    everything = [torch.cat([s.train[0], s.val[0], s.test[0]]) for s in (standin, other)]
    assert rows(everything[0]) == rows(everything[1])  # the same 5,000 images, split otherwise


def test_another_seed_renders_other_images_with_the_same_labels(reg, standin):
    other = build(reg, seed=1)
    assert torch.equal(other.test[1], standin.test[1])
    assert (other.test[0] - standin.test[0]).abs().mean() > 0.1


@pytest.mark.parametrize(("kwargs", "named"), [
    ({"seed": "x"}, "seed='x'"),
    ({"noise_std": -0.1}, "noise_std=-0.1"),
    ({"test_size": 4000, "val_size": 1000}, "cannot hold out 5000 of 5000"),
])
def test_bad_arguments_are_one_line_errors_naming_the_value(reg, kwargs, named):
    with pytest.raises(Exception) as info:
        build(reg, **kwargs)
    assert named in one_line(info)


def test_an_unknown_argument_lists_the_valid_ones(reg):
    with pytest.raises(ComponentArgumentError, match="noise_std"):
        build(reg, colours=3)


# ============================================================================ learnable
def tiny_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 16, 5, stride=2, padding=2), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2, padding=1),
                         nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 4 * 4, 10))


def trained_test_accuracy(standin: DatasetSplits, seed: int, shuffle_labels: bool) -> float:
    """Train `tiny_cnn` with Adam for 150 steps of 64 (about a second) and return its test accuracy."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    inputs, labels = standin.train
    if shuffle_labels:
        labels = labels[torch.randperm(labels.shape[0], generator=generator)]
    model = tiny_cnn()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        index = torch.randint(inputs.shape[0], (64,), generator=generator)
        loss = nn.functional.cross_entropy(model(inputs[index]), labels[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return (model(standin.test[0]).argmax(1) == standin.test[1]).float().mean().item()


# Measured test accuracies, seeds 0/1/2: 0.557/0.586/0.631 with the labels, 0.088/0.087/0.108 shuffled.
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_tiny_cnn_learns_it_well_above_chance(standin, seed):
    assert trained_test_accuracy(standin, seed, shuffle_labels=False) > 0.35


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_same_cnn_on_shuffled_labels_stays_at_chance(standin, seed):
    assert trained_test_accuracy(standin, seed, shuffle_labels=True) < 0.17


def test_a_case_trains_on_it_through_the_engine(reg):
    case = Case(model="softmax", dataset=NAME, optimizer="adam", lr=1e-3, batch_size=100, steps=30, eval_every=30,
                eval_train_samples=500)
    result = run_in_this_process(case, RunSettings(registry=reg))
    assert result.steps == 30 and not result.diverged
    assert result.initial_train_loss == pytest.approx(math.log(10), abs=0.3)
    assert result.final_train_loss < result.initial_train_loss
