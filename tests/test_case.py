"""Case: validation, ids, grids and scale profiles."""

from __future__ import annotations

import dataclasses
import json

import pytest

from convbench.case import Case, format_number, grid
from convbench.errors import CaseError

BASE = Case(model="softmax", optimizer="sgd", lr=0.5, batch_size=100, epochs=2)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0.5, "0.5"), (0.01, "0.01"), (1e-3, "1e-3"), (5e-4, "5e-4"), (2.5e-5, "2.5e-5"), (100, "100"), (1.0, "1")],
)
def test_format_number_is_short_and_exact(value, expected):
    assert format_number(value) == expected
    assert float(format_number(value)) == value


def test_id_names_model_optimizer_lr_and_batch_size():
    assert BASE.id == "softmax-sgd-lr0.5-bs100"
    assert BASE.replace(lr=1e-3, batch_size=None).id == "softmax-sgd-lr1e-3-bsfull"
    assert BASE.replace(world_size=2).id == "softmax-sgd-lr0.5-bs100-w2"
    assert BASE.replace(label="mine").id == "mine"


def test_cases_declared_apart_that_differ_in_configuration_get_different_ids_that_say_how():
    variants = {
        BASE.replace(model_kwargs={"init": "zeros"}): "softmax-sgd-lr0.5-bs100-initzeros",
        BASE.replace(optimizer_kwargs={"momentum": 0.9}): "softmax-sgd-lr0.5-bs100-momentum0.9",
        BASE.replace(scheduler="step", scheduler_kwargs={"step_size": 2}): "softmax-sgd-lr0.5-bs100-step-step_size2",
        BASE.replace(augmentations=("rotation", "flip")): "softmax-sgd-lr0.5-bs100-rotation+flip",
        BASE.replace(warmup_steps=10): "softmax-sgd-lr0.5-bs100-warmup10",
        BASE.replace(world_size=2, scaling="weak"): "softmax-sgd-lr0.5-bs100-w2-weak",
        BASE.replace(seed=3): "softmax-sgd-lr0.5-bs100-seed3",
        BASE.replace(model="tf_cnn", model_kwargs={"filters": (4, 8)}): "tf_cnn-sgd-lr0.5-bs100-filters4,8",
    }
    for case, expected in variants.items():
        assert case.id == expected == case.param().id
    assert len({case.id for case in variants} | {BASE.id}) == len(variants) + 1


def test_grid_shows_a_varied_field_once():
    ids = [p.id for p in grid(BASE.replace(seed=1), seed=[0, 1], model_kwargs=[{"init": "zeros"}])]
    assert ids == ["softmax-sgd-lr0.5-bs100-initzeros-seed0", "softmax-sgd-lr0.5-bs100-initzeros-seed1"]


def test_grid_is_the_cartesian_product_with_readable_unique_ids():
    params = grid(BASE, optimizer=["sgd", "adam"], lr=[0.1, 1e-3], optimizer_kwargs=[{}, {"weight_decay": 0.1}])
    assert len(params) == 8
    ids = [p.id for p in params]
    assert len(set(ids)) == 8
    assert "softmax-adam-lr1e-3-bs100-weight_decay0.1" in ids
    cases = [p.values[0] for p in params]
    assert {(c.optimizer, c.lr) for c in cases} == {("sgd", 0.1), ("sgd", 1e-3), ("adam", 0.1), ("adam", 1e-3)}
    # the case carries its pytest id, so results are labelled as pytest shows them
    assert all(p.values[0].id == p.id for p in params)


def test_grid_names_other_axes_in_the_id():
    ids = [p.id for p in grid(BASE, seed=[0, 1], dataset=["mnist", "mnist-5k"])]
    assert ids[0] == "softmax-sgd-lr0.5-bs100-seed0-mnist"
    assert "softmax-sgd-lr0.5-bs100-seed1-mnist-5k" in ids


