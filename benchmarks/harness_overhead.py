"""How much time does convbench add to a training run? Prints ratios measured side by side.

    python benchmarks/harness_overhead.py [--repeats 3]

For each model, a plain PyTorch loop (the one a lab script would write) and convbench's engine train
the same data with the same batches, alternately, several times; the script prints the median train
time of each and their ratio. convbench's time is its synchronised training time (evaluation is timed
separately and excluded, as the plain loop does no evaluation); a ratio near 1.00 means the harness
adds nothing to the hot path. Timing claims live here, not in pass/fail tests.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from convbench.case import Case
from convbench.engine import PreparedRun, RunSettings
from convbench.registry import get_registry


def plain_loop(case: Case) -> float:
    registry = get_registry()
    data = registry.get("dataset", case.dataset).build({})
    x, y = data.train
    torch.manual_seed(case.seed)
    model = registry.get("model", case.model).build({}, context={"input_shape": data.input_shape,
                                                                 "num_outputs": data.num_outputs})
    optimizer = torch.optim.SGD(model.parameters(), lr=case.lr)
    order = torch.Generator().manual_seed(case.seed)
    steps_per_epoch = x.shape[0] // case.batch_size
    started = time.perf_counter()
    for _ in range(int(case.epochs)):
        permutation = torch.randperm(x.shape[0], generator=order)
        for i in range(steps_per_epoch):
            index = permutation[i * case.batch_size:(i + 1) * case.batch_size]
            loss = F.cross_entropy(model(x[index]), y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return time.perf_counter() - started


def convbench_loop(case: Case) -> float:
    return PreparedRun(case, RunSettings()).run().timing.train_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cases = [
        Case(model="softmax", dataset="mnist-5k", optimizer="sgd", lr=0.5, batch_size=100, epochs=20),
        Case(model="lenet5", dataset="mnist-5k", optimizer="sgd", lr=0.05, batch_size=50, epochs=2),
        Case(model="tf_cnn", dataset="mnist-5k", optimizer="sgd", lr=0.05, batch_size=50, epochs=1),
    ]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.repeats} repeats each")
    print(f"{'model':<10} {'plain s':>9} {'convbench s':>12} {'ratio':>7}")
    for case in cases:
        plain_loop(case), convbench_loop(case)  # warm-up: data load, allocator, kernels
        plain, harness = [], []
        for _ in range(args.repeats):
            plain.append(plain_loop(case))
            harness.append(convbench_loop(case))
        p, h = statistics.median(plain), statistics.median(harness)
        print(f"{case.model:<10} {p:>9.3f} {h:>12.3f} {h / p:>7.3f}")


if __name__ == "__main__":
    main()
