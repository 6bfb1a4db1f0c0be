"""Which optimizer, batch size and learning rate train LeNet-5 and a 4-layer MLP on MNIST, and which never
learn? SGD with momentum 0.9, Adagrad and Adam at batch 64 and 256 and learning rates 0.05, 5e-4 and 5e-7
(lab report 002, tables 1-3: LeNet-5 for 20 epochs; its problem 1 trains the 4-layer MLP, 512-256-128).

What the lab found, and these tests check: a learning rate of 5e-7 leaves every optimizer where it
started (the report calls such a run **stalled**: its loss still at chance level, ln 10, and its accuracy
near 10%); Adam at 0.05 fails on LeNet (the lab: 10.7% accuracy); Adam at 5e-4 and SGD/Adagrad at 0.05
converge. Two outcomes depend on the budget: at full scale (20 epochs) Adam at 5e-7 creeps up (the lab:
62% at batch 64, 36% at 256) without converging, and SGD at 5e-4 converges slowly (the lab: "struggling
after 5 epochs" at batch 256); in the quick budget both are still stalled. In the quick budget the
other cells learn only slowly (Adagrad at 5e-4) or differ between seeds (SGD and Adagrad at 0.05 with
batch 256, the MLP with Adam at 0.05: some learn, some collapse back to chance or spike in the first
steps and are stopped as diverged). Of those the tests ask that a run either learned (its loss fell) or
was flagged (stalled or diverged): never a run that silently learned nothing. Checked on seeds 0, 1
and 2 at quick scale.

Scales: ``full`` (``--convbench-scale full``) trains 20 epochs on the full MNIST (``--convbench-download``
once). ``quick``, the default, trains 4 epochs (216 steps at batch 64, 52 at 256) on the offline
5,000-image MNIST sample, evaluating 500 training samples once per epoch.

What the report shows: one group per model and optimizer (``lenet5-adam``, ...), each the lab's table:
final test accuracy, final train loss, the stalled and diverged verdicts, per learning rate and batch
size; ``convbench report --pivot lr,batch_size:final_test_accuracy`` prints it as the lab's grid, and the
``heatmap`` figure draws it.
"""

import pytest

from convbench import Case, grid

MODELS = ["lenet5", "mlp4"]
OPTIMIZERS = ["momentum", "adagrad", "adam"]
LRS = [0.05, 5e-4, 5e-7]
BATCH_SIZES = [64, 256]

BASE = Case(model="lenet5", dataset="mnist", optimizer="momentum", lr=0.05, batch_size=64, epochs=20,
            scales={"quick": {"dataset": "mnist-5k", "epochs": 4, "eval_train_samples": 500}})


def _cases() -> list:
    params = []
    for model in MODELS:
        for optimizer in OPTIMIZERS:
            group = pytest.mark.benchmark(group=f"{model}-{optimizer}")
            for param in grid(BASE.replace(model=model, optimizer=optimizer), lr=LRS, batch_size=BATCH_SIZES):
                params.append(pytest.param(*param.values, id=param.id, marks=[group]))
    return params


def expected(case: Case, scale: str) -> str:
    """What the lab's results (and, in the quick budget, 3 seeds of it) say this case does.

    ``converges``: learns fast; ``stalls``: never leaves chance level; ``fails``: stalls or diverges;
    ``creeps``: learns a little, far from converged; ``learns or is flagged``: seed-dependent.
    """
    quick = scale == "quick"
    if case.lr == 5e-7:
        return "creeps" if case.optimizer == "adam" and not quick else "stalls"
    if (case.optimizer, case.lr) == ("adam", 5e-4):
        return "converges"
    if (case.optimizer, case.lr) == ("adam", 0.05) and case.model == "lenet5":
        return "fails"
    if (case.optimizer, case.lr) == ("momentum", 5e-4):
        return "stalls" if quick else "converges"
    if case.lr == 0.05 and case.optimizer in ("momentum", "adagrad") and (case.batch_size == 64 or not quick):
        return "converges"
    if case.optimizer == "adagrad" and not quick:
        return "converges"
    return "learns or is flagged"


@pytest.mark.parametrize("case", _cases())
def test_grid_cell_behaves_as_the_lab_found(convergence, case):
    result = convergence(case)
    outcome = expected(case, result.scale)
    why = (outcome, result.stop_reason, result.divergence, result.stall, result.final)
    if outcome == "stalls":
        assert result.stalled and result.stop_reason == "stalled", why
        assert result.stall.step == result.steps_planned  # judged at the end: every planned step was taken
    elif outcome == "converges":
        assert not result.diverged and not result.stalled, why
        assert result.final_train_loss < 0.7 * result.initial_train_loss, why
        if result.scale == "full":
            assert result.metric("test") > 0.9, why  # the lab: 92% to 99% for every such cell
    elif outcome == "fails":
        assert result.stalled or result.diverged, why
    elif outcome == "creeps":
        assert not result.diverged, why
        assert result.metric("test") < 0.9, why
    else:
        assert result.stalled or result.diverged or result.final_train_loss < result.initial_train_loss, why
