"""The default evaluation schedule and train subset: cheap beside training, and still a curve."""

from __future__ import annotations

import pytest

from convbench.case import Case
from convbench.evaluation import MAX_EVALS, MIN_EVALS, eval_steps


@pytest.mark.parametrize(("steps_per_epoch", "total"),
                         [(54, 162), (35, 70), (35, 700), (859, 17180), (10, 10), (1, 60)])
def test_default_schedule_evaluates_once_per_epoch_within_min_and_max_counts(steps_per_epoch, total):
    steps = sorted(eval_steps(None, steps_per_epoch, total))
    assert steps[-1] == total  # always the last step
    epochs = total / steps_per_epoch
    assert len(steps) >= min(MIN_EVALS, total)  # a curve, however short the run
    assert len(steps) <= MAX_EVALS + 1
    if MIN_EVALS <= epochs <= MAX_EVALS:  # in between: once per epoch, on the epoch boundary
        assert steps[:-1] == list(range(steps_per_epoch, total, steps_per_epoch))[:len(steps) - 1]


def test_a_three_epoch_run_evaluates_four_times_not_ten():
    """The issue's MLP (162 steps, 54 per epoch) evaluated 10 times: its evaluation outweighed its training."""
    assert len(eval_steps(None, 54, 162)) == MIN_EVALS == 4


def test_train_metrics_default_to_a_thousand_fixed_samples():
    assert Case(model="mlp", optimizer="sgd", lr=0.1, epochs=1).eval_train_samples == 1_000
