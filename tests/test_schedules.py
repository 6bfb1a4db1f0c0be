"""LR schedulers, built directly and at their intervals through the engine; linear warmup; parameter
trajectories."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from error_text import one_line

from convbench.case import Case
from convbench.engine import run_in_this_process
from convbench.errors import CaseError, ComponentArgumentError
from convbench.schedule import LRControl

# blobs: 400 training samples; batch 20 -> 20 steps per epoch. One curve point per step.
BASE = Case(model="softmax", dataset="blobs", optimizer="sgd", lr=0.1, batch_size=20, epochs=3,
            max_curve_points=1000)
SPE = 20


def lr_per_step(settings, **changes) -> list[float]:
    """The learning rate each optimizer step used, in order."""
    result = run_in_this_process(BASE.replace(**changes), settings)
    curve = result.curves["train"]
    assert curve["step"] == list(range(1, result.steps + 1))
    return curve["lr"]


def test_every_catalogue_scheduler_is_registered_with_its_interval(registry):
    expected = {"step": "epoch", "multistep": "epoch", "exponential": "epoch", "tf_exponential": "step",
                "reduce_on_plateau": "eval", "cyclic": "step", "cosine": "step", "cosine_restarts": "step",
                "one_cycle": "step"}
    for name, interval in expected.items():
        assert registry.get("scheduler", name).options["interval"] == interval, name


def test_per_epoch_step_schedule(settings):
    lrs = lr_per_step(settings, scheduler="step", scheduler_kwargs={"step_size": 1, "gamma": 0.5})
    assert lrs == pytest.approx([0.1 * 0.5 ** (k // SPE) for k in range(3 * SPE)])


def test_multistep_schedule(settings):
    lrs = lr_per_step(settings, scheduler="multistep", scheduler_kwargs={"milestones": [2]})
    assert lrs == pytest.approx([0.1] * (2 * SPE) + [0.01] * SPE)


def test_tf_exponential_decay_per_step_and_staircase(settings):
    smooth = lr_per_step(settings, scheduler="tf_exponential", scheduler_kwargs={"decay_rate": 0.5, "decay_steps": 10})
    assert smooth == pytest.approx([0.1 * 0.5 ** (k / 10) for k in range(3 * SPE)])
    stairs = lr_per_step(settings, scheduler="tf_exponential",
                         scheduler_kwargs={"decay_rate": 0.5, "decay_steps": 10, "staircase": True})
    assert stairs == pytest.approx([0.1 * 0.5 ** (k // 10) for k in range(3 * SPE)])


def test_cosine_anneals_over_the_whole_run(settings):
    total = 3 * SPE
    lrs = lr_per_step(settings, scheduler="cosine")
    assert lrs == pytest.approx([0.05 * (1 + math.cos(math.pi * k / total)) for k in range(total)], abs=1e-9)


def test_cosine_with_warm_restarts(settings):
    lrs = lr_per_step(settings, scheduler="cosine_restarts", scheduler_kwargs={"T_0": 10})
    expected = [0.05 * (1 + math.cos(math.pi * (k % 10) / 10)) for k in range(3 * SPE)]
    assert lrs == pytest.approx(expected, abs=1e-9)


def test_one_cycle_rises_to_the_case_lr_then_anneals(settings):
    lrs = lr_per_step(settings, scheduler="one_cycle")
    peak = lrs.index(max(lrs))
    assert max(lrs) == pytest.approx(0.1)  # max_lr defaults to the case's lr
    assert lrs[0] == pytest.approx(0.1 / 25)  # torch's div_factor
    assert peak == round(0.3 * 60) - 1  # pct_start 0.3 of the 60 steps
    assert lrs[-1] < lrs[0]


def test_cyclic_triangle(settings):
    lrs = lr_per_step(settings, scheduler="cyclic",
                      scheduler_kwargs={"base_lr": 0.01, "max_lr": 0.09, "step_size_up": 4},
                      optimizer="momentum")
    triangle = [0.01 + 0.08 * (1 - abs(k % 8 - 4) / 4) for k in range(3 * SPE)]
    assert lrs == pytest.approx(triangle)


def test_reduce_on_plateau_reacts_to_the_monitored_metric(registry):
    params = [torch.nn.Parameter(torch.zeros(1))]
    optimizer = torch.optim.SGD(params, lr=1.0)
    plateau = registry.get("scheduler", "reduce_on_plateau").build(
        {"patience": 1, "factor": 0.5}, context={"optimizer": optimizer})
    control = LRControl(optimizer, plateau, "eval")
    for loss in (1.0, 0.5, 0.6, 0.7, 0.8):  # improves once, then stalls
        control.after_eval({"val_loss": loss, "val_accuracy": 0.5})
    # stall 1 (0.6) is within patience; stall 2 (0.7) halves; stall 3 resets then counts again
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5)
    control.after_eval({"val_loss": 0.9, "val_accuracy": 0.5})
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.25)


def test_reduce_on_plateau_on_accuracy_maximises(registry):
    params = [torch.nn.Parameter(torch.zeros(1))]
    optimizer = torch.optim.SGD(params, lr=1.0)
    plateau = registry.get("scheduler", "reduce_on_plateau").build(
        {"monitor": "val_accuracy", "patience": 0, "factor": 0.5}, context={"optimizer": optimizer})
    plateau.step({"val_accuracy": 0.5})
    plateau.step({"val_accuracy": 0.6})  # rising accuracy is improvement: no change
    assert optimizer.param_groups[0]["lr"] == 1.0
    plateau.step({"val_accuracy": 0.55})
    assert optimizer.param_groups[0]["lr"] == 0.5


def test_reduce_on_plateau_runs_in_the_engine_after_evaluations(settings):
    # at lr 1e-4 no evaluation improves the val loss by the required 50%: every one is a plateau
    result = run_in_this_process(BASE.replace(lr=1e-4, scheduler="reduce_on_plateau", eval_every=5,
                                   scheduler_kwargs={"patience": 0, "factor": 0.5, "threshold": 0.5}), settings)
    lrs = result.curves["eval"]["lr"]
    assert lrs[0] == 1e-4 and lrs[-1] < lrs[0] / 100
    assert all(later <= earlier for earlier, later in itertools.pairwise(lrs))


def test_reduce_on_plateau_needs_the_monitored_split(settings):
    with pytest.raises(CaseError, match="monitors 'val_loss', but dataset 'line' has no val split"):
        run_in_this_process(Case(model="softmax", dataset="line", optimizer="sgd", lr=0.1, batch_size=20, steps=5,
                      scheduler="reduce_on_plateau"), settings)


def test_reduce_on_plateau_rejects_a_malformed_monitor(registry):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ComponentArgumentError, match="monitor='val_los' is invalid"):
        registry.get("scheduler", "reduce_on_plateau").build({"monitor": "val_los"}, context={"optimizer": optimizer})


@pytest.mark.parametrize(("name", "kwargs", "message"), [
    ("tf_exponential", {"decay_rate": 0.5, "decay_steps": 0}, "decay_steps=0 must be a positive integer"),
    ("step", {}, "step_size"),  # a required argument missing
    ("exponential", {}, "gamma"),
    ("cosine_restarts", {}, "T_0"),
])
def test_bad_scheduler_arguments_are_one_line_errors(registry, name, kwargs, message):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ComponentArgumentError, match=message) as info:
        registry.get("scheduler", name).build(kwargs, context={"optimizer": optimizer},
                                              optional_context={"total_steps": 10})
    assert repr(name) in one_line(info)


def test_scheduler_unknown_kwarg_suggests_the_right_one(registry):
    with pytest.raises(ComponentArgumentError) as exc_info:
        registry.get("scheduler", "step").build({"step_sise": 3}, context={"optimizer": sgd_for_scheduler()})
    message = one_line(exc_info)
    assert "'step_sise'" in message
    assert "did you mean 'step_size'" in message


# ---------------------------------------------------------------- built directly, stepped by hand
def sgd_for_scheduler(lr=0.1):
    return torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)


def lrs_over_steps(scheduler, opt, k):
    seen = []
    for _ in range(k):
        opt.step()
        scheduler.step()
        seen.append(opt.param_groups[0]["lr"])
    return seen


@pytest.mark.parametrize(("kwargs", "gamma"), [({"step_size": 3}, 0.1), ({"step_size": 4, "gamma": 0.5}, 0.5)])
def test_step_scheduler(registry, kwargs, gamma):
    opt = sgd_for_scheduler(0.2)
    sched = registry.get("scheduler", "step").build(kwargs, context={"optimizer": opt})
    assert isinstance(sched, torch.optim.lr_scheduler.StepLR)
    seen = lrs_over_steps(sched, opt, 10)
    expected = [0.2 * gamma ** (k // kwargs["step_size"]) for k in range(1, 11)]
    assert seen == pytest.approx(expected, rel=1e-9)


def test_exponential_scheduler(registry):
    opt = sgd_for_scheduler(0.2)
    sched = registry.get("scheduler", "exponential").build({"gamma": 0.8}, context={"optimizer": opt})
    assert isinstance(sched, torch.optim.lr_scheduler.ExponentialLR)
    seen = lrs_over_steps(sched, opt, 6)
    assert seen == pytest.approx([0.2 * 0.8**k for k in range(1, 7)], rel=1e-9)


# ----------------------------------------------------------------------------------- warmup
def test_linear_warmup_alone(settings):
    lrs = lr_per_step(settings, warmup_steps=10, warmup_start_factor=0.2)
    assert lrs[:10] == pytest.approx([0.1 * (0.2 + 0.8 * k / 10) for k in range(10)])
    assert lrs[10:] == pytest.approx([0.1] * 50)


@pytest.mark.parametrize(("scheduler", "kwargs", "scheduled"), [
    ("step", {"step_size": 1, "gamma": 0.5}, lambda k: 0.1 * 0.5 ** (k // SPE)),
    ("cosine", {}, lambda k: 0.05 * (1 + math.cos(math.pi * k / 60))),
])
def test_warmup_multiplies_any_schedule_without_disturbing_it(settings, scheduler, kwargs, scheduled):
    lrs = lr_per_step(settings, scheduler=scheduler, scheduler_kwargs=kwargs, warmup_steps=30)
    expected = [scheduled(k) * min(1.0, k / 30) for k in range(60)]
    assert lrs == pytest.approx(expected, abs=1e-9)


def test_warmup_changes_what_the_optimizer_applies(settings):
    # full batch, warmup starting at 0: the first step moves nothing, so the second sees the same loss
    full_batch = BASE.replace(batch_size=None, epochs=None, steps=2, max_curve_points=2)
    result = run_in_this_process(full_batch.replace(warmup_steps=10), settings)
    plain = run_in_this_process(full_batch, settings)
    first, second = result.curves["train"]["loss"]
    assert first == pytest.approx(second, rel=1e-6)
    assert plain.curves["train"]["loss"][1] < plain.curves["train"]["loss"][0]


@pytest.mark.parametrize(("changes", "message"), [
    ({"warmup_steps": -1}, "invalid warmup_steps=-1"),
    ({"warmup_start_factor": 1.5}, "invalid warmup_start_factor=1.5"),
])
def test_invalid_warmup_settings(changes, message):
    with pytest.raises(CaseError, match=message):
        BASE.replace(**changes)


# ----------------------------------------------------------------------------- trajectories
def test_linear_regression_records_the_w_and_b_trajectory(settings):
    case = Case(model="linear_regression", dataset="line", optimizer="sgd", lr=0.5, batch_size=20, epochs=20,
                model_kwargs={"init": "zeros"})
    result = run_in_this_process(case, settings)
    params = result.curves["params"]
    assert params["step"][0] == 0 and params["step"][1:] == result.curves["train"]["step"]
    assert params["W"][0] == 0.0 and params["b"][0] == 0.0
    assert len(params["W"]) == len(params["b"]) == len(params["step"])
    assert params["W"][-1] == pytest.approx(2.0, abs=0.05) and params["b"][-1] == pytest.approx(0.5, abs=0.05)
    assert abs(params["W"][-1] - 2.0) < abs(params["W"][len(params["W"]) // 10] - 2.0)  # it moved towards W


def test_models_without_a_trajectory_record_none(settings):
    assert "params" not in run_in_this_process(BASE.replace(epochs=1), settings).curves
