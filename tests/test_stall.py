"""The stalled verdict: a run that never learned is told apart from one that converged or diverged.

The rule's numbers (chance level, margins) are computed here from the data the runs use, never copied
from a run; the runs are small real trainings on the test registry's data sets.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from test_compare_gate import run as gate_entry

from convbench.case import Case
from convbench.cli import main
from convbench.data import DatasetSplits
from convbench.engine import run_in_this_process
from convbench.result import RunResult, Stall
from convbench.stall import ACCURACY_SHARE, LOSS_SHARE, ChanceLevel, judge, targets_variance

BLOBS = Case(model="softmax", dataset="blobs", optimizer="sgd", lr=0.1, batch_size=20, epochs=3)
# an MLP at a learning rate that moves no weight: it ends as it started, an untrained network
TOO_SMALL = Case(model="mlp", dataset="blobs", optimizer="sgd", lr=1e-9, batch_size=20, epochs=2,
                 dataset_kwargs={"num_classes": 10, "per_class": 200})
# softmax regression started at zero: its loss stays at ln C, yet its tiny logits learn to rank the classes
RANKS = BLOBS.replace(lr=1e-7, model_kwargs={"init": "zeros"})
# labels drawn independently of the inputs: nothing to learn, whatever the learning rate
SHUFFLED = BLOBS.replace(dataset="shuffled-blobs", epochs=2)
LINE = Case(model="linear_regression", dataset="line", optimizer="gd", lr=0.5, batch_size=None, steps=60,
            model_kwargs={"init": "zeros"})


def classification(classes: int) -> DatasetSplits:
    return DatasetSplits(train=(torch.zeros(classes, 2), torch.arange(classes)), num_outputs=classes)


# ----------------------------------------------------------------------------------- the rule
def test_chance_level_of_classification_is_a_uniform_guess():
    chance = ChanceLevel.of(classification(10))
    assert chance.loss == pytest.approx(math.log(10)) and chance.accuracy == pytest.approx(0.1)
    assert chance.accuracy_ceiling == pytest.approx(0.1 + ACCURACY_SHARE * 0.9)
    assert ChanceLevel.of(classification(1)) is None  # one class: nothing to guess


def test_chance_level_of_regression_is_the_loss_of_predicting_the_mean():
    targets = torch.tensor([[1.0, 10.0], [3.0, 10.0], [5.0, 40.0], [7.0, 40.0]])
    data = DatasetSplits(train=(torch.zeros(4, 1), targets), num_outputs=2, task="regression")
    chance = ChanceLevel.of(data)
    mean_prediction_mse = float(((targets - targets.mean(dim=0)) ** 2).mean())
    assert chance.loss == pytest.approx(mean_prediction_mse) and chance.accuracy is None
    assert targets_variance(targets) == pytest.approx(mean_prediction_mse)
    constant = DatasetSplits(train=(torch.zeros(3, 1), torch.ones(3, 1)), num_outputs=1, task="regression")
    assert ChanceLevel.of(constant) is None


@pytest.mark.parametrize(("loss_share", "accuracy", "stalled"), [
    (1.0, 0.1, True),  # exactly at chance
    (1.3, 0.1, True),  # worse than a guess, without diverging
    (LOSS_SHARE, 0.1, True),  # at the loss margin
    (LOSS_SHARE - 0.01, 0.1, False),  # learned a little: below the margin
    (1.0, 0.19, True),  # at the accuracy ceiling for 10 classes
    (1.0, 0.20, False),  # ranks inputs better than a guess
])
def test_margins(loss_share, accuracy, stalled):
    chance = ChanceLevel.of(classification(10))
    verdict = judge(chance, loss_share * chance.loss, {"train": accuracy, "test": 0.1}, step=7)
    assert (verdict is not None) is stalled
    if stalled:
        assert verdict.step == 7 and "ln 10" in verdict.reason and f"train {accuracy:.3f}" in verdict.reason


def test_train_accuracy_decides_else_every_held_out_one_and_unknown_numbers_are_not_judged():
    chance = ChanceLevel.of(classification(2))
    assert chance.accuracy_ceiling == pytest.approx(0.55)
    assert judge(chance, chance.loss, {"train": 0.6, "val": 0.5}, step=1) is None
    # a small held-out split scattering above the ceiling does not overrule the train split
    assert "train 0.500" in judge(chance, chance.loss, {"train": 0.5, "val": 0.6}, step=1).reason
    assert judge(chance, chance.loss, {"train": None, "val": 0.5, "test": 0.6}, step=1) is None
    assert judge(chance, chance.loss, {"train": None, "val": 0.5}, step=1) is not None
    assert "no accuracy" in judge(chance, chance.loss, {}, step=1).reason
    for loss in (None, math.nan, math.inf):
        assert judge(chance, loss, {}, step=1) is None  # non-finite losses are divergence's to judge
    assert judge(None, 5.0, {}, step=1) is None


# ----------------------------------------------------------------------------------- real runs
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_learning_rate_far_too_small_stalls(settings, seed):
    result = run_in_this_process(TOO_SMALL.replace(seed=seed), settings)
    assert result.stalled and not result.diverged, result.final
    assert result.stop_reason == "stalled" and result.steps == result.steps_planned
    assert result.stall.step == result.steps and "ln 10" in result.stall.reason


def test_a_loss_at_chance_with_accuracy_above_it_is_not_stalled(settings):
    result = run_in_this_process(RANKS, settings)
    assert result.final_train_loss == pytest.approx(math.log(4), rel=1e-3)  # the loss never left ln 4 ...
    assert result.final["train_accuracy"] > 0.5  # ... but the classes are ranked: it learned
    assert not result.stalled and result.stop_reason == "budget"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_labels_independent_of_the_inputs_stall(settings, seed):
    result = run_in_this_process(SHUFFLED.replace(seed=seed), settings)
    assert result.stalled, (result.final, result.final_train_loss)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_sane_case_is_not_stalled(settings, seed):
    result = run_in_this_process(BLOBS.replace(seed=seed), settings)
    assert not result.stalled and result.stall is None and result.stop_reason == "budget"


def test_a_diverged_case_is_diverged_not_stalled(settings):
    result = run_in_this_process(BLOBS.replace(model="nan_after", model_kwargs={"steps": 5}), settings)
    assert result.diverged and not result.stalled and result.stop_reason == "diverged"


def test_a_run_stopped_at_its_target_is_not_stalled(settings):
    result = run_in_this_process(BLOBS.replace(target_accuracy=0.5, stop_at_target=True, eval_every=5), settings)
    assert result.stop_reason == "target" and not result.stalled


def test_regression_stalls_below_five_percent_of_the_variance_explained(settings):
    learned = run_in_this_process(LINE, settings)
    frozen = run_in_this_process(LINE.replace(lr=1e-7), settings)
    assert not learned.stalled and learned.final_train_loss < 0.01
    assert frozen.stalled and "variance" in frozen.stall.reason


# ----------------------------------------------------------------------------------- recorded
def test_the_verdict_survives_the_json_and_older_results_leave_it_unknown():
    entry = gate_entry(0, stall=Stall(step=100, reason="at chance"))["extra_info"]["convbench"]
    back = RunResult.from_dict(json.loads(json.dumps(entry)))
    assert back.stalled is True and back.stall == Stall(step=100, reason="at chance")
    older = {key: value for key, value in entry.items() if key not in ("stalled", "stall")}
    older["schema"] = "convbench.result/2"
    assert RunResult.from_dict(older).stalled is None


def test_the_report_table_counts_stalled_seeds(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    stall = Stall(step=100, reason="at chance")
    entries = [gate_entry(seed, stall=stall if seed == 2 else None) for seed in range(3)]
    path = tmp_path / "out.json"
    path.write_text(json.dumps({"benchmarks": entries}))
    assert main(["report", str(path), "-o", str(tmp_path / "report"), "--no-figures"]) == 0
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in table[0].strip("|").split("|")]
    row = [cell.strip() for cell in table[2].strip("|").split("|")]
    assert dict(zip(header, row, strict=True))["verdict"] == "stalled 1/3"  # printed: one verdict cell
    with (tmp_path / "report" / "tables" / "g.csv").open(newline="", encoding="utf-8") as stream:
        (written,) = csv.DictReader(stream)
    assert written["stalled"] == "1/3"
