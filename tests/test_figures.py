"""`convbench report` figures, checked against the numbers of a real (tiny) benchmark session.

The input is checked in: ``tests/data/figures.json``, made by ``tests/data/make_fixtures.py`` from the
suite ``tests/data/suites/figures.py``: an lr x batch_size grid of softmax runs on mnist-5k with two seeds
each and an accuracy target; sgd and adam at two learning rates with a higher target (one run misses it);
and one linear-regression run, which records its W and b trajectory. Checks read the plotted data back
from the matplotlib figures and compare it with that session's benchmark JSON.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from quiet_fixtures import quiet_copy

from convbench.cli import main
from convbench.report import identity
from convbench.report import load as loader
from convbench.report.figures import X_AXES, FigureOptions
from convbench.report.figures.curves import curve_figure
from convbench.report.figures.params import params_figure
from convbench.report.figures.sweeps import heatmap_data, heatmap_figure, lr_figure
from convbench.report.figures.targets import performance_ratios, profile_figure, target_figure
from convbench.report.figures.utilisation import utilisation_figure, utilisation_series

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DATA = Path(__file__).parent / "data"


@dataclass
class Suite:
    json_path: Path
    records: list[dict]  # as the report reads them (with "group")

    def group(self, name: str) -> list[dict]:
        return [r for r in self.records if r["group"] == name]


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Suite:
    path = quiet_copy(DATA / "figures.json", tmp_path_factory.mktemp("figures"))  # legends without "busy"
    records = loader.load(path).records
    assert len(records) == 13
    missed = [r for r in records if r["target"]["value"] is not None and not r["target"]["reached"]]
    assert missed, "the suite should have a run that misses its target"
    return Suite(path, records)


def run_report(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["report", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def data_lines(ax) -> list:
    """The plotted series (markers for diverged ends and start/end points have no legend label; target
    lines are labelled ``target: ...``)."""
    return [line for line in ax.lines
            if not line.get_label().startswith(("_", "target: ", "diverged or stalled"))]


def by_seeds(records: list[dict]) -> dict[str, list[dict]]:
    """Seedless case id -> its runs, computed here independently of the report's grouping."""
    sets: dict[str, list[dict]] = {}
    for record in records:
        sets.setdefault(identity.seedless_id(record["case_id"]), []).append(record)
    return sets


def band_limits(collection, x: float) -> tuple[float, float]:
    vertices = collection.get_paths()[0].vertices
    ys = vertices[np.isclose(vertices[:, 0], x), 1]
    return float(ys.min()), float(ys.max())


