"""Each rank's share of the global batch, so that N ranks take the same steps on the same data as one.

Every rank draws the same global permutation and takes its own slice of each global batch: equal step
counts on every rank (uneven shards hang DDP) and the same data as one process.
"""

from __future__ import annotations

from dataclasses import dataclass

from convbench.case import Case
from convbench.errors import CaseError


def global_batch_size(case: Case, num_samples: int, world_size: int) -> int:
    """Strong scaling keeps the case's batch as the global batch; weak scaling gives every rank the
    case's batch. Full-batch runs use the whole training set.

    A global batch larger than the training set is an error that names the values the user set (the
    case's ``batch_size`` and ``world_size``), not the product. `Case` itself rejects a strong-scaling
    batch smaller than the world size, before any data is loaded or any worker starts.
    """
    if case.batch_size is None:
        return num_samples
    if case.scaling == "strong":
        if case.batch_size > num_samples:
            raise CaseError(f"invalid batch_size={case.batch_size}: larger than the {num_samples} training samples")
        return case.batch_size
    global_batch = case.batch_size * world_size
    if global_batch > num_samples:
        raise CaseError(
            f"invalid batch_size={case.batch_size} for world_size={world_size} with weak scaling: every rank takes "
            f"{case.batch_size} samples, {global_batch} in all, more than the {num_samples} training samples; valid "
            f"choices: batch_size up to {num_samples // world_size}, or scaling='strong'")
    return global_batch


@dataclass(frozen=True)
class RankShare:
    """Rank r trains on ``[start, stop)`` of each global batch of ``global_batch`` samples.

    When the batch does not split evenly the shares differ by one sample, and each rank's loss is
    multiplied by ``loss_weight`` (its share relative to an even one), so that DDP's mean of the ranks'
    gradients is exactly the gradient of the global batch's mean loss.
    """

    global_batch: int
    start: int
    stop: int
    loss_weight: float

    @classmethod
    def of(cls, case: Case, num_samples: int, rank: int, world_size: int) -> RankShare:
        global_batch = global_batch_size(case, num_samples, world_size)
        start = rank * global_batch // world_size
        stop = (rank + 1) * global_batch // world_size
        return cls(global_batch, start, stop, (stop - start) * world_size / global_batch)
