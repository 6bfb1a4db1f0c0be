"""convbench's device-resident batches against the reference studies' input pipeline.

    python -m benchmarks --only data [--repeats 3]

The lab scripts train from a torchvision data set through a ``DataLoader``: every sample is a PIL image
that goes through ``RandomRotation`` (the augmentation), ``ToTensor`` and ``Normalize`` one at a time,
and the batch is collated from them. convbench keeps the data set as one tensor on the device and takes
a batch as an index slice, augmented batch-wise (`convbench.data.compose`). Both sides train the same
model with the same optimizer for the same steps on mnist-5k's training images (offline, as PIL images
the way ``torchvision.datasets.MNIST`` returns them); the table compares time per step, and their test
accuracies are reported beside it, one seed per call (they must be alike: the pipelines feed the same images).

A first row times the data paths alone, with no model: the seconds until a batch is ready to train on
(augmented, normalised, on the device), over an epoch of batches. That is what the pipeline costs; the
time per training step adds the model's own compute, the same on both sides, which hides more of the
difference the larger the model (on one CPU thread, LeNet-5's step is mostly its convolutions).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import transforms
from torchvision.datasets import VisionDataset

from benchmarks.timing import Comparison, alternate, load_1min
from convbench.case import Case
from convbench.clock import synchronize
from convbench.engine import PreparedRun, RunSettings
from convbench.registry import get_registry

#: The pipeline matters most for a cheap model (the MLP); a CNN's own compute hides more of it.
CASES = [Case(model=model, optimizer="adam", lr=1e-3, batch_size=64, epochs=1,
              augmentations=(("rotation", {"degrees": 10}),), eval_every=10_000, eval_train_samples=500)
         for model in ("mlp", "lenet5")]
TINY = {"epochs": None, "steps": 10}
#: The lab scripts normalise with MNIST's (0.1307, 0.3081). ``Normalize`` costs the same per sample whatever its
#: constants; these keep the inputs in [0, 1], as mnist-5k is on convbench's side, so that the accuracies compare.
MNIST_MEAN, MNIST_STD = 0.0, 1.0


class DigitImages(VisionDataset):
    """mnist-5k's images as torchvision's MNIST serves them: ``(PIL image, label)``, the transform per sample."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Any) -> None:
        super().__init__(root="", transform=transform)
        self.pixels = (images[:, 0] * 255).round().to(torch.uint8).numpy()
        self.labels = labels.tolist()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = Image.fromarray(self.pixels[index], mode="L")
        return self.transform(image), self.labels[index]


def dataloader_run(case: Case) -> tuple[float, float, int]:
    """The reference pipeline: seconds per step, test accuracy, steps."""
    registry = get_registry()
    data = registry.get("dataset", case.dataset).build({})
    loader = reference_loader(case)
    torch.manual_seed(case.seed)
    model = registry.get("model", case.model).build({}, context={"input_shape": data.input_shape,
                                                                 "num_outputs": data.num_outputs})
    optimizer = torch.optim.Adam(model.parameters(), lr=case.lr)
    total = case.steps if case.steps is not None else round(case.epochs * len(loader))
    steps = 0
    started = time.perf_counter()
    while steps < total:
        for inputs, targets in loader:
            loss = F.cross_entropy(model(inputs), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
            if steps == total:
                break
    per_step = (time.perf_counter() - started) / steps
    model.eval()
    with torch.no_grad():
        test_x, test_y = data.test
        accuracy = (model((test_x - MNIST_MEAN) / MNIST_STD).argmax(1) == test_y).float().mean().item()
    return per_step, accuracy, steps


def reference_loader(case: Case) -> DataLoader:
    """The lab scripts' loader: per-sample ``RandomRotation``, ``ToTensor`` and ``Normalize`` on PIL images."""
    data = get_registry().get("dataset", case.dataset).build({})
    augment = transforms.Compose([transforms.RandomRotation(10), transforms.ToTensor(),
                                  transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))])
    return DataLoader(DigitImages(*data.train, transform=augment), batch_size=case.batch_size, shuffle=True,
                      drop_last=True, generator=torch.Generator().manual_seed(case.seed))


def dataloader_batches(case: Case, count: int) -> float:
    """Seconds per batch the reference loader takes to deliver ``count`` batches, with no training."""
    loader = reference_loader(case)
    delivered = 0
    started = time.perf_counter()
    while delivered < count:
        for _batch in loader:
            delivered += 1
            if delivered == count:
                break
    return (time.perf_counter() - started) / count


def convbench_batches(case: Case, count: int) -> float:
    """Seconds per batch convbench's data path takes to deliver ``count`` batches: an index gather on the
    device-resident tensors and the batch-wise augmentation, as `PreparedRun.train_step` does, no training."""
    run = PreparedRun(case, RunSettings(telemetry_interval_s=None))
    inputs, targets = run.data.train
    batches = run._endless_batches()
    started = time.perf_counter()
    for _ in range(count):
        index = next(batches)
        batch = run.augment(inputs.index_select(0, index))
        targets.index_select(0, index)
    synchronize(run.device)
    del batch
    return (time.perf_counter() - started) / count


def convbench_run(case: Case) -> tuple[float, float, int]:
    result = PreparedRun(case, RunSettings(telemetry_interval_s=None)).run()
    return result.timing.train_s / result.steps, result.final["test_accuracy"], result.steps


def run(repeats: int, tiny: bool = False) -> list[Comparison]:
    cases = [case.replace(**TINY) if tiny else case for case in CASES]
    return [_compare_batches(cases[0], repeats)] + [_compare(case, repeats) for case in cases]


def _compare_batches(case: Case, repeats: int) -> Comparison:
    count = case.steps or 3500 // case.batch_size  # an epoch of mnist-5k's training split
    load_start = load_1min()
    a, b = alternate(lambda: dataloader_batches(case, count), lambda: convbench_batches(case, count), repeats,
                     ("DataLoader+PIL s/batch", "device batches s/batch"))
    speedup = a.median / b.median
    return Comparison("data", "rotation, no model", "s/batch ready", a, b, goal="A/B >= 5 (ratio <= 0.2)",
                      goal_met=speedup >= 5,
                      extra={"speedup": speedup, "batches": count, "batch_size": case.batch_size},
                      load=(load_start, load_1min()))


def _compare(case: Case, repeats: int) -> Comparison:
    accuracies: dict[str, list[float]] = {"dataloader": [], "convbench": []}

    def side(name: str, function: Any) -> Any:
        def timed() -> float:  # a new seed each call: the accuracies then show the seeds' spread
            per_step, accuracy, _ = function(case.replace(seed=len(accuracies[name])))
            accuracies[name].append(accuracy)
            return per_step
        return timed

    load_start = load_1min()
    a, b = alternate(side("dataloader", dataloader_run), side("convbench", convbench_run), repeats,
                     ("DataLoader+PIL s/step", "device batches s/step"))
    speedup = a.median / b.median
    return Comparison("data", f"{case.model}+rotation", "s/step", a, b,
                      extra={"speedup": speedup, "test_accuracy_by_seed": accuracies,
                             "mean_test_accuracy": {k: statistics.fmean(v) for k, v in accuracies.items()}},
                      load=(load_start, load_1min()))
