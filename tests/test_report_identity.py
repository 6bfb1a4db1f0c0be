"""The report's one answer to "same configuration?" and "which number ranks runs?" (convbench.report.identity)."""

from __future__ import annotations

import pytest

from convbench.report import identity


def run(seed=0, world_size=1, machine="host", commit="abc", group="g", scale="quick", final=None, **case):
    label = f"m-lr{case.get('lr', 0.1)}-seed{seed}-w{world_size}"
    return {"group": group, "scale": scale, "machine": machine, "commit": commit, "case_id": label,
            "case": {"model": "m", "lr": 0.1, "seed": seed, "world_size": world_size, "label": label,
                     "scales": {"quick": {"steps": 3}}, **case},
            "final": final if final is not None else {"test_accuracy": 0.9, "test_loss": 0.3}}


def test_seeds_share_a_configuration_and_nothing_else_does():
    assert identity.config_key(run(seed=0)) == identity.config_key(run(seed=1))
    base = identity.config_key(run())
    for other in (run(machine="other"), run(commit="def"), run(group="h"), run(scale="full"), run(lr=0.2),
                  run(world_size=2)):
        assert identity.config_key(other) != base
    sets = identity.seed_sets([run(seed=0), run(lr=0.2), run(seed=1), run(machine="other")])
    assert [[r["case"]["seed"] for r in runs] for runs in sets] == [[0, 1], [0], [0]]
    assert [r["case"]["lr"] for r in (runs[0] for runs in sets)] == [0.1, 0.2, 0.1]


def test_a_scaling_family_spans_world_sizes_on_one_machine_and_commit():
    assert identity.scaling_family(run(world_size=1)) == identity.scaling_family(run(world_size=4))
    base = identity.scaling_family(run())
    for other in (run(machine="other"), run(commit="def"), run(seed=1), run(lr=0.2)):
        assert identity.scaling_family(other) != base


def test_a_run_read_twice_is_one_run():
    first = {"test": "t[a]", "scale": "quick", "machine": "h", "commit": "c"}
    assert identity.run_key(first) == identity.run_key(dict(first))
    assert identity.run_key(first) != identity.run_key({**first, "commit": "d"})


@pytest.mark.parametrize(("finals", "split", "column"), [
    ([{"test_accuracy": 0.9, "val_accuracy": 0.8}], "test", "final_test_accuracy"),
    ([{"test_loss": 0.2}, {"test_loss": 0.3, "test_accuracy": 0.5}], "test", "final_test_accuracy"),
    ([{"test_loss": 0.2, "test_accuracy": None}], "test", "final_test_loss"),
    ([{"val_loss": 0.2, "train_accuracy": 0.9}], "val", "final_val_loss"),
    ([{"train_loss": 0.2, "train_accuracy": None}], "train", "final_train_loss"),
    ([{}], "train", "final_train_loss"),
])
def test_headline_is_the_final_accuracy_else_the_final_loss(finals, split, column):
    runs = [run(final=final) for final in finals]
    metric = identity.headline(runs)
    assert identity.metric_split(runs) == metric.split == split
    assert metric.column == column
    assert metric.label == column.replace("_", " ")
    assert metric.higher_is_better == column.endswith("accuracy")
    assert [metric.value(r) for r in runs] == [r["final"].get(column.removeprefix("final_")) for r in runs]


def test_headline_on_a_given_split():
    runs = [run(final={"test_accuracy": 0.9, "train_loss": 0.1})]
    assert identity.headline(runs, "train").column == "final_train_loss"


@pytest.mark.parametrize(("case_id", "seedless"), [
    ("softmax-sgd-lr0.1-bs100-seed2", "softmax-sgd-lr0.1-bs100"), ("seed3-x", "x"), ("a-seed1-b", "a-b"),
    ("noseed12", "noseed12"), ("seed1", "seed1"),
])
def test_seedless_names(case_id, seedless):
    assert identity.seedless_id(case_id) == seedless
    assert identity.seedless_test_name(f"test_x[{case_id}]") == f"test_x[{seedless}]"


def test_case_names_say_where_they_ran_only_when_sources_mix():
    runs = [run(), run(machine="other", commit=None)]
    assert identity.mixes_sources(runs) and not identity.mixes_sources(runs[:1])
    assert [identity.case_name(r, mixed_sources=True) for r in runs] == [
        "m-lr0.1-seed0-w1 [host@abc]", "m-lr0.1-seed0-w1 [other]"]
    assert identity.case_name(runs[0], mixed_sources=False) == "m-lr0.1-seed0-w1"
    assert identity.configuration_name([run(seed=0), run(seed=1)]) == "m-lr0.1-w1"