# ------------------------------------------------------------------------------------- files
def test_every_kind_is_written_as_png_and_svg(suite: Suite, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_report(capsys, suite.json_path, "-o", tmp_path, "--figures", "all", "--format", "png,svg")
    assert code == 0, err
    per_group = {"test_grid": ["loss", "accuracy", "lr", "heatmap", "target", "error", "seeds", "gap"],
                 "test_optimizers": ["loss", "accuracy", "lr", "heatmap", "target", "gap"],
                 "test_linear": ["loss", "params", "loss-scales"]}
    # telemetry samples every 0.2 s, so whether a tiny run has a utilisation timeline depends on its length
    results = [b["extra_info"]["convbench"] for b in json.loads(suite.json_path.read_text())["benchmarks"]]
    for group, kinds in per_group.items():
        if any(utilisation_series(r) for r in results if r["group"] == group):
            kinds.append("utilisation")
    stems = [f"{group}-{kind}" for group, kinds in per_group.items() for kind in kinds] + ["performance-profile"]
    expected = {f"{stem}.{fmt}" for stem in stems for fmt in ("png", "svg")}
    assert {p.name for p in (tmp_path / "figures").iterdir()} == expected
    for name in expected:
        data = (tmp_path / "figures" / name).read_bytes()
        if name.endswith(".png"):
            assert data.startswith(PNG_SIGNATURE), name
            assert len(data) > 10_000, name
        else:
            text = data.decode("utf-8")
            assert text.startswith("<?xml") and "<svg" in text and text.rstrip().endswith("</svg>"), name
    written = sum(1 for p in tmp_path.rglob("*") if p.is_file())
    assert f"wrote {written} files" in out


def test_default_is_every_kind_the_data_supports_as_png(suite: Suite, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_report(capsys, suite.json_path, "-o", tmp_path)
    assert code == 0, err
    assert err == ""  # kinds that apply nowhere are left out without a word when nobody asked for them
    names = {p.name for p in (tmp_path / "figures").iterdir()}
    # lr x batch_size with 2 seeds and a target; sgd and adam at two rates with a target; one linear regression
    assert names == {f"test_grid-{kind}.png" for kind in ("loss", "accuracy", "lr", "heatmap", "target", "error",
                                                          "seeds", "gap")} | \
        {f"test_optimizers-{kind}.png" for kind in ("loss", "accuracy", "lr", "heatmap", "target", "gap")} | \
        {"test_linear-loss.png", "test_linear-params.png", "test_linear-loss-scales.png", "performance-profile.png"}


def test_svg_only(suite: Suite, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_report(capsys, suite.json_path, "-o", tmp_path, "--format", "svg", "--figures", "params")
    assert code == 0, err
    assert {p.name for p in (tmp_path / "figures").iterdir()} == {"test_linear-params.svg"}


@pytest.mark.parametrize(("args", "message"), [
    (["--figures", "loss,pie"], "--figures: unknown 'pie'; choose from loss, accuracy"),
    (["--format", "gif"], "--format: unknown 'gif'; choose from png, svg"),
])
def test_bad_figure_options_are_one_line_errors(suite: Suite, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                args: list[str], message: str) -> None:
    code, _, err = run_report(capsys, suite.json_path, "-o", tmp_path, *args)
    assert code == 2
    assert err.startswith(f"convbench: error: {message}") and err.count("\n") == 1
    assert not (tmp_path / "figures").exists()


# ------------------------------------------------------------------------------------ curves
def test_loss_curves_are_seed_means_with_min_max_bands(suite: Suite) -> None:
    runs = suite.group("test_grid")
    fig = curve_figure("test_grid", runs, "loss", "test")
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    assert ax.get_xlabel() == "training step"
    assert "train loss" in ax.get_ylabel()
    assert ax.get_legend() is not None
    sets = by_seeds(runs)
    lines = data_lines(ax)
    assert len(lines) == len(sets) == 4
    assert len(ax.collections) == 4  # one band per configuration, each has 2 seeds
    for line, band in zip(lines, ax.collections, strict=True):
        name = line.get_label().removesuffix(" (mean of 2 seeds)")
        members = sets[name]
        assert len(members) == 2
        steps = members[0]["curves"]["train"]["step"]
        losses = np.array([m["curves"]["train"]["loss"] for m in members], dtype=float)
        xy = line.get_xydata()
        np.testing.assert_array_equal(xy[:, 0], steps)
        np.testing.assert_allclose(xy[:, 1], losses.mean(axis=0), rtol=1e-12)
        for index, step in enumerate(steps):
            low, high = band_limits(band, step)
            assert low == pytest.approx(losses[:, index].min(), rel=1e-12)
            assert high == pytest.approx(losses[:, index].max(), rel=1e-12)
    linear = curve_figure("test_grid", runs, "loss", "test", log_y=False).axes[0]
    assert linear.get_yscale() == "linear"


@pytest.mark.parametrize("x", ["epoch", "time"])
def test_accuracy_against_epoch_and_time(suite: Suite, x: str) -> None:
    runs = suite.group("test_grid")
    ax = curve_figure("test_grid", runs, "accuracy", "test", x=x).axes[0]
    assert ax.get_xlabel() == X_AXES[x]
    assert ax.get_ylabel() == "test accuracy (fraction correct)"
    sets = by_seeds(runs)
    key = {"epoch": "epoch", "time": "time_s"}[x]
    for line in data_lines(ax):
        members = sets[line.get_label().removesuffix(" (mean of 2 seeds)")]
        xy = line.get_xydata()
        expected_x = np.mean([m["curves"]["eval"][key] for m in members], axis=0)
        expected_y = np.mean([m["curves"]["eval"]["test_accuracy"] for m in members], axis=0)
        np.testing.assert_allclose(xy[:, 0], expected_x, rtol=1e-9)
        np.testing.assert_allclose(xy[:, 1], expected_y, rtol=1e-12)


def test_smooth_draws_the_trailing_moving_mean_of_the_loss(suite: Suite, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    runs = suite.group("test_grid")
    raw = {line.get_label(): line.get_ydata() for line in data_lines(curve_figure("g", runs, "loss").axes[0])}
    ax = curve_figure("g", runs, "loss", smooth=3).axes[0]
    assert "moving mean of 3 points" in ax.get_ylabel()
    for line in data_lines(ax):
        values = raw[line.get_label()]
        expected = [np.mean(values[max(0, i - 2):i + 1]) for i in range(len(values))]
        np.testing.assert_allclose(line.get_ydata(), expected, rtol=1e-12)
    code, _, err = run_report(capsys, suite.json_path, "-o", tmp_path, "--smooth", "0")
    assert code == 2 and "--smooth must be a whole number of logged points, 1 or more, got 0" in err


def test_accuracy_figure_draws_each_accuracy_target(suite: Suite) -> None:
    runs = [r for r in suite.records if r["target"].get("value") is not None]
    assert runs, "the checked-in suite has cases with a target"
    ax = curve_figure("g", runs, "accuracy", "test").axes[0]
    dashed = {line.get_ydata()[0]: line.get_label() for line in ax.lines if line.get_linestyle() == "--"}
    expected = {r["target"]["value"]: r["target"]["split"] for r in runs}
    assert dashed == {value: f"target: {split} accuracy {value:g}" for value, split in expected.items()}
    assert not [line for line in curve_figure("g", runs, "loss", "test").axes[0].lines
                if line.get_linestyle() == "--"]  # a loss figure has no accuracy target


def test_cli_x_and_log_y_options(suite: Suite, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_report(capsys, suite.json_path, "-o", tmp_path, "--x", "time", "--no-log-y", "--figures",
                              "loss")
    assert code == 0, err
    assert (tmp_path / "figures" / "test_grid-loss.png").read_bytes().startswith(PNG_SIGNATURE)
    assert FigureOptions.parse("loss", None, "time", False) == FigureOptions(("loss",), ("png",),
                                                                                          "time", False)


# ------------------------------------------------------------------------- lr and heatmaps
def test_lr_sensitivity_marks_rates_where_a_run_diverged_or_stalled(suite: Suite) -> None:
    import copy

    runs = copy.deepcopy(suite.group("test_grid"))
    bad = runs[0]
    bad["diverged"] = True
    ax = lr_figure("g", runs, "test").axes[0]
    crosses = [line for line in ax.lines if line.get_marker() == "x" and len(line.get_xdata())]
    assert [list(line.get_xdata()) for line in crosses] == [[bad["case"]["lr"]]]
    assert "diverged or stalled (some seed)" in [line.get_label() for line in ax.lines]
    clean = lr_figure("g", suite.group("test_grid"), "test").axes[0]
    assert not [line for line in clean.lines if line.get_marker() == "x"]


def test_lr_sensitivity_is_the_mean_final_accuracy_per_lr(suite: Suite) -> None:
    runs = suite.group("test_grid")
    ax = lr_figure("test_grid", runs, "test").axes[0]
    assert ax.get_xscale() == "log"
    assert ax.get_xlabel() == "learning rate (log scale)"
    low, high = ax.get_ylim()  # autoscaled to a narrow band of accuracies: the label says so
    assert high - low < 0.5
    assert ax.get_ylabel() == f"final test accuracy (mean over seeds) (axis zoomed to {low:.3g}-{high:.3g}, not 0-1)"
    lines = {line.get_label(): line.get_xydata() for line in data_lines(ax)}
    assert set(lines) == {"sgd, batch_size=32", "sgd, batch_size=64"}
    for label, xy in lines.items():
        batch = int(label.rsplit("=", 1)[1])
        for lr, value in xy:
            finals = [r["final"]["test_accuracy"] for r in runs
                      if r["case"]["lr"] == lr and r["case"]["batch_size"] == batch]
            assert len(finals) == 2
            assert value == pytest.approx(np.mean(finals), rel=1e-12)
        assert sorted(xy[:, 0]) == [0.05, 0.5]
    optimizers = lr_figure("test_optimizers", suite.group("test_optimizers"), "test").axes[0]
    assert {line.get_label() for line in data_lines(optimizers)} == {"sgd", "adam"}


def test_an_accuracy_axis_spanning_most_of_0_to_1_is_not_called_zoomed(suite: Suite) -> None:
    import copy

    runs = copy.deepcopy(suite.group("test_grid"))
    runs[0]["final"]["test_accuracy"], runs[1]["final"]["test_accuracy"] = 0.05, 0.98
    ax = lr_figure("g", runs, "test").axes[0]
    assert ax.get_ylim()[1] - ax.get_ylim()[0] >= 0.5
    assert ax.get_ylabel() == "final test accuracy (mean over seeds)"


def test_heatmap_of_lr_by_batch_size(suite: Suite) -> None:
    runs = suite.group("test_grid")
    fig = heatmap_figure("test_grid", runs, "test")
    ax = fig.axes[0]
    assert (ax.get_ylabel(), ax.get_xlabel()) == ("lr", "batch_size")
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0.05", "0.5"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["32", "64"]
    grid = np.asarray(ax.images[0].get_array())
    for i, lr in enumerate([0.05, 0.5]):
        for j, batch in enumerate([32, 64]):
            finals = [r["final"]["test_accuracy"] for r in runs
                      if r["case"]["lr"] == lr and r["case"]["batch_size"] == batch]
            assert grid[i, j] == pytest.approx(np.mean(finals), rel=1e-12)
    assert "final test accuracy" in fig.axes[1].get_ylabel()  # the colour bar
    field_rows, field_cols, *_ = heatmap_data(suite.group("test_optimizers"), "test")
    assert (field_rows, field_cols) == ("optimizer", "lr")


# ---------------------------------------------------------------------------------- params
def test_parameter_trajectories_are_the_recorded_values(suite: Suite) -> None:
    runs = suite.group("test_linear")
    params = runs[0]["curves"]["params"]
    fig = params_figure("test_linear", runs)
    steps_ax, plane_ax = fig.axes
    lines = {line.get_label().split(":")[0]: line.get_xydata() for line in data_lines(steps_ax)}
    assert set(lines) == {"W", "b"}
    for name, xy in lines.items():
        np.testing.assert_array_equal(xy[:, 0], params["step"])
        np.testing.assert_array_equal(xy[:, 1], np.asarray(params[name], dtype=float))
    path = data_lines(plane_ax)[0].get_xydata()
    np.testing.assert_array_equal(path, np.column_stack([params["W"], params["b"]]))
    assert (plane_ax.get_xlabel(), plane_ax.get_ylabel()) == ("W", "b")
    assert steps_ax.get_legend() is not None and plane_ax.get_legend() is not None


# ---------------------------------------------------------------------- targets and profile
def test_time_to_target_bars(suite: Suite) -> None:
    runs = suite.group("test_optimizers")
    fig = target_figure("test_optimizers", runs)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    bars = list(ax.patches)
    assert len(bars) == len(runs) == 4
    by_id = {r["case_id"]: r for r in runs}
    widest = max(r["target"]["time_s"] for r in runs if r["target"]["reached"])
    for bar, case_id in zip(bars, labels, strict=True):  # both in the order the bars were drawn
        target = by_id[case_id]["target"]
        if target["reached"]:
            assert bar.get_width() == pytest.approx(target["time_s"], rel=1e-12)
            assert bar.get_hatch() is None
        else:
            assert bar.get_hatch() == "//"  # unreached: hatched, full width, labelled
            assert bar.get_width() > widest
    assert "not reached" in [t.get_text().strip() for t in ax.texts]
    assert "time to target" in ax.get_xlabel()
    assert {t.get_text() for t in fig.legends[0].get_texts()} == {"reached (mean over seeds)", "not reached"}


def test_performance_profile_from_the_json_times(suite: Suite) -> None:
    # by hand: per group and optimizer, the fastest configuration's mean time over seeds (all must reach)
    times: dict[str, dict[str, float]] = {}
    for group in ("test_grid", "test_optimizers"):
        for members in by_seeds(suite.group(group)).values():
            if all(m["target"]["reached"] for m in members):
                mean = sum(m["target"]["time_s"] for m in members) / len(members)
                optimizer = members[0]["case"]["optimizer"]
                times.setdefault(group, {})[optimizer] = min(times.get(group, {}).get(optimizer, math.inf), mean)
    expected = {name: [times[g].get(name, math.inf) / min(times[g].values()) for g in ("test_grid", "test_optimizers")]
                for name in ("sgd", "adam")}
    problems, ratios = performance_ratios(suite.records)
    assert problems == ["test_grid", "test_optimizers"]
    assert ratios.keys() == expected.keys()
    for name in expected:
        assert ratios[name] == pytest.approx(expected[name], rel=1e-12)
    assert ratios["adam"][0] == math.inf  # adam was not run on test_grid
    ax = profile_figure(suite.records).axes[0]
    assert ax.get_xscale() == "log"
    assert "fraction of the 2 problems" in ax.get_ylabel()
    for line in data_lines(ax):
        for tau, fraction in line.get_xydata():
            assert fraction == sum(r <= tau for r in expected[line.get_label()]) / 2
    assert {line.get_label() for line in data_lines(ax)} == {"sgd", "adam"}


# ---------------------------------------------------------------------------------- index.html
class _Page(HTMLParser):
    """The <img> sources, <a> targets, <table> count and data-* marks of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict[str, str | None]] = []
        self.links: list[str] = []
        self.tables = 0
        self.body: dict[str, str | None] = {}
        self.external: list[str] = []
        self.scripts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        for key in ("src", "href"):
            value = attributes.get(key)
            if value and re.match(r"^[a-z]+:", value):
                self.external.append(value)
        if tag == "img":
            self.images.append(attributes)
        elif tag == "a" and not (attributes.get("href") or "#").startswith("#"):
            self.links.append(attributes["href"])
        elif tag == "table":
            self.tables += 1
        elif tag == "body":
            self.body = attributes
        elif tag == "script" and attributes.get("src"):
            self.scripts.append(attributes["src"])


def parse_page(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    return page


def expected_page(out: Path, *, interactive: bool = True) -> tuple[set[str], int]:
    """Figure files the page should show (PNG where written) and its table count. With ``interactive``
    curves (every group of these reports logged curves), each group's loss and accuracy figures are
    links beside them, not images."""
    figures = {p.relative_to(out).as_posix() for p in (out / "figures").glob("*.png")}
    figures |= {p.relative_to(out).as_posix() for p in (out / "figures").glob("*.svg")
                if not p.with_suffix(".png").exists()}
    if interactive:
        figures = {f for f in figures if not re.search(r"-(loss|accuracy)\.(png|svg)$", f)}
    tables = out / "tables"
    html_stems = {p.stem for p in tables.glob("*.html")}
    return figures, len(html_stems | {p.stem for p in tables.glob("*.csv")})


@pytest.fixture(scope="module")
def full_report(suite: Suite, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("full-report")
    code = main(["report", str(suite.json_path), "-o", str(out), "--figures", "all", "--format", "png,svg",
                 "--pivot", "lr,batch_size"])
    assert code == 0
    return out


def test_index_shows_every_table_and_figure_with_relative_links(full_report: Path) -> None:
    page = parse_page((full_report / "index.html").read_text(encoding="utf-8"))
    figures, tables = expected_page(full_report)
    assert {img["src"] for img in page.images} == figures
    assert len(page.images) == len(figures)
    assert page.tables == tables
    assert page.external == []  # nothing fetched from elsewhere
    assert page.scripts == ["plotly.min.js"] and (full_report / "plotly.min.js").stat().st_size > 1_000_000
    for target in page.links + [img["src"] for img in page.images]:
        assert (full_report / target).is_file(), target
    linked = {Path(target).name for target in page.links}
    assert {p.name for p in (full_report / "figures").iterdir()} <= linked  # every format linked
    assert {p.name for p in (full_report / "tables").iterdir() if p.suffix in (".csv", ".html")} <= linked
    for table in (full_report / "tables").glob("*.html"):  # each table's rows, inline
        row = re.search(r"<tbody>\s*<tr>.*?</tr>", table.read_text(encoding="utf-8"), flags=re.S).group(0)
        assert row in (full_report / "index.html").read_text(encoding="utf-8"), table.name


def test_index_answers_each_group_first_summary_then_figures_then_table(full_report: Path, suite: Suite) -> None:
    text = (full_report / "index.html").read_text(encoding="utf-8")
    pattern = r'<section class="group" id="group-([^"]+)">(.*?)</section>\n(?=<section class="group"|<script)'
    sections = re.findall(pattern, text, flags=re.S)
    groups = {record["group"] for record in suite.records}
    assert len(sections) == len(groups) and sections
    for stem, body in sections:
        summary, figure, table = body.find('<ul class="summary">'), body.find("<figure"), body.find("<table")
        curves = body.find(f'<div class="interactive" id="curves-{stem}-section">')
        assert 0 <= summary < curves < figure < table, stem
        assert f'href="figures/{stem}-loss.png"' in body[curves:figure]  # the static curves: a link
        assert re.search(r"<li( class=\"bad\")?>(best|stalled|diverged): ", body) and f'src="figures/{stem}-' in body
        assert f'id="table-{stem}"' in body  # its own table, not another group's
    across = text[text.index('id="across"'):]
    assert 'id="table-all_cases"' in across  # what spans groups comes after them


def test_index_without_interactive_curves_shows_every_figure(suite: Suite, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_report(capsys, suite.json_path, "-o", tmp_path, "--no-interactive")
    assert code == 0, err
    page = parse_page((tmp_path / "index.html").read_text(encoding="utf-8"))
    figures, _ = expected_page(tmp_path, interactive=False)
    assert {img["src"] for img in page.images} == figures and any(f.endswith("-loss.png") for f in figures)
    assert page.scripts == [] and not (tmp_path / "plotly.min.js").exists()


def test_index_without_figures_has_the_tables(suite: Suite, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_report(capsys, suite.json_path, "-o", tmp_path, "--no-figures")
    assert code == 0, err
    page = parse_page((tmp_path / "index.html").read_text(encoding="utf-8"))
    assert page.images == [] and page.scripts == []  # no figures: no interactive curves either
    assert page.tables == expected_page(tmp_path)[1] == 4


def _chromium() -> str:
    """Debian's chromium, installed with apt-get when missing and possible; else the test is skipped."""
    found = shutil.which("chromium")
    if found:
        return found
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.skip("chromium is not installed and cannot be (needs apt-get as root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    completed = subprocess.run(["apt-get", "install", "-y", "chromium"], capture_output=True, text=True,
                               timeout=900, check=False, env=env)
    if completed.returncode != 0:  # a fresh machine may have no package lists yet
        subprocess.run(["apt-get", "update"], capture_output=True, timeout=600, check=False, env=env)
        completed = subprocess.run(["apt-get", "install", "-y", "chromium"], capture_output=True, text=True,
                                   timeout=900, check=False, env=env)
    found = shutil.which("chromium")
    if completed.returncode != 0 or not found:
        pytest.skip(f"apt-get install chromium failed: {(completed.stderr or completed.stdout).strip()[-300:]}")
    return found


CHECK_SCRIPT = """<script>
window.addEventListener('load', function () {
  for (const img of document.images) { img.setAttribute('data-natural-width', String(img.naturalWidth)); }
  document.body.setAttribute('data-checked', String(document.images.length));
  // sort the all-cases table by lr with two clicks (descending): its first row then has the largest lr
  const table = document.querySelector('#table-all_cases table');
  const headers = Array.from(table.querySelectorAll('thead th'));
  const lr = headers.findIndex(function (th) { return th.textContent.trim() === 'lr'; });
  headers[lr].click(); headers[lr].click();
  const column = Array.from(table.tBodies[0].rows).map(function (row) { return row.cells[lr].textContent.trim(); });
  document.body.setAttribute('data-sorted-lr', column.join(' '));
  // the interactive curves: one plot per group; a click on the first legend entry hides that case's
  // traces in both panels (loss and accuracy), read after plotly's double-click wait
  const plots = document.querySelectorAll('.js-plotly-plot');
  document.body.setAttribute('data-plots', String(plots.length));
  const toggle = plots[0].querySelector('.legendtoggle');
  const box = toggle.getBoundingClientRect();
  const at = {bubbles: true, cancelable: true, clientX: box.x + 2, clientY: box.y + 2, buttons: 1};
  ['mousedown', 'mouseup', 'click'].forEach(function (kind) { toggle.dispatchEvent(new MouseEvent(kind, at)); });
  setTimeout(function () {
    const hidden = plots[0].data.filter(function (t) { return t.visible === 'legendonly'; });
    document.body.setAttribute('data-hidden', hidden.map(function (t) { return t.name; }).join('|'));
    document.body.setAttribute('data-first', plots[0].data[0].name);
  }, 1000);
});
</script>
"""


def _headless(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           "--disable-component-update", "--no-first-run", f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.slow
def test_index_in_a_headless_browser(full_report: Path, suite: Suite, tmp_path: Path) -> None:
    chromium = _chromium()
    index = full_report / "index.html"
    # a copy next to the index, with a script that marks each image's decoded width once the page has loaded
    checked = full_report / "index-check.html"
    checked.write_text(index.read_text(encoding="utf-8").replace("</body>", CHECK_SCRIPT + "</body>"),
                       encoding="utf-8")
    try:
        dumped = _headless(chromium, tmp_path / "profile", "--virtual-time-budget=10000", "--dump-dom",
                           checked.as_uri())
    finally:
        checked.unlink()
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    page = parse_page(dumped.stdout)
    figures, tables = expected_page(full_report)
    assert page.body.get("data-checked") == str(len(figures)), "the load handler did not run"
    assert {img["src"] for img in page.images} == figures
    assert page.tables == tables
    unloaded = [img["src"] for img in page.images if int(img.get("data-natural-width") or 0) <= 0]
    assert unloaded == []
    groups = {record["group"] for record in suite.records}
    assert page.body["data-plots"] == str(len(groups))  # plotly drew every group's curves, offline
    hidden = page.body["data-hidden"].split("|")  # the legend click hid one case, in both panels
    assert hidden == [page.body["data-first"]] * 2
    sorted_lr = [float(value) for value in page.body["data-sorted-lr"].split()]  # a header click sorted the table
    assert len(sorted_lr) > 1 and sorted_lr == sorted(sorted_lr, reverse=True)
    shot = tmp_path / "shot.png"
    taken = _headless(chromium, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,2000",
                      index.as_uri())
    assert taken.returncode == 0 and shot.is_file(), taken.stderr[-2000:]
    from PIL import Image

    with Image.open(shot) as image:
        assert image.size == (1280, 2000)
        colours = image.convert("RGB").getcolors(maxcolors=1_000_000)
    assert colours is not None and len(colours) > 50  # text and tables drawn, not a blank page


def test_utilisation_figure_plots_each_device_timeline():
    gpu_run = {"case_id": "cnn-w2", "telemetry": {"timeline": {
        "t_s": [0.2, 0.4, 0.6], "gpu0_utilization": [10.0, 95.0, 97.0], "gpu1_utilization": [5.0, None, 90.0],
        "gpu0_memory_utilization": [1.0, 2.0, 3.0], "gpu0_power_w": [50.0, 60.0, 70.0]}}}
    cpu_run = {"case_id": "cnn", "telemetry": {"timeline": {"t_s": [0.2, 0.4], "cpu_percent": [180.0, 199.0],
                                                            "rss_bytes": [1e9, 1e9]}}}
    quiet_run = {"case_id": "tiny", "telemetry": {"timeline": {"t_s": []}}}
    assert set(utilisation_series(gpu_run)) == {"gpu0", "gpu1"}  # not memory utilisation or power
    assert utilisation_series(gpu_run)["gpu1"] == ([0.2, 0.6], [5.0, 90.0])  # a missing sample is skipped
    assert utilisation_series(cpu_run) == {"cpu": ([0.2, 0.4], [180.0, 199.0])}
    assert utilisation_series(quiet_run) == {} and utilisation_series({"case_id": "x"}) == {}
    fig = utilisation_figure("g", [gpu_run, cpu_run, quiet_run])
    ax = fig.axes[0]
    plotted = {line.get_label(): line.get_xydata().tolist() for line in ax.lines}
    assert plotted == {"cnn-w2: gpu0": [[0.2, 10.0], [0.4, 95.0], [0.6, 97.0]],
                       "cnn-w2: gpu1": [[0.2, 5.0], [0.6, 90.0]],
                       "cnn: cpu": [[0.2, 180.0], [0.4, 199.0]]}
    assert ax.get_ylabel() == "utilisation (%)" and "time" in ax.get_xlabel()


# ---------------------------------------------------------------------------------- plugin figures
FIGURE_PLUGIN = '''
import convbench
from convbench.report.figures import FigureKind

drawn = []  # (kind, group, case ids), for the test to read


class RunCount(FigureKind):
    """bars of the number of runs per optimizer"""

    def applies(self, records, options):
        return len(records) > 1

    def draw(self, group, records, options):
        import matplotlib.pyplot as plt

        drawn.append(("runcount", group, sorted(r["case_id"] for r in records)))
        counts = {}
        for record in records:
            counts[record["case"]["optimizer"]] = counts.get(record["case"]["optimizer"], 0) + 1
        fig, ax = plt.subplots()
        ax.bar(list(counts), list(counts.values()))
        return fig


class Overview(FigureKind):
    across_groups = True
    default = True
    file_stem = "overview"

    def draw(self, group, records, options):
        import matplotlib.pyplot as plt

        drawn.append(("everything", group, sorted(r["case_id"] for r in records)))
        fig, ax = plt.subplots()
        ax.plot([r["steps"] for r in records])
        return fig


@convbench.hookimpl
def convbench_register_figures(register):
    register("runcount", RunCount)
    register("everything", Overview, description="every run at once")
'''


@pytest.fixture
def fresh_registry():
    """The process-wide registries forgotten before and after: the test's plugins load, and then are gone."""
    from convbench.registry import reset_registry

    reset_registry()
    yield
    reset_registry()


def install_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: str, source: str) -> None:
    """A distribution on sys.path with a `convbench` entry point, as `pip install` leaves it."""
    tmp_path.mkdir()
    (tmp_path / f"{module}.py").write_text(source, encoding="utf-8")
    dist_info = tmp_path / f"{module}-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n", encoding="utf-8")
    (dist_info / "entry_points.txt").write_text(f"[convbench]\n{module} = {module}\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("CONVBENCH_LOAD_PLUGINS", module)  # this plugin alone, whatever else is installed


def test_a_plugin_figure_is_listed_and_drawn(suite: Suite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str], fresh_registry: None) -> None:
    install_plugin(tmp_path / "site", monkeypatch, "myfigures", FIGURE_PLUGIN)
    assert main(["list", "figure"]) == 0
    listing = capsys.readouterr().out
    assert re.search(r"^  runcount\s+bars of the number of runs per optimizer  \(myfigures\)$", listing, re.M)
    assert re.search(r"^  everything\s+every run at once  \(myfigures\)$", listing, re.M)
    assert re.search(r"^  loss\s.*\(convbench_plugins\.figures\)$", listing, re.M)
    with pytest.raises(SystemExit):
        main(["report", "--help"])
    assert "runcount: bars of the number of runs per optimizer" in " ".join(capsys.readouterr().out.split())

    import myfigures

    code, _, err = run_report(capsys, suite.json_path, "-o", tmp_path / "out", "--figures", "runcount,loss")
    assert code == 0, err
    names = {p.name for p in (tmp_path / "out" / "figures").iterdir()}
    assert names == {f"{group}-{kind}.png" for group in ("test_grid", "test_optimizers", "test_linear")
                     for kind in ("loss", "runcount") if (group, kind) != ("test_linear", "runcount")}
    ids = {group: sorted(r["case_id"] for r in suite.group(group)) for group in ("test_grid", "test_optimizers")}
    assert myfigures.drawn == [("runcount", group, ids[group]) for group in ids]  # test_linear: one run, skipped
    myfigures.drawn.clear()
    code, _, err = run_report(capsys, suite.json_path, "-o", tmp_path / "default")  # default: an across kind
    assert code == 0, err
    assert myfigures.drawn == [("everything", None, sorted(r["case_id"] for r in suite.records))]
    assert (tmp_path / "default" / "figures" / "overview.png").read_bytes().startswith(PNG_SIGNATURE)
    code, _, err = run_report(capsys, suite.json_path, "-o", tmp_path / "bad", "--figures", "runcnt")
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("convbench: error: --figures: unknown 'runcnt'; choose from loss, accuracy, lr, heatmap, "
                          "params, target, utilisation, profile, scaling, loss-scales, error, seeds, gap, runcount, "
                          "everything, all")


DUPLICATE_PLUGIN = """
import convbench
from convbench.report.figures import FigureKind


class Mine(FigureKind):
    \"\"\"my figure\"\"\"


@convbench.hookimpl
def convbench_register_figures(register):
    register("mine", Mine)
    register("loss", Mine)
"""


def test_a_duplicate_figure_name_is_a_clear_problem_and_skips_the_plugin(
        suite: Suite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        fresh_registry: None) -> None:
    install_plugin(tmp_path / "site", monkeypatch, "dupfigures", DUPLICATE_PLUGIN)
    problem = ("plugin 'dupfigures' skipped for figures: figure 'loss' from plugin 'dupfigures' is already "
               "registered by plugin 'convbench_plugins.figures'")
    code, _, err = run_report(capsys, suite.json_path, "-o", tmp_path / "out", "--figures", "loss")
    assert code == 0
    assert f"convbench: warning: {problem}\n" in err
    assert (tmp_path / "out" / "figures" / "test_grid-loss.png").is_file()  # the built-in, not the duplicate
    code, _, err = run_report(capsys, suite.json_path, "-o", tmp_path / "mine", "--figures", "mine")
    assert code == 2 and "--figures: unknown 'mine'" in err  # all or nothing: the plugin's other figure too
    assert main(["list", "figure"]) == 0
    assert f"convbench: warning: {problem}" in capsys.readouterr().err


def test_a_conftest_figure_is_drawn_by_a_report_made_in_its_session(
        suite: Suite, tmp_path: Path, capsys: pytest.CaptureFixture[str], fresh_registry: None) -> None:
    import types

    from convbench.registry import add_conftest_plugin, clear_conftest_plugins

    module = types.ModuleType("figure_conftest")
    exec(compile(FIGURE_PLUGIN, "conftest.py", "exec"), module.__dict__)
    add_conftest_plugin("conftest:suites/conftest.py", module)
    try:
        code, _, err = run_report(capsys, suite.json_path, "-o", tmp_path, "--figures", "everything", "--format", "svg")
    finally:
        clear_conftest_plugins()
    assert code == 0, err
    assert module.drawn == [("everything", None, sorted(r["case_id"] for r in suite.records))]
    assert {p.name for p in (tmp_path / "figures").iterdir()} == {"overview.svg"}


def test_a_figure_factory_that_builds_no_figure_kind_is_skipped(
        suite: Suite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        fresh_registry: None) -> None:
    source = "import convbench\n\n@convbench.hookimpl\ndef convbench_register_figures(register):\n" \
             "    register('notafigure', dict, description='a dict')\n"
    install_plugin(tmp_path / "site", monkeypatch, "badfigures", source)
    code, _, err = run_report(capsys, suite.json_path, "-o", tmp_path / "out")
    assert code == 0
    assert ("convbench: warning: figure 'notafigure' from plugin 'badfigures' skipped: it built a dict, not a "
            "convbench.report.figures.FigureKind\n") in err
    assert (tmp_path / "out" / "figures" / "test_grid-loss.png").is_file()


@pytest.mark.slow
def test_the_report_loads_figures_without_torch(suite: Suite, tmp_path: Path) -> None:
    """`convbench report` needs the figure plugins, not the training components (torch takes seconds to import)."""
    script = ("import sys; from convbench.cli import main; "
              f"code = main(['report', {str(suite.json_path)!r}, '-o', {str(tmp_path)!r}, '--figures', 'all']); "
              "print(code, 'torch' in sys.modules)")
    env = {**os.environ, "CONVBENCH_LOAD_PLUGINS": ""}  # built-ins only: an installed plugin may import torch
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                               check=False, env=env)
    assert completed.stdout.splitlines()[-1] == "0 False", completed.stderr[-2000:]


def test_the_readme_figure_example_is_drawn(suite: Suite, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str], fresh_registry: None) -> None:
    from readme_text import code_block

    install_plugin(tmp_path / "site", monkeypatch, "my_figures", code_block("# my_figures.py"))
    code, _, err = run_report(capsys, suite.json_path, "-o", tmp_path / "out", "--figures", "loss,best")
    assert code == 0, err
    assert err == ""
    best = {p.name for p in (tmp_path / "out" / "figures").iterdir() if "best" in p.name}
    assert best == {"test_optimizers-best.png"}  # the only group with two optimizers
    import my_figures

    fig = my_figures.BestPerOptimizer().draw("test_optimizers", suite.group("test_optimizers"), FigureOptions())
    bars = {label.get_text(): bar.get_height()
            for label, bar in zip(fig.axes[0].get_xticklabels(), fig.axes[0].patches, strict=True)}
    runs = suite.group("test_optimizers")
    assert bars == {name: max(r["final"]["test_accuracy"] for r in runs if r["case"]["optimizer"] == name)
                    for name in ("sgd", "adam")}
    assert fig.axes[0].get_ylabel().startswith("final test accuracy")


def test_legends_name_runs_measured_on_a_busy_machine():
    from convbench.report.figures.style import set_label

    def run(seed: int, busy: bool | None, diverged: bool = False) -> dict:
        return {"case_id": f"softmax-sgd-lr0.1-bs100-seed{seed}", "diverged": diverged,
                "case": {"seed": seed, "label": None}, "machine_load": {"busy": busy}}

    assert set_label([run(0, True)]).endswith("(busy machine)")
    assert "busy" not in set_label([run(0, False)]) and "busy" not in set_label([run(0, None)])
    assert set_label([run(0, True), run(1, False), run(2, True, diverged=True)]).endswith(
        "(mean of 3 seeds) (1 diverged) (2 busy machine)")
    assert "busy" not in set_label([{**run(0, None), "machine_load": None}])  # results from before it was recorded


def test_a_stalled_run_is_named_in_the_legend_and_its_curve_ends_in_a_cross(suite: Suite) -> None:
    runs = suite.group("test_optimizers")
    assert [r["case_id"] for r in runs if r["stalled"]] == ["softmax-sgd-lr1e-3-bs100"]  # sgd at lr 1e-3
    for metric in ("loss", "accuracy"):
        ax = curve_figure("test_optimizers", runs, metric, "test").axes[0]
        lines = {line.get_label(): line for line in data_lines(ax)}
        assert "softmax-sgd-lr1e-3-bs100 (stalled)" in lines
        assert not any("stalled" in label for label in lines if "lr1e-3" not in label or "adam" in label)
        (cross,) = [line for line in ax.lines if line.get_marker() == "x"]
        assert cross.get_xydata().tolist() == [lines["softmax-sgd-lr1e-3-bs100 (stalled)"].get_xydata()[-1].tolist()]


def test_index_summary_names_cases_that_failed_before_training(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_report(capsys, Path(__file__).parent / "data" / "failures.jsonl", "-o", tmp_path,
                              "--no-figures")
    assert code == 0, err
    failed = [record["test"] for record in loader.load(Path(__file__).parent / "data" / "failures.jsonl").failed]
    assert failed
    text = (tmp_path / "index.html").read_text(encoding="utf-8")
    (line,) = re.findall(r'<li class="bad">failed before training: ([^<]*)</li>', text)
    assert all(test in line for test in failed[:4])