def test_grid_rejects_unknown_axes_empty_axes_and_colliding_ids():
    with pytest.raises(CaseError, match=r"grid axis 'optimiser' is not a Case field; did you mean 'optimizer'"):
        grid(BASE, optimiser=["adam"])
    with pytest.raises(CaseError, match="has no values"):
        grid(BASE, lr=[])
    with pytest.raises(CaseError, match="two cases the id"):
        grid(BASE, lr=[0.1, 0.1])


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"lr": -0.1}, r"invalid lr=-0.1: expected a positive number"),
        ({"lr": float("nan")}, r"invalid lr=nan"),
        ({"lr": True}, r"invalid lr=True"),
        ({"batch_size": 0}, r"invalid batch_size=0"),
        ({"batch_size": 2.5}, r"invalid batch_size=2.5"),
        ({"epochs": 0}, r"invalid epochs=0"),
        ({"seed": -1}, r"invalid seed=-1"),
        ({"world_size": 0}, r"invalid world_size=0"),
        ({"device": "tpu"}, r"invalid device='tpu'"),
        ({"target_accuracy": 1.5}, r"invalid target_accuracy=1.5"),
        ({"target_split": "dev"}, r"target_split='dev' is invalid; .*valid choices: auto, test, train, val"),
        ({"divergence_factor": 1}, r"invalid divergence_factor=1"),
        ({"model": ""}, r"invalid model=''"),
        ({"optimizer_kwargs": {"lr": 0.1}}, r"set the learning rate with Case.lr"),
        ({"optimizer_kwargs": [1]}, r"optimizer_kwargs must be a mapping"),
        ({"augmentations": "rotation"}, r"augmentations must be a list"),
        ({"augmentations": [("rotation", 5)]}, r"augmentation .* is invalid"),
        ({"scales": {"huge": {}}}, r"unknown scale 'huge' in scales"),
        ({"scales": {"quick": {"epoch": 1}}}, r"names no Case field 'epoch'; did you mean 'epochs'"),
    ],
)
def test_invalid_fields_give_one_line_errors_naming_the_value(changes, message):
    with pytest.raises(CaseError, match=message) as info:
        BASE.replace(**changes)
    assert "\n" not in str(info.value)


def test_misspelt_field_suggests_the_right_one():
    with pytest.raises(CaseError, match=r"Case has no field 'optimiser'; did you mean 'optimizer'"):
        Case(model="softmax", optimiser="sgd", lr=0.1, epochs=1)


def test_exactly_one_of_epochs_and_steps():
    with pytest.raises(CaseError, match="exactly one of epochs and steps"):
        Case(model="softmax", optimizer="sgd", lr=0.1)
    with pytest.raises(CaseError, match="exactly one of epochs and steps"):
        Case(model="softmax", optimizer="sgd", lr=0.1, epochs=1, steps=10)


def test_case_is_frozen_hashable_and_its_kwargs_immutable():
    case = BASE.replace(optimizer_kwargs={"momentum": 0.9})
    with pytest.raises(dataclasses.FrozenInstanceError):
        case.lr = 1.0
    with pytest.raises(TypeError):
        case.optimizer_kwargs["momentum"] = 0.1
    assert hash(case) == hash(BASE.replace(optimizer_kwargs={"momentum": 0.9}))
    assert case != BASE


def test_to_dict_is_plain_json():
    case = BASE.replace(augmentations=[("rotation", {"degrees": 10})], scales={"quick": {"epochs": 1}})
    data = case.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["augmentations"] == [["rotation", {"degrees": 10}]]
    assert data["scales"] == {"quick": {"epochs": 1}}


def test_scale_profiles_apply_overrides_in_one_place_and_keep_the_id():
    case = Case(model="tf_cnn", dataset="mnist", optimizer="adam", lr=1e-4, batch_size=50, epochs=30,
                scales={"quick": {"dataset": "mnist-5k", "epochs": 2, "lr": 1e-3}})
    quick, full = case.at_scale("quick"), case.at_scale("full")
    assert (quick.dataset, quick.epochs, quick.lr) == ("mnist-5k", 2, 1e-3)
    assert (full.dataset, full.epochs, full.lr) == ("mnist", 30, 1e-4)
    assert quick.id == full.id == case.id == "tf_cnn-adam-lr1e-4-bs50"
    with pytest.raises(CaseError, match="unknown scale 'fast'"):
        case.at_scale("fast")


def test_scale_switching_between_epochs_and_steps():
    case = BASE.replace(scales={"quick": {"steps": 7}})
    quick = case.at_scale("quick")
    assert (quick.steps, quick.epochs) == (7, None)


def test_grid_cases_inherit_the_base_scales():
    base = BASE.replace(scales={"quick": {"epochs": 1}})
    assert all(p.values[0].at_scale("quick").epochs == 1 for p in grid(base, lr=[0.1, 0.2]))


def test_strong_scaling_needs_a_sample_per_rank_before_any_worker_starts():
    with pytest.raises(CaseError, match=r"^invalid batch_size=3 for world_size=4 with strong scaling: every rank "
                                        r"needs at least one sample; use a larger batch or scaling='weak'$"):
        BASE.replace(batch_size=3, world_size=4)
    assert BASE.replace(batch_size=3, world_size=4, scaling="weak").world_size == 4  # every rank takes 3
    assert BASE.replace(batch_size=4, world_size=4).batch_size == 4
    assert BASE.replace(batch_size=None, world_size=4).batch_size is None  # full batch: the data set decides
