"""MNIST's IDX on-disk format, written by the tests for torchvision's real loaders to read."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np


def write_idx_images(path: Path, images: np.ndarray) -> None:
    """Big-endian magic 2051, count, rows, columns, then uint8 pixels."""
    n, h, w = images.shape
    path.write_bytes(struct.pack(">IIII", 2051, n, h, w) + images.astype(np.uint8).tobytes())


def write_idx_labels(path: Path, labels: np.ndarray) -> None:
    """Big-endian magic 2049, count, then uint8 labels."""
    path.write_bytes(struct.pack(">II", 2049, labels.shape[0]) + labels.astype(np.uint8).tobytes())


def write_idx_dataset(raw: Path, seed: int, label_step: int = 1) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """30 train and 12 test random images with labels in ``raw`` (torchvision's ``raw_folder``), as
    torchvision's MNIST-format loaders expect them; returns what was written, per file prefix."""
    raw.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    files = {}
    for prefix, n in (("train", 30), ("t10k", 12)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        images[0, 0, 0], images[1, 0, 0] = 0, 255  # make sure both ends of the range occur
        labels = (np.arange(n, dtype=np.uint8) * label_step) % 10
        write_idx_images(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx_labels(raw / f"{prefix}-labels-idx1-ubyte", labels)
        files[prefix] = (images, labels)
    return files
