"""The interactive curves of index.html (`convbench.report.interactive`): the same numbers as the static
loss and accuracy figures, one legend entry per configuration that toggles both panels, gaps (not invalid
JSON) where a run went non-finite, a cross where a run diverged or stalled, and the accuracy target."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from quiet_fixtures import quiet_copy

from convbench.report import load as loader
from convbench.report.figures.curves import curve_series, moving_mean
from convbench.report.figures.style import set_label
from convbench.report.identity import seed_sets
from convbench.report.interactive import curves_div, has_curves, write_plotly_js

DATA = Path(__file__).parent / "data"


def figure_of(div: str) -> dict:
    """The traces and layout plotly is given: the JSON arguments of the div's ``Plotly.newPlot`` call."""
    call = div[div.index("Plotly.newPlot("):]
    decoder = json.JSONDecoder()
    at = call.index("[")
    data, end = decoder.raw_decode(call, at)
    layout, _ = decoder.raw_decode(call, call.index("{", end))
    return {"data": data, "layout": layout}


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    folder = tmp_path_factory.mktemp("interactive")
    paths = [quiet_copy(DATA / name, folder) for name in ("compare.json", "figures.json")]
    return [record for path in paths for record in loader.load(path).records]


def group(records: list[dict], name: str) -> list[dict]:
    runs = [r for r in records if r["group"] == name]
    assert runs, f"no group {name} in the checked-in results"
    return runs


def test_one_legend_entry_per_configuration_toggles_both_panels(records):
    runs = group(records, "test_single")
    figure = figure_of(curves_div(runs))
    lines = [t for t in figure["data"] if t["mode"] != "markers"]
    configurations = seed_sets(runs)
    assert len(lines) == 2 * len(configurations)  # loss and accuracy
    shown = [t["name"] for t in lines if t["showlegend"]]
    assert sorted(shown) == sorted(set_label(c) for c in configurations)
    for trace in lines:
        assert trace["legendgroup"] == trace["name"]  # one click hides its loss and its accuracy
    assert {t["xaxis"] for t in lines} == {"x", "x2"}


def test_curves_are_the_numbers_the_static_figures_draw(records):
    runs = group(records, "test_seeded")  # one configuration, three seeds: the mean is drawn
    figure = figure_of(curves_div(runs, smooth=3))
    loss = next(t for t in figure["data"] if t["xaxis"] == "x" and t["mode"] == "lines")
    xs, values = curve_series(runs, "loss", "test", "step")
    assert loss["x"] == pytest.approx(xs.tolist())
    assert loss["y"] == pytest.approx(moving_mean(values, 3).mean(axis=0).tolist())
    accuracy = next(t for t in figure["data"] if t["xaxis"] == "x2" and t["mode"] != "markers")
    _, values = curve_series(runs, "accuracy", "test", "step")
    assert accuracy["y"] == pytest.approx(values.mean(axis=0).tolist())
    assert "moving mean of 3 points" in json.dumps(figure["layout"])


def test_a_diverged_run_ends_in_a_cross_and_its_non_finite_points_are_gaps(records):
    runs = [dict(r) for r in group(records, "test_diverging")]
    assert all(r["diverged"] for r in runs)
    train = dict(runs[0]["curves"]["train"])
    train["loss"] = [*train["loss"][:-1], math.inf]  # the last logged loss overflowed
    runs[0]["curves"] = {**runs[0]["curves"], "train": train}
    div = curves_div(runs)
    assert "Infinity" not in div and "NaN" not in div  # plotly's JSON would break the page
    figure = figure_of(div)
    loss = next(t for t in figure["data"] if t["xaxis"] == "x" and t["mode"] == "lines")
    assert loss["y"][-1] is None
    crosses = [t for t in figure["data"] if t["mode"] == "markers"]
    assert crosses and all(t["marker"]["symbol"] == "x" for t in crosses)
    last_finite = max(i for i, y in enumerate(loss["y"]) if y is not None)
    assert crosses[0]["y"] == [loss["y"][last_finite]]


def test_accuracy_target_is_a_dashed_line(records):
    runs = group(records, "test_single")
    values = {r["target"]["value"] for r in runs if (r.get("target") or {}).get("metric") == "accuracy"}
    assert values
    shapes = figure_of(curves_div(runs))["layout"]["shapes"]
    assert sorted(s["y0"] for s in shapes) == sorted(values) and all(s["line"]["dash"] == "dash" for s in shapes)


def test_a_regression_group_has_one_panel(records):
    runs = group(records, "test_linear")
    figure = figure_of(curves_div(runs))
    assert {t["xaxis"] for t in figure["data"]} == {"x"}
    assert figure["layout"]["yaxis"]["type"] == "log"


def test_runs_without_curves_get_none():
    assert not has_curves([{"curves": {"train": {"step": [], "loss": []}}}, {"case_id": "x"}])
    assert has_curves([{"curves": {"train": {"step": [0], "loss": [2.3]}}}])


def test_plotly_js_is_written_beside_the_page(tmp_path):
    path = write_plotly_js(tmp_path)
    text = path.read_text(encoding="utf-8")
    assert path.parent == tmp_path and len(text) > 1_000_000 and re.search(r"plotly\.js v\d", text[:2000])
