"""convbench's device-resident batches against the reference studies' input pipeline.

    python -m benchmarks --only data [--repeats 3]

The lab scripts train from a torchvision data set through a ``DataLoader``: every sample is a PIL image
that goes through ``RandomRotation`` (the augmentation), ``ToTensor`` and ``Normalize`` one at a time,
and the batch is collated from them. convbench keeps the data set as one tensor on the device and takes
a batch as an index slice, augmented batch-wise (`convbench.data.compose`). Both sides train the same
model with the same optimizer for the same steps on mnist-5k's training images (offline, as PIL images
the way ``torchvision.datasets.MNIST`` returns them); the table compares time per step, and their test
accuracies are reported beside it (they must be alike: the pipelines feed the same images).
"""

from __future__ import annotations

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
    augment = transforms.Compose([transforms.RandomRotation(10), transforms.ToTensor(),
                                  transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))])
    loader = DataLoader(DigitImages(*data.train, transform=augment), batch_size=case.batch_size, shuffle=True,
                        drop_last=True, generator=torch.Generator().manual_seed(case.seed))
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


def convbench_run(case: Case) -> tuple[float, float, int]:
    result = PreparedRun(case, RunSettings(telemetry_interval_s=None)).run()
    return result.timing.train_s / result.steps, result.final["test_accuracy"], result.steps


def run(repeats: int, tiny: bool = False) -> list[Comparison]:
    return [_compare(case.replace(**TINY) if tiny else case, repeats) for case in CASES]


def _compare(case: Case, repeats: int) -> Comparison:
    accuracies: dict[str, list[float]] = {"dataloader": [], "convbench": []}

    def side(name: str, function: Any) -> Any:
        def timed() -> float:
            per_step, accuracy, _ = function(case)
            accuracies[name].append(accuracy)
            return per_step
        return timed

    load_start = load_1min()
    a, b = alternate(side("dataloader", dataloader_run), side("convbench", convbench_run), repeats,
                     ("DataLoader+PIL s/step", "device batches s/step"))
    speedup = a.median / b.median
    return Comparison("data", f"{case.model}+rotation", "s/step", a, b, goal="A/B >= 5 (ratio <= 0.2)",
                      goal_met=speedup >= 5,
                      extra={"speedup": speedup, "test_accuracy": {k: sorted(v) for k, v in accuracies.items()}},
                      load=(load_start, load_1min()))
