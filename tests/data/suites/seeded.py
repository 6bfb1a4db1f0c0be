"""Four configurations (lr x batch_size) with two seeds each and a target, and one single-seed case apart."""

import pytest

from convbench import Case, grid

BASE = Case(model="softmax", optimizer="sgd", lr=0.5, dataset="mnist-5k", steps=20, eval_every=5,
            eval_train_samples=500, target_accuracy=0.5)


@pytest.mark.parametrize("case", grid(BASE, lr=[0.1, 0.5], batch_size=[50, 100], seed=[0, 1]))
def test_grid(convergence, case):
    convergence(case)


@pytest.mark.parametrize("case", [BASE.replace(optimizer="adam", lr=0.01).param()])
def test_single(convergence, case):
    convergence(case)
