"""One case trained and one timed for throughput, each on the world sizes the session asks for (1 and 2)."""

import pytest

from convbench import Case

CASE = Case(model="softmax", dataset="mnist-5k", optimizer="sgd", lr=0.5, batch_size=100, steps=30,
            eval_every=15, eval_train_samples=200)


@pytest.mark.parametrize("case", [CASE.param()])
def test_scaling(convergence, case):
    assert not convergence(case).diverged


@pytest.mark.parametrize("case", [CASE.param()])  # the same case: throughput takes its own steps and rounds
def test_speed(throughput, case):
    assert throughput(case, steps=20, rounds=2, warmup_steps=2)["samples_per_s"] > 0
