"""Something for every figure kind: an lr x batch_size grid with two seeds and a target; sgd and adam at two
learning rates with a higher target (one run misses it); a linear regression that records its W and b."""

import pytest

from convbench import Case, grid

BASE = Case(model="softmax", optimizer="sgd", lr=0.1, dataset="mnist-5k", steps=20, eval_every=5,
            eval_train_samples=200)


@pytest.mark.parametrize("case", grid(BASE.replace(target_accuracy=0.6), lr=[0.05, 0.5], batch_size=[32, 64],
                                      seed=[0, 1]))
def test_grid(convergence, case):
    convergence(case)


@pytest.mark.parametrize("case", grid(BASE.replace(target_accuracy=0.7), optimizer=["sgd", "adam"],
                                      lr=[0.001, 0.3]))
def test_optimizers(convergence, case):
    convergence(case)


@pytest.mark.parametrize("case", [Case(model="linear_regression", optimizer="sgd", lr=0.1,
                                       dataset="linear-regression", steps=20, eval_every=5).param()])
def test_linear(convergence, case):
    convergence(case)
