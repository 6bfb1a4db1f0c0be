"""How much time does convbench add to a training run, and how long does a user wait for one case?

    python -m benchmarks --only harness [--repeats 5]

For each model a plain PyTorch loop (the one a lab script would write: seed, build, shuffle, step) and
convbench's engine train the same data with the same batches and seed, alternately. The loop draws its
batches as convbench does (one generator seeded with the case's seed, a new permutation per epoch,
the remainder dropped), so the two runs must give identical losses, step for step: the benchmark
checks it. Like a lab script, the loop evaluates as it goes: at the same steps as convbench, the same
splits in batches of the same size, with its clock paused (convbench times evaluation apart too). Both
times are training alone, and both loops pay what evaluating does to the steps after it (the caches it
evicts: 3% of the softmax's train time was measured here), so a ratio near 1.00 means the harness adds
nothing to the hot path.

The same runs also give what a user waits for per case at default settings: preparation (data, model),
training, evaluations, telemetry and writing the JSON, and evaluation's share of the training time.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from benchmarks.timing import Comparison, Side, alternate, load_1min
from convbench.case import Case
from convbench.engine import PreparedRun, RunSettings
from convbench.evaluation import eval_steps
from convbench.registry import get_registry

#: The three kinds of model the reference studies train; softmax at its study settings, the others shorter.
CASES = [
    Case(model="softmax", optimizer="sgd", lr=0.5, batch_size=100, epochs=20, max_curve_points=10_000),
    Case(model="mlp", optimizer="adam", lr=1e-3, batch_size=64, epochs=3, max_curve_points=10_000),
    Case(model="lenet5", optimizer="sgd", lr=0.05, batch_size=50, epochs=2, max_curve_points=10_000),
]
TINY = {"epochs": None, "steps": 20}
OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}


@dataclass
class PlainRun:
    train_s: float
    losses: list[float]
    final_test_accuracy: float


def plain_loop(case: Case) -> PlainRun:
    """The hand-written loop: the data set's tensors, the registered model, ``torch.optim``, index-slice
    batches, and an evaluation of every split at convbench's evaluation steps, off the clock."""
    registry = get_registry()
    data = registry.get("dataset", case.dataset).build({})
    x, y = data.train
    torch.manual_seed(case.seed)
    model = registry.get("model", case.model).build({}, context={"input_shape": data.input_shape,
                                                                 "num_outputs": data.num_outputs})
    optimizer = OPTIMIZERS[case.optimizer](model.parameters(), lr=case.lr)
    order = torch.Generator().manual_seed(case.seed)
    per_epoch = x.shape[0] // case.batch_size
    total = case.steps if case.steps is not None else round(case.epochs * per_epoch)
    evaluate_at = eval_steps(case.eval_every, per_epoch, total)
    subset = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))[:case.eval_train_samples]
    splits = {"train": (x[subset], y[subset]), "val": data.val, "test": data.test}

    def evaluate() -> dict[str, float]:
        model.eval()
        accuracy = {}
        with torch.no_grad():
            for name, split in splits.items():
                if split is None:
                    continue
                inputs, targets = split
                loss_sum, correct = 0.0, 0
                for start in range(0, inputs.shape[0], case.eval_batch_size):
                    outputs = model(inputs[start:start + case.eval_batch_size])
                    batch_targets = targets[start:start + case.eval_batch_size]
                    loss_sum += F.cross_entropy(outputs, batch_targets, reduction="sum").item()
                    correct += int((outputs.argmax(dim=1) == batch_targets).sum())
                accuracy[name] = correct / inputs.shape[0]
        model.train()
        return accuracy

    metrics = evaluate()
    losses = []
    train_s = 0.0
    started = time.perf_counter()
    while len(losses) < total:
        permutation = torch.randperm(x.shape[0], generator=order)
        for i in range(min(per_epoch, total - len(losses))):
            index = permutation[i * case.batch_size:(i + 1) * case.batch_size]
            loss = F.cross_entropy(model(x.index_select(0, index)), y.index_select(0, index))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
            if len(losses) in evaluate_at:
                train_s += time.perf_counter() - started
                metrics = evaluate()
                started = time.perf_counter()
    return PlainRun(train_s, [float(loss) for loss in losses], metrics.get("test", math.nan))


@dataclass
class HarnessRun:
    """A convbench run at default settings (telemetry on), timed end to end as a user waits for it."""

    train_s: float
    losses: list[float]
    wall_s: float
    setup_s: float
    eval_s: float
    json_s: float
    evaluations: int
    final_test_accuracy: float | None

    @property
    def other_s(self) -> float:
        """Telemetry start and stop, recording, verdicts: the wall time not in the parts measured."""
        return self.wall_s - self.setup_s - self.train_s - self.eval_s - self.json_s


def convbench_run(case: Case, settings: RunSettings | None = None) -> HarnessRun:
    started = time.perf_counter()
    prepared = PreparedRun(case, settings or RunSettings())
    result = prepared.run()
    json_started = time.perf_counter()
    json.dumps(result.to_dict())
    ended = time.perf_counter()
    timing = result.timing
    return HarnessRun(train_s=timing.train_s, losses=result.curves["train"]["loss"], wall_s=ended - started,
                      setup_s=timing.setup_s, eval_s=timing.eval_s, json_s=ended - json_started,
                      evaluations=len(result.curves["eval"]["step"]),
                      final_test_accuracy=result.final.get("test_accuracy"))


def run(repeats: int, tiny: bool = False) -> list[Comparison]:
    rows = []
    for case in CASES:
        case = case.replace(**TINY) if tiny else case
        load_start = load_1min()
        plains: list[PlainRun] = []
        harness: list[HarnessRun] = []

        def plain(case: Case = case, plains: list[PlainRun] = plains) -> float:
            plains.append(plain_loop(case))
            return plains[-1].train_s

        def ours(case: Case = case, harness: list[HarnessRun] = harness) -> float:
            harness.append(convbench_run(case))
            return harness[-1].train_s

        a, b = alternate(plain, ours, repeats, ("plain loop", "convbench"))
        identical = all(p.losses == h.losses for p, h in zip(plains, harness, strict=True))
        same_accuracy = all(p.final_test_accuracy == h.final_test_accuracy
                            for p, h in zip(plains, harness, strict=True))
        load = (load_start, load_1min())
        rows.append(Comparison("harness", case.model, "train s", a, b, goal="ratio <= 1.02",
                               goal_met=b.median / a.median <= 1.02,
                               extra={"identical_losses": identical, "identical_test_accuracy": same_accuracy,
                                      "steps": len(plains[0].losses)}, load=load))
        timed = harness[1:]  # the warm-up run holds the first data load
        parts = {name: Side(name, [getattr(h, name) for h in timed])
                 for name in ("wall_s", "setup_s", "train_s", "eval_s", "json_s", "other_s")}
        evaluations = timed[0].evaluations
        share = Side("eval share", [h.eval_s / h.train_s for h in timed])
        rows.append(Comparison("harness", case.model, "case wall s", parts["train_s"], parts["wall_s"],
                               extra={name: side.median for name, side in parts.items()} | {"evaluations": evaluations},
                               load=load))
        rows.append(Comparison("harness", case.model, "eval s", parts["train_s"], parts["eval_s"],
                               goal="eval <= 10% of train", goal_met=share.median <= 0.10,
                               extra={"eval_every": "default", "evaluations": evaluations,
                                      "eval_train_samples": case.eval_train_samples}, load=load))
    return rows
