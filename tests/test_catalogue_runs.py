"""Every built-in component trains in a short case on the CPU.

The lists come from the registry, so a component added without a short case here fails the test
that checks coverage instead of going untested.
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
AUGMENTATION_KWARGS = {"affine": {"degrees": 10}}  # like torchvision's RandomAffine, degrees is required
# Optimizers whose training is checked in test_optimizer_catalogue; models by their input needs.
MODEL_INPUTS = {"linear_regression": "linear-regression"}


@pytest.mark.parametrize("kind", ["model", "scheduler", "augmentation"])
def test_every_builtin_has_a_short_case(kind):
    covered = {"model": set(builtin_names("model")), "scheduler": set(SCHEDULER_KWARGS),
               "augmentation": set(builtin_names("augmentation"))}[kind]
    assert set(builtin_names(kind)) <= covered


@pytest.mark.parametrize("model", builtin_names("model"))
def test_every_model_trains_a_few_steps(model):
    if model in MODEL_INPUTS:
        case = SHORT.replace(model=model, dataset=MODEL_INPUTS[model], dataset_kwargs={})
    else:
        case = SHORT.replace(model=model)
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


@pytest.mark.parametrize("augmentation", builtin_names("augmentation"))
def test_every_augmentation_runs_in_training(augmentation):
    spec = (augmentation, AUGMENTATION_KWARGS.get(augmentation, {}))
    result = run_in_this_process(SHORT.replace(augmentations=[spec]), RunSettings(registry=BUILTINS))
    assert result.steps == 4 and not result.diverged
