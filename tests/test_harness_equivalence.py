"""convbench trains the same model to the same accuracy as an independent plain PyTorch loop."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from convbench.case import Case
from convbench.engine import RunSettings, run_in_this_process
from convbench_plugins.datasets import mnist_5k


def plain_pytorch_softmax(seed: int, lr: float, batch_size: int, epochs: int) -> float:
    """The loop a lab script would write: no convbench code involved beyond the data."""
    data = mnist_5k()
    (x, y), (x_test, y_test) = data.train, data.test
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    order = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        permutation = torch.randperm(x.shape[0], generator=order)
        for i in range(x.shape[0] // batch_size):
            index = permutation[i * batch_size:(i + 1) * batch_size]
            loss = F.cross_entropy(model(x[index]), y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        return (model(x_test).argmax(1) == y_test).float().mean().item()


def test_accuracy_matches_a_plain_pytorch_loop(registry):
    for seed in (0, 1):
        plain = plain_pytorch_softmax(seed, lr=0.5, batch_size=100, epochs=3)
        case = Case(model="softmax", dataset="mnist-5k", optimizer="sgd", lr=0.5, batch_size=100, epochs=3,
                    seed=seed)
        harness = run_in_this_process(case, RunSettings(registry=registry)).final["test_accuracy"]
        assert plain > 0.8
        assert abs(harness - plain) <= 0.015, (seed, harness, plain)  # 1,000 test images: ~1% noise
