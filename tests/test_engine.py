"""The training loop: convergence, divergence, targets, curves, timing, isolation between cases."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from convbench.case import Case
from convbench.engine import PreparedRun, RunSettings, run_in_this_process
from convbench.errors import CaseError, ConvbenchError, UnknownComponentError

BLOBS = Case(model="softmax", dataset="blobs", optimizer="sgd", lr=0.1, batch_size=20, epochs=3)


def test_loss_falls_and_accuracy_rises_on_a_learnable_problem(settings):
    result = run_in_this_process(BLOBS, settings)
    assert not result.diverged
    assert result.final_train_loss < 0.5 * result.initial_train_loss
    evals = result.curves["eval"]
    assert evals["test_accuracy"][-1] > evals["test_accuracy"][0] + 0.3
    assert result.final["test_accuracy"] == evals["test_accuracy"][-1]
    assert result.best["test_accuracy"] == max(evals["test_accuracy"])
    assert result.best["test_loss"] == min(evals["test_loss"])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_convergence_holds_across_seeds(settings, seed):
    result = run_in_this_process(BLOBS.replace(seed=seed), settings)
    assert result.final["val_accuracy"] > 0.9


def test_same_seed_same_run_and_no_state_leaks_between_cases(settings):
    first = run_in_this_process(BLOBS, settings)
    run_in_this_process(BLOBS.replace(optimizer="adam", lr=0.05, seed=5), settings)  # a different case in between
    again = run_in_this_process(BLOBS, settings)
    assert again.curves["train"]["loss"] == first.curves["train"]["loss"]
    assert again.final == first.final
    other_seed = run_in_this_process(BLOBS.replace(seed=1), settings)
    assert other_seed.curves["train"]["loss"] != first.curves["train"]["loss"]


def test_step_and_sample_accounting(settings):
    result = run_in_this_process(BLOBS, settings)
    n_train = 600 - 200  # blobs: 4 classes x 150, minus 100 val and 100 test
    steps_per_epoch = n_train // 20
    assert result.steps == result.steps_planned == 3 * steps_per_epoch
    assert result.samples == result.steps * 20
    assert result.epochs == pytest.approx(3.0)
    assert result.samples_per_s == pytest.approx(result.samples / result.timing.train_s)


def test_fractional_epochs_and_step_budgets(settings):
    assert run_in_this_process(BLOBS.replace(epochs=0.5), settings).steps == 10
    assert run_in_this_process(BLOBS.replace(epochs=None, steps=7), settings).steps == 7


def test_full_batch_gradient_descent_takes_one_step_per_epoch(settings):
    result = run_in_this_process(BLOBS.replace(batch_size=None, epochs=4), settings)
    assert result.steps == 4
    assert result.samples == 4 * 400


def test_batch_larger_than_the_data_is_a_case_error(settings):
    with pytest.raises(CaseError, match="invalid batch_size=5000: larger than the 400 training samples"):
        run_in_this_process(BLOBS.replace(batch_size=5000), settings)


def test_non_finite_loss_is_recorded_as_divergence_and_stops_training(settings):
    result = run_in_this_process(BLOBS.replace(model="nan_after", model_kwargs={"steps": 5}), settings)
    assert result.diverged
    assert result.divergence.step == 6
    assert "non-finite" in result.divergence.reason
    assert result.steps < result.steps_planned
    json.dumps(result.to_dict(), allow_nan=False)  # NaN metrics became null, the JSON stays valid
    assert result.final["test_loss"] is None


def test_loss_blow_up_is_recorded_as_divergence(settings):
    result = run_in_this_process(BLOBS.replace(lr=1e4), settings)
    assert result.diverged
    assert "exceeded 10 x the first loss" in result.divergence.reason
    assert result.steps < result.steps_planned


def test_divergence_factor_is_configurable(settings):
    # the same large-lr run is not divergent under a looser threshold
    loose = run_in_this_process(BLOBS.replace(lr=1e4, divergence_factor=1e9, epochs=1), settings)
    assert not loose.diverged


def test_time_and_steps_to_target(settings):
    result = run_in_this_process(BLOBS.replace(target_accuracy=0.9, eval_every=2), settings)
    target = result.target
    assert target.reached and target.split == "val" and target.metric == "accuracy"
    evals = result.curves["eval"]
    first = next(i for i, a in enumerate(evals["val_accuracy"]) if a >= 0.9)
    assert target.step == evals["step"][first]
    assert target.time_s == evals["time_s"][first]
    assert 0 < target.time_s <= result.timing.train_s


def test_stop_at_target_ends_the_run_at_the_first_eval_that_reaches_it(settings):
    result = run_in_this_process(BLOBS.replace(target_accuracy=0.9, eval_every=2, stop_at_target=True), settings)
    assert result.target_reached
    assert result.steps == result.target.step < result.steps_planned


def test_a_run_records_why_it_stopped(settings):
    assert run_in_this_process(BLOBS.replace(epochs=None, steps=7), settings).stop_reason == "budget"
    # reaching the target ends the run only when the case says so
    reached = BLOBS.replace(target_accuracy=0.9, eval_every=2)
    assert run_in_this_process(reached, settings).stop_reason == "budget"
    stopped = run_in_this_process(reached.replace(stop_at_target=True), settings)
    assert stopped.stop_reason == "target" and stopped.steps < stopped.steps_planned
    diverged = run_in_this_process(BLOBS.replace(model="nan_after", model_kwargs={"steps": 5}), settings)
    assert diverged.stop_reason == "diverged" and diverged.steps < diverged.steps_planned
    assert {"stop_reason": "diverged"}.items() <= diverged.to_dict().items()


def test_a_divergence_at_the_last_step_is_the_stop_reason(settings):
    case = BLOBS.replace(model="nan_after", model_kwargs={"steps": 19}, epochs=1)  # 20 steps
    result = run_in_this_process(case, settings)
    assert result.steps == result.steps_planned == 20
    assert result.diverged and result.stop_reason == "diverged"
    assert result.curves["eval"]["step"][-1] == 20  # the final state is evaluated once, after the verdict
    assert result.curves["eval"]["step"].count(20) == 1


def test_unreachable_target_is_reported_not_reached(settings):
    result = run_in_this_process(BLOBS.replace(target_loss=1e-9, target_split="train"), settings)
    assert result.target.reached is False and result.target.time_s is None
    assert result.target.split == "train"


def test_target_split_must_exist(registry, tmp_path):
    with pytest.raises(CaseError, match="has no such split"):
        run_in_this_process(BLOBS.replace(target_accuracy=0.5, target_split="val", dataset_kwargs={"val_size": 0},
                               dataset="mnist-5k"), RunSettings(registry=registry))


def test_evaluation_schedule(settings):
    result = run_in_this_process(BLOBS.replace(epochs=None, steps=20, eval_every=5), settings)
    assert result.curves["eval"]["step"] == [0, 5, 10, 15, 20]
    assert result.curves["eval"]["epoch"] == [s / 20 for s in (0, 5, 10, 15, 20)]


def test_default_evaluation_is_bounded(settings):
    result = run_in_this_process(BLOBS.replace(batch_size=1, epochs=2), settings)  # 800 steps, 400 per epoch
    steps = result.curves["eval"]["step"]
    assert steps[0] == 0 and steps[-1] == 800
    assert 3 <= len(steps) <= 52


def test_train_loss_curve_is_bounded_and_ends_at_the_last_step(settings):
    result = run_in_this_process(BLOBS.replace(batch_size=2, epochs=1, max_curve_points=30), settings)  # 200 steps
    curve = result.curves["train"]
    assert len(curve["step"]) <= 30
    assert curve["step"] == sorted(curve["step"]) and curve["step"][-1] == 200
    assert len(curve["loss"]) == len(curve["step"])


def test_curve_points_are_bucket_means_of_the_step_losses(settings):
    prepared = PreparedRun(BLOBS.replace(epochs=None, steps=8, max_curve_points=4), settings)
    seen = []
    original = prepared.loss

    def spy(outputs, targets, reduction="mean"):
        value = original(outputs, targets, reduction=reduction)
        if prepared.model.training:
            seen.append(value.item())
        return value

    prepared.loss = spy
    result = prepared.run()
    assert result.curves["train"]["step"] == [2, 4, 6, 8]
    expected = [(seen[i] + seen[i + 1]) / 2 for i in range(0, 8, 2)]
    assert result.curves["train"]["loss"] == pytest.approx(expected, rel=1e-5)


def test_epoch_scheduler_steps_once_per_epoch(settings):
    case = BLOBS.replace(scheduler="step", scheduler_kwargs={"step_size": 1, "gamma": 0.5}, epochs=3,
                         eval_every=20)  # 20 steps per epoch
    result = run_in_this_process(case, settings)
    evals = result.curves["eval"]
    lr_at_epoch = {round(e, 6): lr for e, lr in zip(evals["epoch"], evals["lr"], strict=True)}
    # an eval records the lr its preceding steps used: epoch k trained at 0.1 * 0.5 ** (k - 1)
    assert [lr_at_epoch[e] for e in (1.0, 2.0, 3.0)] == pytest.approx([0.1, 0.05, 0.025])


def test_timing_separates_setup_training_and_evaluation(settings):
    result = run_in_this_process(BLOBS, settings)
    timing = result.timing
    assert timing.setup_s > 0 and timing.train_s > 0 and timing.eval_s > 0
    assert result.curves["eval"]["time_s"][0] == 0.0
    assert result.curves["eval"]["time_s"][-1] == pytest.approx(timing.train_s)


def test_unknown_component_fails_before_loading_data(settings, monkeypatch):
    import convbench.loading

    monkeypatch.setattr(convbench.loading, "load_dataset", lambda *a: pytest.fail("data loaded"))
    with pytest.raises(UnknownComponentError, match=r"unknown optimizer 'adma'; did you mean .*'adam'"):
        run_in_this_process(BLOBS.replace(optimizer="adma"), settings)


def test_a_prepared_run_trains_once(settings):
    prepared = PreparedRun(BLOBS.replace(epochs=None, steps=2), settings)
    prepared.run()
    with pytest.raises(ConvbenchError, match="trains once"):
        prepared.run()


def test_augmentations_apply_to_training_batches_only(settings):
    import types

    import convbench
    from convbench.registry import load_registry

    seen = {"train": 0, "eval": 0, "eval_batches": 0}

    class Recorder(nn.Module):
        """Counts the all-zero images (what the stand-in augmentation makes) in training and evaluation."""

        def __init__(self, input_shape, num_outputs):
            super().__init__()
            self.linear = nn.Linear(math.prod(input_shape), num_outputs)

        def forward(self, x):
            seen["train" if self.training else "eval"] += int((x == 0).all(dim=(1, 2, 3)).sum())
            seen["eval_batches"] += not self.training
            return self.linear(x.flatten(1))

    plugin = types.ModuleType("recorder_plugin")
    plugin.convbench_register_models = convbench.hookimpl(lambda register: register("recorder", Recorder))
    registry = load_registry(extra_plugins=[("recorder_plugin", plugin)])
    prepared = PreparedRun(Case(model="recorder", dataset="mnist-5k", optimizer="sgd", lr=0.1, batch_size=50,
                                steps=3, augmentations=["rotation"]),
                           RunSettings(registry=registry, data_root=settings.data_root))
    prepared.augment = lambda batch: torch.zeros_like(batch)  # a stand-in augmentation we can recognise
    prepared.run()
    assert seen["train"] == 3 * 50  # every training image went through the augmentation
    assert seen["eval_batches"] > 0 and seen["eval"] == 0  # the same model evaluated, on images it did not touch


def test_a_multi_device_case_needs_a_process_group_of_its_size(settings):
    with pytest.raises(ConvbenchError, match="world_size=2 but this process group has 1 rank"):
        PreparedRun(BLOBS.replace(world_size=2), settings)


@pytest.mark.parametrize("rank", [0, 1])
def test_an_impossible_weak_scaling_batch_names_the_batch_and_world_size_the_user_set(settings, rank):
    from convbench.distributed import DistContext

    # 300 per rank on 2 ranks: 600 in all, of the blobs' 400 training samples. The error comes from the rank's
    # share of the batch, before any collective, so a fake two-rank context is enough to reach it.
    case = BLOBS.replace(batch_size=300, world_size=2, scaling="weak")
    with pytest.raises(CaseError) as info:
        PreparedRun(case, settings, DistContext(rank=rank, world_size=2, local_rank=rank))
    assert str(info.value) == (
        "invalid batch_size=300 for world_size=2 with weak scaling: every rank takes 300 samples, 600 in all, more "
        "than the 400 training samples; valid choices: batch_size up to 200, or scaling='strong'")


# ------------------------------------------------------------------ GPU-only paths, with CUDA faked
def test_auto_device_prefers_cuda_when_present(monkeypatch):
    from convbench.engine import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert resolve_device("auto") == torch.device("cuda", 1)
    assert resolve_device("cpu") == torch.device("cpu")


def test_explicit_cuda_without_cuda_is_a_case_error(monkeypatch):
    from convbench.engine import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(CaseError, match="invalid device='cuda:0': CUDA is not available here"):
        resolve_device("cuda:0")


def test_stopwatch_synchronises_the_device_around_every_reading(monkeypatch):
    from convbench.clock import Stopwatch

    synced = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: synced.append(device))
    watch = Stopwatch(torch.device("cuda", 0))
    watch.start()
    watch.stop()
    watch.stop()  # stopping a stopped watch adds nothing
    assert synced == [torch.device("cuda", 0)] * 2
    cpu_watch = Stopwatch(torch.device("cpu"))
    cpu_watch.start()
    cpu_watch.stop()
    assert len(synced) == 2  # nothing to wait for on the CPU
    assert watch.total >= 0 and cpu_watch.total >= 0


def test_telemetry_is_sampled_during_the_run_and_says_which_sampler_ran(settings):
    result = run_in_this_process(BLOBS, settings)
    telemetry = result.telemetry
    assert telemetry.sampler == "psutil" and "not a CUDA device" in telemetry.reason
    assert telemetry.devices[0]["name"] == "cpu"
    # a run shorter than one interval has no samples; values are then None, never made up
    assert telemetry.samples == 0 or telemetry.devices[0]["rss_max_bytes"] > 0
    json.dumps(result.to_dict(), allow_nan=False)


def test_telemetry_can_be_turned_off(registry):
    assert run_in_this_process(BLOBS, RunSettings(registry=registry, telemetry_interval_s=None)).telemetry is None


def test_run_telemetry_stops_its_sampler_whether_the_run_ends_or_fails(monkeypatch):
    import convbench.telemetry
    from convbench.distributed import DistContext
    from convbench.run_telemetry import RunTelemetry

    stops = []

    class Sampler:
        def start(self):
            return self

        def stop(self):
            stops.append(True)
            return {"samples": 3}

    monkeypatch.setattr(convbench.telemetry, "make_sampler", lambda device, interval: Sampler())
    with RunTelemetry(torch.device("cpu"), DistContext(), 0.2) as telemetry:
        pass
    assert telemetry.result == {"samples": 3} and len(stops) == 1
    with pytest.raises(RuntimeError, match="boom"), RunTelemetry(torch.device("cpu"), DistContext(), 0.2) as failed:
        raise RuntimeError("boom")
    assert len(stops) == 2 and failed.result is None
    with RunTelemetry(torch.device("cpu"), DistContext(rank=1, world_size=1, local_rank=1), 0.2) as other:
        pass  # on CPUs only the first rank of a machine samples it
    assert len(stops) == 2 and other.result is None


@pytest.mark.parametrize("heartbeat_s", [0.0, 3600.0])
def test_progress_between_distant_evaluations_is_a_heartbeat_of_the_train_loss(settings, monkeypatch, heartbeat_s):
    import dataclasses

    import convbench.engine

    monkeypatch.setattr(convbench.engine, "HEARTBEAT_S", heartbeat_s)
    reports = []
    case = BLOBS.replace(epochs=None, steps=60, eval_every=30)
    result = run_in_this_process(case, dataclasses.replace(settings, progress=reports.append))
    evaluations = [p.step for p in reports if "val_accuracy" in p.metrics]
    heartbeats = [p for p in reports if "val_accuracy" not in p.metrics]
    assert evaluations == [0, 30, 60]
    if heartbeat_s:
        assert heartbeats == []
    else:  # after every divergence check that is not at an evaluation
        assert [p.step for p in heartbeats] == [10, 20, 40, 50]
        losses = dict(zip(result.curves["train"]["step"], result.curves["train"]["loss"], strict=True))
        for p in heartbeats:
            assert set(p.metrics) == {"train_loss"} and p.metrics["train_loss"] > 0
            if case.steps <= case.max_curve_points:  # one curve point per step: the heartbeat is their mean
                expected = sum(losses[s] for s in range(p.step - 9, p.step + 1)) / 10
                assert p.metrics["train_loss"] == pytest.approx(expected, rel=1e-5)


def test_fixed_order_takes_the_same_batches_every_epoch_and_for_every_seed(settings):
    from convbench.data import EpochBatches

    fixed = EpochBatches(10, 5, seed=0, device=torch.device("cpu"), shuffle=False)
    other_seed = EpochBatches(10, 5, seed=7, device=torch.device("cpu"), shuffle=False)
    epochs = [[b.tolist() for b in fixed.epoch()] for _ in range(2)]
    assert epochs[0] == epochs[1] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    assert [b.tolist() for b in other_seed.epoch()] == epochs[0]
    shuffled = EpochBatches(10, 5, seed=0, device=torch.device("cpu"))
    assert [b.tolist() for b in shuffled.epoch()] != [b.tolist() for b in shuffled.epoch()]  # reshuffled
    # in a run: with a fixed order only the initial weights differ between seeds
    runs = [run_in_this_process(BLOBS.replace(shuffle=False, seed=seed, model_kwargs={"init": "zeros"}), settings)
            for seed in (0, 1)]
    assert runs[0].curves["train"]["loss"] == runs[1].curves["train"]["loss"]  # zero init: nothing else is random
    shuffled_runs = [run_in_this_process(BLOBS.replace(seed=seed, model_kwargs={"init": "zeros"}), settings)
                     for seed in (0, 1)]
    assert shuffled_runs[0].curves["train"]["loss"] != shuffled_runs[1].curves["train"]["loss"]


# ------------------------------------------------------------------ the hot path: stretches of steps
def _stretches(prepared: PreparedRun) -> list[tuple[int, int]]:
    """Run ``prepared``; the (first, end) of every stretch of steps the loop took between its bookkeeping."""
    seen: list[tuple[int, int]] = []
    original = type(prepared).__dict__["_train"]

    def spying_train(record):
        after_steps = record.after_steps

        def spy(first, end, lr_of):
            seen.append((first, end))
            after_steps(first, end, lr_of)

        record.after_steps = spy
        return original(prepared, record)

    prepared._train = spying_train
    prepared.run()
    return seen


def test_stretches_end_at_every_check_evaluation_and_epoch_end_and_nowhere_else(settings):
    prepared = PreparedRun(BLOBS.replace(eval_every=15, epochs=3), settings)  # 20 steps per epoch, 60 in all
    stretches = _stretches(prepared)
    due = {10 * k for k in range(1, 7)} | {15, 30, 45, 60} | {20, 40, 60}
    assert [end for _, end in stretches] == sorted(due)
    assert [first for first, _ in stretches] == [0, *sorted(due)[:-1]]  # no step skipped, none taken twice


def test_a_scheduler_stepped_every_step_makes_every_step_a_stretch(settings):
    case = BLOBS.replace(scheduler="cosine", epochs=1)
    stretches = _stretches(PreparedRun(case, settings))
    assert stretches == [(step, step + 1) for step in range(20)]


def test_divergence_check_finds_the_first_non_finite_step_of_a_window():
    from convbench.recording import _check_divergence
    window = [1.0, 1.0, math.inf, math.nan, 1.0]
    verdict = _check_divergence(window, 30, factor=10.0, reference=1.0)
    assert verdict == {"step": 33, "reason": "non-finite loss (inf)"}


def test_divergence_check_calls_huge_finite_losses_a_blow_up_even_when_their_sum_overflows():
    from convbench.recording import _check_divergence
    for window in ([3e38, 3e38, 3e38], [1e308, 1e308]):  # the float32 and the float64 sum overflow
        verdict = _check_divergence(window, 30, factor=10.0, reference=2.3)
        assert verdict is not None and verdict["step"] == 30 + len(window)
        assert "exceeded 10 x the first loss 2.3" in verdict["reason"]
    assert _check_divergence([2.0, 2.5], 0, factor=10.0, reference=2.3) is None


def test_both_ways_of_reading_the_losses_give_the_same_curve_and_verdict(settings, monkeypatch):
    """One CPU process reads each loss; other runs read one stacked tensor: the results must not differ."""
    import convbench.recording as recording

    def runs():
        finite = run_in_this_process(BLOBS.replace(max_curve_points=1000), settings)
        nan = run_in_this_process(BLOBS.replace(model="nan_after", model_kwargs={"steps": 5}), settings)
        return finite.curves["train"]["loss"], finite.final, nan.divergence

    reads = []
    original_item = torch.Tensor.item

    def counted_item(tensor):
        reads.append(tensor.numel())
        return original_item(tensor)

    monkeypatch.setattr(torch.Tensor, "item", counted_item)
    each = runs()
    read_each = len(reads)
    original_init = recording.RunRecorder.__init__

    def stacked(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self._read_each = False

    monkeypatch.setattr(recording.RunRecorder, "__init__", stacked)
    reads.clear()
    assert runs() == each
    assert len(reads) < read_each - 60  # 60 steps of BLOBS read one by one in the first runs, not in these
    assert each[2].step == 6 and len(each[0]) == 60


def test_a_model_with_a_trajectory_takes_one_step_per_stretch_so_each_point_is_read_at_its_step(settings):
    case = Case(model="linear_regression", dataset="line", optimizer="sgd", lr=0.5, batch_size=20, epochs=2,
                model_kwargs={"init": "zeros"}, max_curve_points=1000)
    prepared = PreparedRun(case, settings)
    stretches = _stretches(prepared)
    assert all(end == first + 1 for first, end in stretches) and len(stretches) == prepared.total_steps


def test_a_compiled_models_first_step_is_a_stretch_of_its_own(settings):
    prepared = PreparedRun(BLOBS.replace(epochs=1, eval_every=20), settings)
    prepared.compile_s = 0.0  # as if compiled: the loop times the first step apart, after one step
    stretches = _stretches(prepared)
    assert stretches[:2] == [(0, 1), (1, 10)]
    assert prepared._first_step_s > 0


def test_the_losses_from_a_step_on_are_the_tail_of_all_of_them_checked_or_pending():
    from convbench.distributed import DistContext
    from convbench.recording import RunRecorder
    record = RunRecorder(BLOBS, 30, 20, "val", torch.device("cpu"), DistContext())
    for value in range(1, 11):
        record.add_loss(torch.tensor(float(value)))
    assert not record.diverged(10)  # the mean 5.5 is below 10 x the first loss
    for value in range(11, 16):  # five steps since the check, not yet read
        record.add_loss(torch.tensor(float(value)))
    everything = record.losses()
    assert everything.tolist() == [float(v) for v in range(1, 16)]
    for start in (0, 7, 10, 12, 15):
        assert record.losses(start).tolist() == everything[start:].tolist()
    assert record.recent_loss(10, window=4) == pytest.approx((7 + 8 + 9 + 10) / 4)
