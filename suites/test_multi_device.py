"""The HPC exercise: train the Deep MNIST CNN on 1, 2 and 4 devices, strong and weak scaling, and
explain the times ("why is 4 GPUs hardly faster than 1?").

Strong scaling keeps the global batch and splits it over the devices (the same training, in less time if
the devices help); weak scaling gives every device the whole batch, so the global batch, and the work
per step, grows with the number of devices (more samples per second if the devices help).

Scales: ``full`` (``--convbench-scale full``) uses the lab's settings (lab report 001, exercise 4: the
tuned model of its table 4.6) on the full MNIST (``--convbench-download`` once): Adam at 1e-3 with
TensorFlow's exponential decay 0.95 per epoch, batch 150, dropout 0.5, 5,000 steps; run it on a node
with 4 GPUs (nccl). ``quick``, the default, trains 40 steps of batch 64 (weak scaling: 20 steps) on the
offline 5,000-image MNIST sample; there the "devices" are gloo processes sharing the CPU cores, so
these tests check behaviour (every rank took every step, the loss falls, the global batch is what the
scaling mode says), never speedups.

What the report shows: ``convbench report`` turns these runs into the scaling section
(``tables/scaling.*``: per world size the train time, the ideal time, the overhead beyond it, start-up,
speedup and efficiency, with implausible rows flagged, and ``figures/scaling.png``), one family for
strong and one for weak scaling, and the throughput table (samples/s per round, speedup and efficiency
against one device).
"""

import pytest

from convbench import Case

WORLD_SIZES = [1, 2, 4]
#: MNIST's 55,000 training images in batches of 150: the lab decays the learning rate per epoch.
STEPS_PER_EPOCH = 55_000 // 150

CNN = Case(
    model="tf_cnn", dataset="mnist", optimizer="adam", lr=1e-3, batch_size=150, steps=5000,
    scheduler="tf_exponential", scheduler_kwargs={"decay_rate": 0.95, "decay_steps": STEPS_PER_EPOCH},
    scales={"quick": {"dataset": "mnist-5k", "steps": 40, "batch_size": 64, "scheduler": None,
                      "scheduler_kwargs": {}, "eval_every": 20, "eval_train_samples": 500}},
)
# Weak scaling does world-size times the work per step: at quick scale half the steps keep 4 processes
# on 2 cores affordable, and the loss still falls clearly by step 20.
WEAK = CNN.replace(scaling="weak", scales={"quick": {**CNN.scales["quick"], "steps": 20}})


def assert_every_rank_took_every_step(result, case):
    assert result.stop_reason == "budget", (result.stop_reason, result.divergence, result.stall)
    assert result.world_size == case.world_size
    # ranks step in lockstep (every step's gradient is all-reduced): a rank that fell behind or stopped
    # would have hung or failed the case, and the step count is the slowest rank's
    assert result.steps == result.steps_planned


def strong(world_size: int):
    # labelled: a generated id would name the full scale's scheduler, which the quick scale leaves out
    return CNN.replace(world_size=world_size, label=f"tf_cnn-adam-w{world_size}").param()


@pytest.mark.parametrize("case", [strong(n) for n in WORLD_SIZES])
def test_cnn_trains_on_every_world_size(convergence, case):
    """Strong scaling: N devices train on the same global batch as one."""
    result = convergence(case)
    assert_every_rank_took_every_step(result, case)
    assert not result.diverged and not result.stalled
    assert result.final_train_loss < 0.7 * result.initial_train_loss
    assert result.samples == result.steps * result.case["batch_size"]  # the global batch stays the batch


@pytest.mark.parametrize("case", [WEAK.replace(world_size=n, label=f"tf_cnn-adam-w{n}-weak").param()
                                  for n in WORLD_SIZES])
def test_cnn_weak_scaling_grows_the_global_batch(convergence, case):
    """Weak scaling: every device takes the whole batch, so N devices see N times the samples per step."""
    result = convergence(case)
    assert_every_rank_took_every_step(result, case)
    assert not result.diverged and not result.stalled
    assert result.final_train_loss < 0.7 * result.initial_train_loss
    assert result.samples == result.steps * result.case["batch_size"] * case.world_size


@pytest.mark.parametrize("case", [strong(n) for n in WORLD_SIZES])
def test_cnn_training_throughput(throughput, case):
    info = throughput(case, steps=10, rounds=3, warmup_steps=2)
    batch = info["case"]["batch_size"]
    assert info["world_size"] == case.world_size
    assert info["samples_per_round"] == 10 * batch  # strong scaling: the global batch stays the batch
    assert info["round_s"]["min"] > 0 and info["samples_per_s"] > 0
