"""The "stalled" verdict: a run that ended where a model that learned nothing would be.

Divergence is loud (NaN, a loss that explodes); a run that never learned is quiet. A CIFAR-10 CNN whose
loss sits at 2.3035 for the whole run looks "converged" to anything that only watches for divergence,
yet 2.3026 is ln 10, the loss of a uniform guess over 10 classes. So, at the end of a run that neither
diverged nor stopped at its target, convbench compares where it ended with *chance level*, the loss
and accuracy of a model that ignores its inputs:

* classification over C classes: loss ln C (a uniform guess), accuracy 1/C;
* regression (mean squared error): the loss of predicting the training targets' mean, i.e. their
  variance (averaged over outputs); there is no accuracy.

The run is **stalled** when its final train loss is still at least `LOSS_SHARE` (95%) of the chance
loss, and (classification) its final train accuracy (where the train split was not evaluated: every
held-out accuracy) is at most `ACCURACY_SHARE` (10%) of the way from chance to perfect: at most 0.19
for 10 classes, 0.55 for 2. For a regression the loss rule alone reads "explains less than 5% of the
targets' variance" (R^2 < 0.05).

Why these margins: an untrained network's loss starts near ln C and its accuracy scatters around 1/C
by several points (an unlucky initialisation favours a few classes), so a tight accuracy margin would
call healthy-but-slow starts learners and a tight loss margin would miss a run stuck a hair below
chance. Any run that learned something real, even a little, leaves both bands: 5% below ln 10 is a
loss of 2.19; a model at 0.2 accuracy on 10 classes ranks inputs better than a guess. The train loss
used is the final evaluation's (eval mode, no augmentation) where the train split was evaluated, and
otherwise the mean of the last logged stretch of training steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from convbench.data import DatasetSplits
from convbench.result import Stall

#: Stalled while the final train loss is at least this share of the chance-level loss.
LOSS_SHARE = 0.95
#: ... and every final accuracy is at most this share of the way from chance to perfect.
ACCURACY_SHARE = 0.10


@dataclass(frozen=True)
class ChanceLevel:
    """The loss (and accuracy) of a model that ignores its inputs, for one data set."""

    loss: float
    accuracy: float | None
    #: How the loss was found, for the verdict's reason: "ln 10, a uniform guess over 10 classes".
    described: str

    @classmethod
    def of(cls, data: DatasetSplits) -> ChanceLevel | None:
        """Chance level of ``data``'s task; None where it says nothing (one class, constant targets)."""
        if data.task == "classification":
            classes = data.num_outputs
            if classes < 2:
                return None
            return cls(math.log(classes), 1.0 / classes, f"ln {classes}, a uniform guess over {classes} classes")
        variance = targets_variance(data.train[1])
        if not variance > 0:
            return None
        return cls(variance, None, "the train targets' variance, the loss of predicting their mean")

    @property
    def accuracy_ceiling(self) -> float | None:
        """The highest accuracy a stalled run may show."""
        if self.accuracy is None:
            return None
        return self.accuracy + ACCURACY_SHARE * (1.0 - self.accuracy)


def judge(chance: ChanceLevel | None, train_loss: float | None, accuracies: dict[str, float | None],
          step: int) -> Stall | None:
    """The verdict for a run that ended at ``step`` with these final numbers; None when it learned.

    ``accuracies`` maps a split to its final accuracy (None where it could not be computed). A run
    whose loss is unknown or not finite is not judged: divergence handles non-finite losses.
    """
    if chance is None or train_loss is None or not math.isfinite(train_loss):
        return None
    if train_loss < LOSS_SHARE * chance.loss:
        return None
    ceiling = chance.accuracy_ceiling
    judged = _judged_accuracies(accuracies)
    if ceiling is not None and any(value > ceiling for value in judged.values()):
        return None
    reason = (f"final train loss {train_loss:.4g} is {train_loss / chance.loss:.1%} of chance level "
              f"{chance.loss:.4g} ({chance.described})")
    if ceiling is not None:
        if judged:
            shown = ", ".join(f"{split} {value:.3f}" for split, value in judged.items())
            reason += f"; accuracy ({shown}) at most {ceiling:.3f}, near chance {chance.accuracy:.3f}"
        else:
            reason += "; no accuracy was evaluated"
    return Stall(step=step, reason=reason)


def _judged_accuracies(accuracies: dict[str, float | None]) -> dict[str, float]:
    """The train accuracy where it was evaluated, else every held-out one that was.

    The train split is what the loss rule judges, and the largest evaluated sample: held-out splits
    of a few hundred samples scatter by several points around chance for an untrained network."""
    measured = {split: value for split, value in accuracies.items() if value is not None}
    if "train" in measured:
        return {"train": measured["train"]}
    return measured


def final_accuracies(final: dict[str, float | None]) -> dict[str, float | None]:
    """The ``<split>_accuracy`` entries of a result's final metrics, by split."""
    return {key.removesuffix("_accuracy"): value for key, value in final.items() if key.endswith("_accuracy")}


def targets_variance(targets: torch.Tensor) -> float:
    """Mean over outputs of the targets' population variance: the mean squared error of predicting their mean."""
    flat = targets.double().reshape(targets.shape[0], -1)
    return float(flat.var(dim=0, unbiased=False).mean())
