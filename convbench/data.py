"""Datasets as tensors, and the batches the engine draws from them.

Following airbench, in-memory data sets live on the training device as whole tensors and a batch is
an index slice of a shuffled permutation: no per-sample DataLoader, no worker processes, no Python in
the hot path beyond one indexing call.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from convbench.errors import CaseError, ConvbenchError

TASKS = ("classification", "regression")
Split = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class DatasetSplits:
    """What a dataset factory returns: train, and optionally val and test, as (inputs, targets).

    Inputs are float tensors shaped ``(N, *input_shape)``; classification targets are int64 class
    indices, regression targets float tensors shaped ``(N, num_outputs)``.
    """

    train: Split
    num_outputs: int
    val: Split | None = None
    test: Split | None = None
    task: str = "classification"

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ConvbenchError(f"dataset task {self.task!r} is invalid; valid choices: {', '.join(TASKS)}")
        for name in ("train", "val", "test"):
            split = getattr(self, name)
            if split is not None and (len(split) != 2 or split[0].shape[0] != split[1].shape[0]):
                raise ConvbenchError(f"dataset split {name!r} must be (inputs, targets) of equal length")

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train[0].shape[1:])

    def splits(self) -> dict[str, Split]:
        """The splits present, in the order train, val, test."""
        return {n: s for n in ("train", "val", "test") if (s := getattr(self, n)) is not None}

    def to(self, device: torch.device) -> DatasetSplits:
        """These splits on ``device``: the same tensors where they are there already."""
        return self._moved(device, copy=False)

    def copy_to(self, device: torch.device) -> DatasetSplits:
        """A private copy of these splits on ``device``, even where they are there already.

        A case trains on such a copy, never on `load_cached`'s tensors (see there): on an accelerator
        moving the data is this copy, on the CPU it costs one more copy of the data set per live case.
        """
        return self._moved(device, copy=True)

    def _moved(self, device: torch.device, copy: bool) -> DatasetSplits:
        def move(split: Split | None) -> Split | None:
            return None if split is None else (split[0].to(device, copy=copy), split[1].to(device, copy=copy))

        return replace(self, train=move(self.train), val=move(self.val), test=move(self.test))


def split_off(
    inputs: torch.Tensor, targets: torch.Tensor, sizes: Sequence[int], seed: int
) -> list[Split]:
    """Cut a seeded random permutation into consecutive parts of the given sizes (the last takes the rest).

    The split seed is a dataset argument, not the case seed, so that every case of a study is
    evaluated on the same held-out samples.
    """
    n = inputs.shape[0]
    if sum(sizes) >= n:
        raise ConvbenchError(f"cannot hold out {sum(sizes)} of {n} samples: nothing would be left to train on")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    parts, start = [], 0
    for size in [*sizes, n - sum(sizes)]:
        index = order[start:start + size]
        parts.append((inputs[index], targets[index]))
        start += size
    return parts


class EpochBatches:
    """Index batches of equal size, shuffled anew every epoch (``shuffle``) or in the training set's own
    order every epoch; the remainder of each epoch is dropped.

    Equal batches keep step counts identical across epochs (and across DDP ranks). The fixed order is the
    same for every seed: it takes the data order out of what the seed varies (the training set's order
    is the split's, from the dataset's ``split_seed``, not the case's).
    """

    def __init__(self, num_samples: int, batch_size: int | None, seed: int, device: torch.device,
                 shuffle: bool = True) -> None:
        self.num_samples = num_samples
        self.batch_size = num_samples if batch_size is None else batch_size
        if self.batch_size > num_samples:
            raise CaseError(
                f"invalid batch_size={batch_size}: larger than the {num_samples} training samples"
            )
        self.steps_per_epoch = num_samples // self.batch_size
        self.full_batch = self.batch_size == num_samples
        self._generator = torch.Generator().manual_seed(seed)
        self._device = device
        self.shuffle = shuffle

    def epoch(self) -> Iterator[torch.Tensor]:
        if self.full_batch:  # gradient descent: every step sees all data, order is irrelevant
            everything = torch.arange(self.num_samples, device=self._device)
            yield from (everything for _ in range(self.steps_per_epoch))
            return
        if self.shuffle:
            order = torch.randperm(self.num_samples, generator=self._generator).to(self._device)
        else:
            order = torch.arange(self.num_samples, device=self._device)
        for i in range(self.steps_per_epoch):
            yield order[i * self.batch_size:(i + 1) * self.batch_size]


def identity(batch: torch.Tensor) -> torch.Tensor:
    """No augmentation: what `compose` returns for none, so that the training step can skip the call."""
    return batch


def compose(transforms: Sequence[Callable[[torch.Tensor], torch.Tensor]], generator: torch.Generator | None = None,
            global_batch: int | None = None, start: int = 0) -> Callable[[torch.Tensor], torch.Tensor]:
    """Apply batch transforms in order; the identity when there are none.

    Given ``global_batch``, the batch is one rank's rows ``[start, start + len(batch))`` of each
    global batch of that size. A transform that splits its work, ``make_params(batch, generator)``
    drawing a dict of per-sample tensors and ``apply(batch, params)`` applying them (every built-in
    does), then draws the parameters of the whole global batch from ``generator`` and applies the
    rank's rows of them: with a generator in the same state on every rank, every rank draws the same
    parameters and each sample is augmented as one process augments it. The parameters are a few
    numbers per image, so drawing all of them costs every rank little. ``make_params`` sees a stand-in
    with the global batch's shape, dtype and device, never images. Any other transform is called on
    the rank's batch and draws from torch's default generator, which differs between ranks.
    """
    transforms = tuple(transforms)
    if not transforms:
        return identity

    def augment(batch: torch.Tensor) -> torch.Tensor:
        rows = slice(start, start + batch.shape[0])
        for transform in transforms:
            if hasattr(transform, "make_params") and hasattr(transform, "apply"):
                whole = torch.empty((), dtype=batch.dtype, device=batch.device).expand(
                    global_batch or batch.shape[0], *batch.shape[1:])
                params = transform.make_params(whole, generator=generator)
                batch = transform.apply(batch, {name: value[rows] for name, value in params.items()})
            else:
                batch = transform(batch)
        return batch

    return augment


# Loading a data set (parsing 5,000 CSV rows, or reading 60,000 images) costs far more than a quick
# case's training, so each process keeps the last few it loaded.
_CACHE: OrderedDict[str, DatasetSplits] = OrderedDict()
_CACHE_SIZE = 4


def load_cached(key_parts: dict[str, Any], load: Callable[[], DatasetSplits]) -> DatasetSplits:
    """The data set ``key_parts`` names, from this process's cache or from ``load()``.

    The tensors returned are the cache's own, shared by every later case: a case gets a private copy
    (`DatasetSplits.copy_to`, which `convbench.engine.PreparedRun` makes), because torch has no
    read-only tensors and a model may write into its input (``x.mul_(...)``, an in-place first
    layer) during evaluation, where batches are views of the split, or anywhere else. A copy per case
    was chosen over checking a checksum after each case: it costs no more time than the checksum
    (one pass over the data, in the untimed preparation), it prevents the damage instead of finding
    it after a case was measured on it, and on an accelerator it costs nothing, since moving the data
    there is that copy. On the CPU it holds one more copy of the data set while a case is prepared
    (CIFAR-10: 0.7 GB), and the training step's hot path stays as it was.
    """
    key = json.dumps(key_parts, sort_keys=True, default=str)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    splits = load()
    if not isinstance(splits, DatasetSplits):
        raise ConvbenchError(
            f"dataset {key_parts.get('name')!r} returned {type(splits).__name__}, not convbench.data.DatasetSplits"
        )
    _CACHE[key] = splits
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return splits


def clear_cache() -> None:
    _CACHE.clear()


def default_data_root() -> Path:
    """Where downloaded data sets live unless ``--convbench-data-root`` says otherwise."""
    return Path.home() / ".cache" / "convbench" / "data"
