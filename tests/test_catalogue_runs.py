"""Every built-in model, scheduler and augmentation trains in a short case on the CPU.

The short cases are this file's own tables, one row per component; the coverage test compares them with
what the built-in plugins register, so a component added (or renamed) without a row here fails that
test instead of going untested. Optimizers have theirs in test_optimizer_catalogue.
"""

from __future__ import annotations

import pytest

from convbench.case import Case
from convbench.engine import RunSettings, run_in_this_process
from convbench.registry import BUILTIN_PLUGINS, load_registry

BUILTINS = load_registry(entry_points=False)


def builtin_names(kind: str) -> list[str]:
    return [c.name for c in BUILTINS.components(kind) if c.plugin in BUILTIN_PLUGINS]


IMAGES = {"num_samples": 64, "image_shape": (3, 32, 32), "num_classes": 10, "val_size": 16}
SHORT = Case(model="softmax", dataset="fake-images", dataset_kwargs=IMAGES, optimizer="sgd", lr=0.01,
             batch_size=8, steps=4, eval_every=2, eval_batch_size=16)

SCHEDULER_KWARGS = {
    "step": {"step_size": 1},
    "multistep": {"milestones": [1]},
    "exponential": {"gamma": 0.9},
    "tf_exponential": {"decay_rate": 0.5, "decay_steps": 2},
    "reduce_on_plateau": {"patience": 0},
    "cyclic": {"base_lr": 0.001, "max_lr": 0.01, "step_size_up": 2},
    "cosine": {},
    "cosine_restarts": {"T_0": 2},
    "one_cycle": {},
}
# model -> the dataset of its short case and that dataset's kwargs
MODEL_INPUTS = {
    "softmax": ("fake-images", IMAGES),
    "mlp": ("fake-images", IMAGES),
    "mlp4": ("fake-images", IMAGES),
    "lenet5": ("fake-images", IMAGES),
    "tf_cnn": ("fake-images", IMAGES),
    "cifar_cnn": ("fake-images", IMAGES),
    "resnet18": ("fake-images", IMAGES),
    "linear_regression": ("linear-regression", {}),
}
AUGMENTATION_KWARGS = {
    "hflip": {},
    "affine": {"degrees": 10},  # like torchvision's RandomAffine, degrees is required
    "color_jitter": {"brightness": 0.2},
    "random_crop": {"padding": 2},
    "random_erasing": {},
    "rotation": {},
}
SHORT_CASES = {"model": MODEL_INPUTS, "scheduler": SCHEDULER_KWARGS, "augmentation": AUGMENTATION_KWARGS}


@pytest.mark.parametrize("kind", sorted(SHORT_CASES))
def test_every_builtin_has_a_short_case(kind):
    registered, covered = set(builtin_names(kind)), set(SHORT_CASES[kind])
    assert registered - covered == set(), f"built-in {kind}s without a short case here"
    assert covered - registered == set(), f"short cases for {kind}s the built-ins no longer register"


SLOW_MODELS = {"resnet18"}  # 11 million parameters: about 4 s for its short case on one CPU thread


@pytest.mark.parametrize("model", [pytest.param(name, marks=pytest.mark.slow) if name in SLOW_MODELS else name
                                   for name in sorted(MODEL_INPUTS)])
def test_every_model_trains_a_few_steps(model):
    dataset, dataset_kwargs = MODEL_INPUTS[model]
    case = SHORT.replace(model=model, dataset=dataset, dataset_kwargs=dataset_kwargs)
    result = run_in_this_process(case, RunSettings(registry=BUILTINS))
    assert result.steps == 4 and not result.diverged
    assert result.final["train_loss"] is not None


@pytest.mark.parametrize("scheduler", sorted(SCHEDULER_KWARGS))
def test_every_scheduler_drives_a_short_run(scheduler):
    case = SHORT.replace(scheduler=scheduler, scheduler_kwargs=SCHEDULER_KWARGS[scheduler],
                         optimizer="momentum", epochs=None, steps=16)  # 48 samples / 8 = 6 steps per epoch
    result = run_in_this_process(case, RunSettings(registry=BUILTINS))
    assert result.steps == 16
    assert len(set(result.curves["train"]["lr"])) > 1 or scheduler == "reduce_on_plateau"


@pytest.mark.parametrize("augmentation", sorted(AUGMENTATION_KWARGS))
def test_every_augmentation_runs_in_training(augmentation):
    spec = (augmentation, AUGMENTATION_KWARGS[augmentation])
    result = run_in_this_process(SHORT.replace(augmentations=[spec]), RunSettings(registry=BUILTINS))
    assert result.steps == 4 and not result.diverged
