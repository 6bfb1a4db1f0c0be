"""Four softmax cases on mnist-5k in two groups; the one at lr=100 diverges."""

import pytest

from convbench import Case, grid

BASE = Case(model="softmax", optimizer="sgd", lr=0.5, dataset="mnist-5k", steps=30, eval_every=5,
            eval_train_samples=500)


@pytest.mark.parametrize("case", grid(BASE, lr=[0.1, 0.5]))
def test_sgd_rates(convergence, case):
    result = convergence(case)
    assert not result.diverged


@pytest.mark.parametrize("case", [BASE.replace(optimizer="adam", lr=0.01).param(), BASE.replace(lr=100.0).param()])
def test_mixed(convergence, case):
    result = convergence(case)
    assert result.diverged == (case.lr > 10)
