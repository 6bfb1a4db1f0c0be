"""How many convolution filters does the CNN need? The Deep MNIST CNN with 1 to 256 filters, its error
against epochs and against training time (lab report 003, scenario 4: "1-2 filters perform badly, more
is better up to 128-256 per epoch, but in 10 seconds of training 32-64 filters are best").

The sweep varies ``tf_cnn``'s ``filters=(n, 2n)``: n filters in the first convolution and twice as many in
the second, the 32/64 proportion of the original, so n = 32 is the original model. Training is the lab's
best SGD setting (scenario 3: learning rate 0.1, momentum 0.5; batch 100).

Scales: ``full`` (``--convbench-scale full``) trains n = 1, 2, 4, ..., 256 for 5 epochs on the full MNIST
(``--convbench-download`` once; the report does not give its epochs); n = 64, 128 and 256 need a GPU.
``quick``, the default, trains n = 1 to 32 for 2 epochs (70 steps) on the offline 5,000-image MNIST
sample with a 128-unit dense layer (the full model's 1024 would cost more than the narrow convolutions);
n = 64 to 256 are skipped there (each would cost more than the whole quick sweep).

What the report shows: one table (final and best test accuracy, final train loss, train time, samples/s
per filter count) and the loss and accuracy curves of every filter count in one figure: against epochs
(``convbench report --x epoch``) and against training time (``--x time``), which is where the cost of
the wide models shows.
"""

import pytest

from convbench import Case

FILTERS = [1, 2, 4, 8, 16, 32, 64, 128, 256]
QUICK_FILTERS = [1, 2, 4, 8, 16, 32]
#: Up to this many filters the lab saw the network "perform badly": it learns, but not reliably fast.
FEW = 2
QUICK_HIDDEN = 128

BASE = Case(model="tf_cnn", dataset="mnist", optimizer="sgd", optimizer_kwargs={"momentum": 0.5}, lr=0.1,
            batch_size=100, epochs=5)


def sweep_case(n: int) -> Case:
    return BASE.replace(
        model_kwargs={"filters": (n, 2 * n)}, label=f"tf_cnn-filters{n}",
        scales={"quick": {"dataset": "mnist-5k", "epochs": 2, "eval_every": 35, "eval_train_samples": 500,
                          "model_kwargs": {"filters": (n, 2 * n), "hidden": QUICK_HIDDEN}}},
    )


FULL_ONLY = pytest.mark.skipif("config.getoption('convbench_scale') == 'quick'",
                               reason="quick scale sweeps 1 to 32 filters; 64 and more run at full scale")
CASES = [sweep_case(n).param(*([] if n in QUICK_FILTERS else [FULL_ONLY])) for n in FILTERS]
#: Final train loss per filter count, for the trend across the sweep (the last test).
FINAL_LOSS: dict[int, float] = {}


@pytest.mark.parametrize("case", CASES)
def test_every_filter_count_learns(convergence, case):
    result = convergence(case)
    n = case.model_kwargs["filters"][0]
    assert not result.diverged, result.divergence
    assert result.final_train_loss < result.initial_train_loss
    if n > FEW:
        assert not result.stalled, result.stall
        assert result.final_train_loss < 0.5 * result.initial_train_loss
    FINAL_LOSS[n] = result.final_train_loss


def test_more_filters_reach_a_lower_training_loss():
    """The study's answer per epoch: the widest model trained ends well below the 1-filter one."""
    if 1 not in FINAL_LOSS or len(FINAL_LOSS) < 2:
        pytest.skip(f"needs the 1-filter case and a wider one trained in this session; have {sorted(FINAL_LOSS)}")
    widest = max(FINAL_LOSS)
    assert FINAL_LOSS[widest] < 0.75 * FINAL_LOSS[1], FINAL_LOSS
