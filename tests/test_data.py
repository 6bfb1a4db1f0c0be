"""The data helpers every dataset and the engine share: epoch batching and seeded hold-out splits."""

from __future__ import annotations

import pytest
import torch
from error_text import one_line

from convbench.data import EpochBatches, split_off
from convbench.errors import CaseError, ConvbenchError


# ============================================================================== EpochBatches
def take_epochs(batches: EpochBatches, epochs: int) -> list[list[torch.Tensor]]:
    return [list(batches.epoch()) for _ in range(epochs)]


def test_epoch_batches_equal_distinct_batches():
    n, size = 103, 10
    batches = EpochBatches(n, size, seed=0, device=torch.device("cpu"))
    assert batches.steps_per_epoch == 10  # 103 // 10, the remainder of 3 is dropped
    assert batches.batch_size == size
    for epoch in take_epochs(batches, 3):
        assert len(epoch) == 10
        assert all(b.shape == (size,) and b.dtype == torch.int64 for b in epoch)
        seen = torch.cat(epoch)
        assert seen.unique().numel() == 100, "indices repeat within an epoch"
        assert seen.min() >= 0 and seen.max() < n


def test_epoch_batches_reshuffle_each_epoch_and_repeat_per_seed():
    def sequence(seed):
        return [torch.cat(epoch) for epoch in take_epochs(EpochBatches(60, 8, seed, torch.device("cpu")), 3)]

    first = sequence(5)
    assert not torch.equal(first[0], first[1])
    assert not torch.equal(first[1], first[2])
    again = sequence(5)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    other = sequence(6)
    assert not torch.equal(first[0], other[0])


def test_epoch_batches_full_batch():
    batches = EpochBatches(17, None, seed=0, device=torch.device("cpu"))
    assert batches.steps_per_epoch == 1
    assert batches.batch_size == 17
    for epoch in take_epochs(batches, 2):
        assert len(epoch) == 1
        assert sorted(epoch[0].tolist()) == list(range(17))


def test_epoch_batches_batch_larger_than_data():
    with pytest.raises(CaseError) as exc_info:
        EpochBatches(10, 11, seed=0, device=torch.device("cpu"))
    message = one_line(exc_info)
    assert "batch_size=11" in message
    assert "10" in message


# ================================================================================= split_off
def test_split_off_partitions_rows():
    inputs = torch.arange(20, dtype=torch.float32).reshape(20, 1) * 2
    targets = torch.arange(20)
    parts = split_off(inputs, targets, [3, 5], seed=7)
    assert [p[0].shape[0] for p in parts] == [3, 5, 12]
    assert sorted(torch.cat([p[1] for p in parts]).tolist()) == list(range(20))
    for x, y in parts:
        assert torch.equal(x[:, 0], y.float() * 2), "inputs and targets must stay paired"
    again = split_off(inputs, targets, [3, 5], seed=7)
    assert all(torch.equal(a[1], b[1]) for a, b in zip(parts, again, strict=True))
    assert split_off(inputs, targets, [19], seed=0)[1][0].shape[0] == 1


@pytest.mark.parametrize("sizes", [[20], [15, 5], [25]])
def test_split_off_holding_out_everything(sizes):
    inputs, targets = torch.zeros(20, 2), torch.zeros(20, dtype=torch.int64)
    with pytest.raises(ConvbenchError) as exc_info:
        split_off(inputs, targets, sizes, seed=0)
    message = one_line(exc_info)
    assert str(sum(sizes)) in message
    assert "20" in message
