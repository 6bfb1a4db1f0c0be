"""Report figure kinds on runs built here, with known numbers: which kinds apply to which runs (the default set
is the default kinds that apply), what the new kinds draw (read back from the matplotlib figures), and how
diverged and stalled runs are marked.

`tests/test_figures.py` checks the same figures against a real session's JSON; here each run is made to
show one thing (a family that differs only in lr, a diagonal that is no grid, a stalled seed).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.colors import to_rgba

from convbench.case import Case
from convbench.cli import main
from convbench.report.figures import FigureOptions, curves
from convbench.report.figures.curves import AccuracyFigure, ErrorFigure, LossFigure, LossScalesFigure
from convbench.report.figures.gap import GapFigure, gap_figure
from convbench.report.figures.params import ParamsFigure
from convbench.report.figures.scaling import ScalingFigure, drawn_speedups, left_out_notes, scaling_table
from convbench.report.figures.seeds import SeedsFigure, seeds_figure
from convbench.report.figures.style import set_label
from convbench.report.figures.sweeps import HeatmapFigure, LrFigure, heatmap_figure
from convbench.report.figures.targets import ProfileFigure, TargetFigure
from convbench.report.figures.utilisation import UtilisationFigure
from convbench.report.figures.writer import figure_kinds, write_figures

OPTIONS = FigureOptions()
STEPS = [0, 10, 20, 30]


@pytest.fixture(autouse=True)
def _close_figures():
    """The figures a test draws and reads back, closed after it (the report closes the ones it saves)."""
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


def run(group: str = "g", *, lr: float = 0.1, optimizer: str = "sgd", batch_size: int = 100, seed: int = 0,
        model: str = "softmax", model_kwargs: dict[str, Any] | None = None, world_size: int = 1,
        accuracy: list[float | None] | None = None, train_accuracy: list[float | None] | None = None,
        loss: list[float] | None = None, epochs: float = 0.6, times: list[float] | None = None,
        diverged: bool = False, stalled: bool | None = None, target: float | None = None,
        target_s: float | None = None, params: dict[str, list[float]] | None = None,
        timeline: dict[str, list[float]] | None = None, train_s: float = 3.0) -> dict[str, Any]:
    """A run as the report reads it (the fields figures use), with the curves given; ``stalled=None``
    leaves the field out, as results written before the verdict do."""
    case = Case(model=model, optimizer=optimizer, lr=lr, batch_size=batch_size, steps=STEPS[-1], seed=seed,
                world_size=world_size, model_kwargs=model_kwargs or {}, target_accuracy=target)
    accuracy = [0.1, 0.5, 0.7, 0.8] if accuracy is None else accuracy
    train_accuracy = [0.1, 0.55, 0.75, 0.9] if train_accuracy is None else train_accuracy
    loss = [2.3, 1.0, 0.6, 0.5] if loss is None else loss
    times = [0.0, 1.0, 2.0, 3.0] if times is None else times
    evals = {"step": STEPS, "epoch": [epochs * s / STEPS[-1] for s in STEPS], "time_s": times, "lr": [lr] * 4,
             "test_accuracy": accuracy, "train_accuracy": train_accuracy, "test_loss": [2.0, 1.0, 0.8, 0.7]}
    record = {
        "group": group, "case_id": case.id + (f"-seed{seed}" if seed else ""), "case": case.to_dict(),
        "test": f"test_{group}[{case.id}-seed{seed}]", "scale": "quick", "machine": None, "commit": None,
        "world_size": world_size, "steps": STEPS[-1], "epochs": epochs, "diverged": diverged,
        "final": {"train_loss": loss[-1], "train_accuracy": train_accuracy[-1], "test_accuracy": accuracy[-1],
                  "test_loss": 0.7},
        "target": {"metric": "accuracy" if target is not None else None, "split": "test", "value": target,
                   "reached": target_s is not None, "time_s": target_s},
        "timing": {"train_s": train_s, "eval_s": 0.1, "startup_s": 0.0},
        "curves": {"train": {"step": STEPS, "loss": loss, "lr": [lr] * 4}, "eval": evals,
                   **({"params": {"step": STEPS, **params}} if params else {})},
        "telemetry": {"timeline": timeline} if timeline else None,
    }
    if stalled is not None:
        record["stalled"] = stalled
    return record


def regression(**kwargs: Any) -> dict[str, Any]:
    """A linear-regression run: no accuracy anywhere, W and b recorded."""
    record = run(model="linear_regression", params={"W": [0.0, 1.0, 1.5, 1.9], "b": [0.0, 0.3, 0.4, 0.5]},
                 **kwargs)
    record["final"] = {"train_loss": record["final"]["train_loss"], "train_accuracy": None, "test_accuracy": None}
    for key in ("test_accuracy", "train_accuracy"):
        record["curves"]["eval"][key] = [None] * len(STEPS)
    return record


def labelled(ax) -> list:
    return [line for line in ax.lines if not line.get_label().startswith("_")]


# --------------------------------------------------------------------------------- applies
def test_lr_applies_only_to_cases_that_differ_only_in_lr() -> None:
    confounded = [run(lr=0.1, optimizer="sgd"), run(lr=0.001, optimizer="adam")]  # lr changes with the optimizer
    assert not LrFigure().applies(confounded, OPTIONS)
    family = [*confounded, run(lr=0.01, optimizer="adam")]  # adam at two rates, all else equal
    assert LrFigure().applies(family, OPTIONS)
    seeds_only = [run(lr=0.1, seed=0), run(lr=0.1, seed=1)]
    assert not LrFigure().applies(seeds_only, OPTIONS)


def test_heatmap_applies_to_a_grid_not_to_a_diagonal() -> None:
    diagonal = [run(lr=0.1, batch_size=32), run(lr=0.2, batch_size=64)]  # two fields, changed together
    assert not HeatmapFigure().applies(diagonal, OPTIONS)
    grid = [run(lr=lr, batch_size=bs) for lr in (0.1, 0.2) for bs in (32, 64)]
    assert HeatmapFigure().applies(grid, OPTIONS)
    assert HeatmapFigure().applies(grid[:3], OPTIONS)  # one cell missing: still a grid
    cube = [run(lr=lr, batch_size=bs, optimizer=o) for lr in (0.1, 0.2) for bs in (32, 64) for o in ("sgd", "adam")]
    assert HeatmapFigure().applies(cube, OPTIONS)  # one grid per optimizer
    diagonals = [run(lr=0.1 * k, batch_size=32 * k, optimizer=o) for k in (1, 2) for o in ("sgd", "adam")]
    assert not HeatmapFigure().applies(diagonals, OPTIONS)  # three fields, but no panel is a grid
    four = [run(lr=lr, batch_size=bs, optimizer=o, model=m) for lr in (0.1, 0.2) for bs in (32, 64)
            for o in ("sgd", "adam") for m in ("softmax", "mlp")]
    assert not HeatmapFigure().applies(four, OPTIONS)


def test_a_three_field_sweep_is_one_heatmap_per_value_of_the_shortest_field() -> None:
    def final(optimizer: str, lr: float, bs: int, seed: int) -> float:
        return round((0.5 if optimizer == "sgd" else 0.6) + lr - bs / 1000 + seed / 100, 6)

    runs = [run(optimizer=o, lr=lr, batch_size=bs, seed=seed, accuracy=[0.1, 0.2, 0.3, final(o, lr, bs, seed)])
            for o in ("sgd", "adam") for lr in (0.1, 0.2, 0.3) for bs in (32, 64) for seed in (0, 1)]
    fig = heatmap_figure("g", runs, "test")
    *panels, colour_bar = fig.axes
    assert [ax.get_title() for ax in panels] == ["optimizer = adam", "optimizer = sgd"]
    assert fig._suptitle.get_text() == "g: final test accuracy"
    assert "final test accuracy" in colour_bar.get_ylabel()
    assert [t.get_text() for t in panels[0].get_yticklabels()] == ["0.1", "0.2", "0.3"]  # shared by both
    assert panels[1].get_shared_y_axes().joined(panels[0], panels[1])
    for ax, optimizer in zip(panels, ("adam", "sgd"), strict=True):
        assert [t.get_text() for t in ax.get_xticklabels()] == ["32", "64"]
        assert ax.get_xlabel() == "batch_size"
        grid = np.asarray(ax.images[0].get_array())
        for i, lr in enumerate((0.1, 0.2, 0.3)):
            for j, bs in enumerate((32, 64)):
                assert grid[i, j] == pytest.approx(np.mean([final(optimizer, lr, bs, s) for s in (0, 1)]))
    assert panels[0].images[0].get_clim() == panels[1].images[0].get_clim()  # one colour scale for both
    assert panels[0].get_ylabel() == "lr"


def test_params_applies_to_trajectories_of_two_or_more_points() -> None:
    assert ParamsFigure().applies([regression()], OPTIONS)
    one_point = run(params={"W": [None, None, None, 1.0]})
    assert not ParamsFigure().applies([one_point, run()], OPTIONS)


def test_target_profile_and_scaling_apply_where_their_data_is() -> None:
    assert not TargetFigure().applies([run(), run(lr=0.2)], OPTIONS)
    assert TargetFigure().applies([run(target=0.5, target_s=1.0)], OPTIONS)
    one_each = [run("a", target=0.5, target_s=1.0), run("b", optimizer="adam", target=0.5, target_s=2.0)]
    assert not ProfileFigure().applies(one_each, OPTIONS)  # no problem with two optimizers: nothing compared
    compared = [*one_each, run("a", optimizer="adam", target=0.5, target_s=3.0)]
    assert ProfileFigure().applies(compared, OPTIONS)
    assert not ProfileFigure().applies([r for r in compared if r["group"] == "a"], OPTIONS)  # one problem
    assert not ScalingFigure().applies([run(), run(lr=0.2)], OPTIONS)
    assert ScalingFigure().applies([run(), run(world_size=2)], OPTIONS)


def test_utilisation_applies_to_a_timeline_of_two_samples_and_is_not_default() -> None:
    assert not UtilisationFigure().applies([run(timeline={"t_s": [0.2], "cpu_percent": [90.0]})], OPTIONS)
    assert UtilisationFigure().applies([run(timeline={"t_s": [0.2, 0.4], "cpu_percent": [90.0, 95.0]})], OPTIONS)
    assert not UtilisationFigure.default


def test_curves_apply_to_what_was_logged() -> None:
    assert LossFigure().applies([regression()], OPTIONS)
    assert not LossFigure().applies([run(loss=[math.nan] * 4)], OPTIONS)
    assert not AccuracyFigure().applies([regression()], OPTIONS)
    assert AccuracyFigure().applies([run()], OPTIONS)


def test_loss_scales_applies_to_regressions_and_losses_over_two_decades() -> None:
    assert LossScalesFigure().applies([regression()], OPTIONS)
    assert not LossScalesFigure().applies([run()], OPTIONS)  # 2.3 -> 0.5: one view says it all
    assert LossScalesFigure().applies([run(), run(lr=0.5, loss=[2.3, 0.1, 0.01, 0.005])], OPTIONS)
    # a blow-up is not a loss that spans decades
    assert not LossScalesFigure().applies([run(loss=[2.3, 50.0, 900.0, 1e4], diverged=True)], OPTIONS)


def test_error_applies_where_cases_differ_in_what_an_epoch_costs() -> None:
    assert not ErrorFigure().applies([run(lr=0.1), run(lr=0.2)], OPTIONS)
    assert ErrorFigure().applies([run(model_kwargs={"filters": 1}), run(model_kwargs={"filters": 64})], OPTIONS)
    assert ErrorFigure().applies([run(batch_size=20), run(batch_size=500)], OPTIONS)
    assert ErrorFigure().applies([run(), run(model="mlp")], OPTIONS)
    assert not ErrorFigure().applies([regression(), regression(batch_size=20)], OPTIONS)  # no accuracy
    untimed = [run(batch_size=20, times=[None] * 4), run(batch_size=500, times=[None] * 4)]
    assert not ErrorFigure().applies(untimed, OPTIONS)


def test_seeds_applies_to_a_configuration_with_two_seeds() -> None:
    assert not SeedsFigure().applies([run(lr=0.1), run(lr=0.2)], OPTIONS)
    assert SeedsFigure().applies([run(lr=0.1), run(lr=0.2), run(lr=0.2, seed=1)], OPTIONS)


def test_gap_applies_to_two_configurations_with_train_and_held_out_accuracy() -> None:
    assert not GapFigure().applies([run(), run(seed=1)], OPTIONS)  # one configuration
    assert GapFigure().applies([run(), run(lr=0.2)], OPTIONS)
    assert not GapFigure().applies([regression(), regression(lr=0.2)], OPTIONS)
    no_train = [run(), run(lr=0.2)]
    for record in no_train:
        record["final"]["train_accuracy"] = None
    assert not GapFigure().applies(no_train, OPTIONS)


# ------------------------------------------------------------------------ default figure set
def study_runs() -> list[dict[str, Any]]:
    """Four groups, each supporting different figures."""
    sweep = [run("sweep", lr=lr, seed=seed, accuracy=[0.1, 0.4, 0.6, 0.7 + lr / 10 + seed / 100])
             for lr in (0.01, 0.1, 0.5) for seed in (0, 1)]
    filters = [run("filters", model_kwargs={"filters": n}, times=[0.0, n / 8, n / 4, n / 2]) for n in (1, 8, 64)]
    linear = [regression(group="linear", lr=lr) for lr in (0.01, 0.1)]
    single = [run("single")]
    return sweep + filters + linear + single


def drawn(records: list[dict[str, Any]], tmp_path: Path, options: FigureOptions | None = None,
          notes: list[str] | None = None) -> set[str]:
    paths = write_figures(records, tmp_path, options, notes=notes)
    return {p.name for p in paths}


def test_the_default_set_is_what_each_group_supports(tmp_path: Path) -> None:
    assert drawn(study_runs(), tmp_path) == {
        "sweep-loss.png", "sweep-accuracy.png", "sweep-lr.png", "sweep-seeds.png", "sweep-gap.png",
        "filters-loss.png", "filters-accuracy.png", "filters-error.png", "filters-gap.png",
        # the heatmap of filters against nothing, lr against nothing: one varied field is no grid
        "linear-loss.png", "linear-loss-scales.png", "linear-lr.png", "linear-params.png",
        "single-loss.png", "single-accuracy.png"}
    defaults = {name for name, kind in figure_kinds().items() if kind.default}
    assert defaults == set(figure_kinds()) - {"utilisation"}


def test_a_kind_asked_for_by_name_that_applies_nowhere_says_so_in_one_line(tmp_path: Path) -> None:
    notes: list[str] = []
    names = drawn(study_runs(), tmp_path / "named", FigureOptions(kinds=("loss", "heatmap", "scaling")), notes)
    assert {n.rsplit("-", 1)[1] for n in names} == {"loss.png"}
    assert notes == [
        "--figures heatmap: drawn for no group; it needs cases that differ in two case fields (a third makes "
        "panels), each run at 2 or more values of the other",
        "--figures scaling: not drawn; it needs a case run on world size 1 and on a larger world size"]
    notes.clear()
    drawn(study_runs(), tmp_path / "all", FigureOptions.parse("all", available=list(figure_kinds())), notes)
    assert notes == []  # `all` is "whatever applies", not a request for each kind


def test_the_command_line_warns_about_a_figure_it_cannot_draw(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    entries = [{"group": r["group"], "name": f"test_x[{i}]", "fullname": f"suite.py::test_x[{i}]",
                "extra_info": {"convbench": _result(r)}} for i, r in enumerate(study_runs())]
    path = tmp_path / "study.json"
    path.write_text(json.dumps({"machine_info": {}, "commit_info": {}, "benchmarks": entries}), encoding="utf-8")
    capsys.readouterr()
    code = main(["report", str(path), "-o", str(tmp_path / "out"), "--figures", "loss,profile"])
    err = capsys.readouterr().err
    assert code == 0
    assert err == ("convbench: warning: --figures profile: not drawn; it needs 2 or more groups with a target "
                   "that some optimizer reached, one of them run with 2 or more optimizers (a profile compares "
                   "optimizers over problems)\n")
    assert {p.name for p in (tmp_path / "out" / "figures").iterdir()} == {
        f"{group}-loss.png" for group in ("sweep", "filters", "linear", "single")}


def _result(record: dict[str, Any]) -> dict[str, Any]:
    """The run as a valid result file entry (`convbench.result`), from the figure fields built above."""
    from convbench.result import RunResult, Target, Timing

    curves = record["curves"]
    result = RunResult(
        case_id=record["case_id"], case=record["case"], scale="quick", device="cpu",
        world_size=record["world_size"], steps=record["steps"], steps_planned=record["steps"],
        epochs=record["epochs"], samples=1000, diverged=record["diverged"], divergence=None,
        timing=Timing(setup_s=0.1, train_s=record["timing"]["train_s"], eval_s=0.1), samples_per_s=100.0,
        final=record["final"], best=record["final"], target=Target(), curves=curves, stop_reason="budget")
    return result.to_dict()


# ------------------------------------------------------------------------------ new kinds
def test_error_figure_is_one_minus_accuracy_against_epochs_and_time() -> None:
    runs = [run(model_kwargs={"filters": 4}, accuracy=[0.1, 0.5, 0.8, 0.9], times=[0.0, 1.0, 2.0, 3.0]),
            run(model_kwargs={"filters": 64}, accuracy=[0.1, 0.6, 0.9, 0.99], times=[0.0, 5.0, 10.0, 15.0],
                epochs=0.6)]
    fig = curves.error_figure("g", runs, "test")
    epochs_ax, time_ax = fig.axes
    assert epochs_ax.get_xlabel().startswith("epoch") and time_ax.get_xlabel().startswith("training time")
    assert epochs_ax.get_yscale() == time_ax.get_yscale() == "log"
    assert epochs_ax.get_ylabel() == "test error (1 - accuracy, log scale)"
    for ax, key in ((epochs_ax, "epoch"), (time_ax, "time_s")):
        lines = labelled(ax)
        assert [line.get_label() for line in lines] == [r["case_id"] for r in runs]
        for line, record in zip(lines, runs, strict=True):
            xy = line.get_xydata()
            np.testing.assert_allclose(xy[:, 0], record["curves"]["eval"][key])
            np.testing.assert_allclose(xy[:, 1], 1 - np.array(record["curves"]["eval"]["test_accuracy"]))
    assert curves.error_figure("g", runs, "test", log_y=False).axes[0].get_yscale() == "linear"


def test_loss_scales_draws_the_same_curves_on_a_linear_and_a_log_axis() -> None:
    runs = [regression(lr=0.1, loss=[1.0, 0.1, 0.01, 0.001]), regression(lr=0.01, loss=[1.0, 0.5, 0.3, 0.2])]
    fig = curves.loss_scales_figure("g", runs)
    linear, log = fig.axes
    assert (linear.get_yscale(), log.get_yscale()) == ("linear", "log")
    assert linear.get_ylim()[0] == 0
    for ax in (linear, log):
        lines = labelled(ax)
        assert len(lines) == 2
        for line, record in zip(lines, runs, strict=True):
            np.testing.assert_allclose(line.get_xydata(), np.column_stack([STEPS, record["curves"]["train"]["loss"]]))
    assert LossScalesFigure.__doc__ and "Why a figure kind" in LossScalesFigure.__doc__


def test_seeds_figure_shows_each_seed_the_mean_and_the_range() -> None:
    finals = {"all sources": [0.80, 0.86, 0.90], "fixed order": [0.85, 0.86, 0.87]}
    runs = [run(lr=lr, seed=seed, accuracy=[0.1, 0.5, 0.7, final])
            for lr, values in zip((0.1, 0.2), finals.values(), strict=True) for seed, final in enumerate(values)]
    runs.append(run(lr=0.3))  # one seed: no spread to show
    fig = seeds_figure("g", runs)
    ax = fig.axes[0]
    rows = {tick.get_text(): y for tick, y in zip(ax.get_yticklabels(), ax.get_yticks(), strict=True)}
    assert set(rows) == {"softmax-sgd-lr0.1-bs100 (3 seeds)", "softmax-sgd-lr0.2-bs100 (3 seeds)"}
    assert "1 configuration with one seed not shown" in ax.get_title()
    for (name, y), values in zip(rows.items(), finals.values(), strict=True):
        points = [line for line in ax.lines if line.get_marker() == "o" and np.all(line.get_ydata() == y)]
        assert sorted(points[0].get_xdata()) == pytest.approx(values), name
        means = [line for line in ax.lines if line.get_marker() == "|" and line.get_ydata()[0] == y]
        assert means[0].get_xdata()[0] == pytest.approx(np.mean(values))
        spread = max(values) - min(values)
        assert any(t.get_text() == f" range {spread:.3g}, sd {np.std(values, ddof=1):.2g}" for t in ax.texts)
    ranges = ax.collections[0].get_segments() + ax.collections[1].get_segments()
    assert sorted(tuple(np.round(s[:, 0], 6)) for s in ranges) == [(0.8, 0.9), (0.85, 0.87)]
    low, high = ax.get_xlim()  # 0.8 to 0.9, and room for the labels: far less than 0-1, and it says so
    assert ax.get_xlabel() == f"final test accuracy (one point per seed) (axis zoomed to {low:.3g}-{high:.3g}, not 0-1)"


def test_seeds_figure_marks_a_stalled_seed_with_a_cross() -> None:
    runs = [run(seed=0, accuracy=[0.1, 0.5, 0.7, 0.9]), run(seed=1, accuracy=[0.1, 0.1, 0.1, 0.11], stalled=True)]
    ax = seeds_figure("g", runs).axes[0]
    (cross,) = [line for line in ax.lines if line.get_marker() == "x"]
    assert list(cross.get_xdata()) == [0.11]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["softmax-sgd-lr0.1-bs100 (2 seeds) (1 stalled)"]


def test_gap_figure_bars_are_train_held_out_and_their_difference() -> None:
    plain = [run(seed=s, accuracy=[0.1, 0.5, 0.7, a], train_accuracy=[0.1, 0.6, 0.9, t])
             for s, (t, a) in enumerate([(0.99, 0.80), (0.97, 0.82)])]
    augmented = [run(lr=0.2, seed=s, accuracy=[0.1, 0.5, 0.7, a], train_accuracy=[0.1, 0.6, 0.8, t])
                 for s, (t, a) in enumerate([(0.86, 0.84), (0.88, 0.85)])]
    fig = gap_figure("g", plain + augmented)
    acc_ax, gap_ax = fig.axes
    labels = [t.get_text() for t in acc_ax.get_yticklabels()]
    assert labels == ["softmax-sgd-lr0.1-bs100 (2 seeds)", "softmax-sgd-lr0.2-bs100 (2 seeds)"]
    bars = acc_ax.patches  # train bars, then held-out bars, each in row order
    assert [b.get_width() for b in bars] == pytest.approx([0.98, 0.87, 0.81, 0.845])
    assert to_rgba(bars[0].get_facecolor()) != to_rgba(bars[2].get_facecolor())
    assert [b.get_width() for b in gap_ax.patches] == pytest.approx([0.17, 0.025])
    assert {t.get_text() for t in gap_ax.texts} == {"+0.170", "+0.025"}
    assert "train minus test" in gap_ax.get_title()
    assert {t.get_text() for t in fig.legends[0].get_texts()} == {"train (mean over seeds)", "test (mean over seeds)"}


# ------------------------------------------------------------------------------- stalled runs
def test_legends_count_stalled_runs_like_diverged_ones() -> None:
    runs = [run(seed=0, stalled=True), run(seed=1, stalled=False), run(seed=2, diverged=True, stalled=True)]
    assert set_label(runs).endswith("(mean of 3 seeds) (1 diverged) (2 stalled)")
    assert set_label([run(stalled=True)]).endswith("(stalled)")
    assert "stalled" not in set_label([run()])  # a result from before the verdict has no field


@pytest.mark.parametrize("flag", ["diverged", "stalled"])
def test_a_curve_with_a_failed_seed_ends_in_a_cross(flag: str) -> None:
    failed = run(lr=1.0, loss=[2.3, 2.3, 2.29, 2.3], **{flag: True})
    ax = curves.curve_figure("g", [run(), failed], "loss").axes[0]
    crosses = [line for line in ax.lines if line.get_marker() == "x"]
    assert len(crosses) == 1
    assert crosses[0].get_xydata().tolist() == [[30.0, 2.3]]
    assert labelled(ax)[1].get_label() == f"{failed['case_id']} ({flag})"
    assert to_rgba(crosses[0].get_color()) == to_rgba(labelled(ax)[1].get_color())


def test_scaling_leaves_stalled_runs_out_of_the_speedup_and_names_them() -> None:
    family = [run("s", world_size=1, train_s=4.0), run("s", world_size=2, train_s=2.5, stalled=True),
              run("s", world_size=4, train_s=1.5)]
    table = scaling_table(family)
    assert table["stalled"].tolist() == [False, True, False]
    speedups = drawn_speedups(table)
    assert math.isnan(speedups.iloc[1]) and speedups.iloc[2] == pytest.approx(4.0 / 1.5)
    assert left_out_notes(table) == ["world size 2: stalled"]
    base_stalled = scaling_table([run("s", world_size=1, train_s=4.0, stalled=True),
                                  run("s", world_size=2, train_s=2.0)])
    assert drawn_speedups(base_stalled).isna().all()
    assert left_out_notes(base_stalled) == ["world size 1: stalled", "world size 2: its world-size-1 run stalled"]
    fig = ScalingFigure().draw(None, family, OPTIONS)
    assert "world size 2: stalled" in fig._supxlabel.get_text()


@pytest.mark.parametrize("kind", [AccuracyFigure, LossFigure, LossScalesFigure])
def test_a_study_of_many_cases_keeps_its_plot_and_a_legend_that_fits(kind) -> None:
    """72 cases (the softmax study's optimizer x lr sweep) once squeezed the axes to nothing: matplotlib
    warned "axes sizes collapsed to zero" and drew no plot. The legend goes under the axes, inside the figure."""
    import warnings

    runs = [run(lr=lr, optimizer=name, accuracy=[0.1, 0.2 + lr, 0.3 + lr, 0.4 + lr])
            for name in ("sgd", "momentum", "nesterov", "adam", "adagrad", "adadelta", "rmsprop", "ftrl", "ftrl")
            for lr in (1e-4, 5e-4, 1e-3, 5e-3, 0.01, 0.05, 0.1, 0.5)][:72]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the collapse is a UserWarning at draw time
        fig = kind().draw("g", runs, FigureOptions())
        fig.canvas.draw()
    (legend,) = fig.legends  # one legend for the figure, under its panels
    assert all(ax.get_legend() is None for ax in fig.axes)
    assert len(legend.get_texts()) == len({set_label([r]) for r in runs})
    figure_box, legend_box = fig.bbox, legend.get_window_extent()
    assert figure_box.x0 <= legend_box.x0 and legend_box.x1 <= figure_box.x1  # no label cut at the sides
    for ax in fig.axes:
        box = ax.get_window_extent()
        assert box.height > 0.25 * figure_box.height / len(fig.axes) and box.y0 > legend_box.y1 - 1
