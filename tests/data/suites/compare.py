"""Two single-seed cases, one case with three seeds and one that diverges, all with a target."""

import pytest

from convbench import Case, grid

BASE = Case(model="softmax", optimizer="sgd", lr=0.5, dataset="mnist-5k", steps=20, eval_every=5,
            eval_train_samples=500, target_accuracy=0.5)


@pytest.mark.parametrize("case", grid(BASE, lr=[0.1, 0.5]))
def test_single(convergence, case):
    convergence(case)


@pytest.mark.parametrize("case", grid(BASE, seed=[0, 1, 2]))
def test_seeded(convergence, case):
    convergence(case)


@pytest.mark.parametrize("case", [BASE.replace(lr=100.0).param()])
def test_diverging(convergence, case):
    convergence(case)
