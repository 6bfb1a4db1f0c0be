"""The lab's random search (filters, batch size, momentum, learning rate of the Deep MNIST CNN), which the
study farmed out to several machines with a hand-made master/worker scheme, as a `convbench search` space.

    convbench search examples/search/cnn_random_search.py --threads 1                 # one worker, here
    convbench search examples/search/cnn_random_search.py --storage postgresql://user:pw@db/convbench
                                                                                       # each of many machines
    convbench report .convbench/results.jsonl                                           # trials, figures, best Case
"""

from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from convbench import Case
from convbench.search import SearchSpace

BASE = Case(
    model="tf_cnn", optimizer="momentum", lr=0.01, dataset="mnist", batch_size=64, epochs=2,
    scales={"quick": {"dataset": "mnist-5k", "epochs": None, "steps": 60, "eval_every": 20,
                      "eval_train_samples": 500}},
)


def with_filters(base: Case, values: dict) -> Case:
    """One drawn filter count n gives the CNN's two conv layers n and 2n filters."""
    return base.replace(lr=values["lr"], batch_size=values["batch_size"],
                        optimizer_kwargs={"momentum": values["momentum"]},
                        model_kwargs={"filters": (values["filters"], 2 * values["filters"])})


SPACE = SearchSpace(
    base=BASE,
    params={
        "lr": FloatDistribution(1e-3, 0.3, log=True),
        "momentum": FloatDistribution(0.5, 0.99),
        "batch_size": CategoricalDistribution([32, 64, 128]),
        "filters": IntDistribution(4, 32, log=True),
    },
    case_for=with_filters,
    objective="val_accuracy",
    sampler="random",
    pruner="median",
    trials=20,
)
