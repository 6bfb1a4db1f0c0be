"""Three ways a case ends: it passes; it trains and then fails its test; it fails before training (no such
optimizer), which leaves no measurements."""

import pytest

from convbench import Case

BASE = Case(model="softmax", optimizer="sgd", lr=0.5, dataset="mnist-5k", steps=10, eval_every=5,
            eval_train_samples=200)


@pytest.mark.parametrize("case", [BASE.param()])
def test_passes(convergence, case):
    assert not convergence(case).diverged


@pytest.mark.parametrize("case", [BASE.replace(lr=0.01).param()])
def test_fails_after_training(convergence, case):
    result = convergence(case)
    assert result.final["test_accuracy"] > 1, "a bar no accuracy can reach"


@pytest.mark.parametrize("case", [BASE.replace(optimizer="no_such_optimizer").param()])
def test_fails_before_training(convergence, case):
    convergence(case)
