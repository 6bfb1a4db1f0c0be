"""The scaling section of the report: speedup, efficiency and the time split over world sizes.

The session's input is checked in: ``tests/data/scaling.json`` (made by ``tests/data/make_fixtures.py``
from ``tests/data/suites/scaling.py``), one case trained and one timed for throughput, each on 1 and 2
processes. The rest build the few records a rule needs here.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from convbench.cli import main
from convbench.report.scaling import scaling_rows, throughput_rows

SCALING_JSON = Path(__file__).parent / "data" / "scaling.json"


def session_results(key: str) -> dict[int, dict]:
    """World size -> the session's ``extra_info[key]`` ("convbench" or "convbench_throughput")."""
    benchmarks = json.loads(SCALING_JSON.read_text(encoding="utf-8"))["benchmarks"]
    return {b["extra_info"][key]["world_size"]: b["extra_info"][key] for b in benchmarks if key in b["extra_info"]}


@pytest.fixture
def scaling_json() -> Path:
    assert set(session_results("convbench")) == set(session_results("convbench_throughput")) == {1, 2}
    return SCALING_JSON


def test_scaling_table_numbers_come_from_the_runs(scaling_json, tmp_path, capsys):
    assert main(["report", str(scaling_json), "-o", str(tmp_path / "report")]) == 0
    assert "## scaling over world sizes" in capsys.readouterr().out
    results = session_results("convbench")
    with open(tmp_path / "report" / "tables" / "scaling.csv", newline="") as stream:
        rows = {int(row["world_size"]): row for row in csv.DictReader(stream)}
    assert set(rows) == {1, 2}
    one, two = results[1]["timing"]["train_s"], results[2]["timing"]["train_s"]
    assert float(rows[2]["speedup"]) == pytest.approx(one / two)
    assert float(rows[2]["efficiency"]) == pytest.approx(one / two / 2)
    assert float(rows[2]["ideal_time_s"]) == pytest.approx(one / 2)
    assert float(rows[2]["overhead_s"]) == pytest.approx(two - one / 2)
    assert float(rows[2]["startup_s"]) == pytest.approx(results[2]["timing"]["startup_s"])
    assert float(rows[1]["speedup"]) == pytest.approx(1.0)
    png = tmp_path / "report" / "figures" / "scaling.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert {row["family"] for row in rows.values()} == {results[1]["case_id"]}


def test_throughput_table_numbers_come_from_the_rounds(scaling_json, tmp_path, capsys):
    assert main(["report", str(scaling_json), "-o", str(tmp_path / "report")]) == 0
    assert "## throughput" in capsys.readouterr().out
    infos = session_results("convbench_throughput")
    with open(tmp_path / "report" / "tables" / "throughput.csv", newline="") as stream:
        rows = {int(row["world_size"]): row for row in csv.DictReader(stream)}
    assert set(rows) == {1, 2}
    speedup = infos[2]["samples_per_s"] / infos[1]["samples_per_s"]
    assert float(rows[2]["speedup"]) == pytest.approx(speedup)
    assert float(rows[2]["efficiency"]) == pytest.approx(speedup / 2)
    for size in (1, 2):
        assert float(rows[size]["samples_per_s"]) == pytest.approx(infos[size]["samples_per_s"])


def test_scaling_figure_draws_one_line_per_case_over_world_sizes():
    import pandas as pd

    from convbench.report.figures.scaling import scaling_figure

    table = pd.DataFrame(scaling_rows([record(1, 8.0), record(2, 5.0), record(4, 4.0)]))
    fig = scaling_figure(table)
    speed_ax, time_ax = fig.axes
    lines = {line.get_label(): line.get_xydata().tolist() for line in speed_ax.lines}
    assert lines["c-w1"] == [[1.0, 1.0], [2.0, 1.6], [4.0, 2.0]]  # one case, every world size
    assert lines["ideal (strong scaling)"] == [[1.0, 1.0], [2.0, 2.0], [4.0, 4.0]]
    ideal = [bar.get_height() for bar in time_ax.containers[0]]
    overhead = [bar.get_height() for bar in time_ax.containers[1]]
    assert ideal == pytest.approx([8.0, 4.0, 2.0]) and overhead == pytest.approx([0.0, 1.0, 2.0])


def record(world_size, train_s, scaling="strong", group="g", lr=0.1, cpu=None):
    telemetry = {"devices": [{"index": None, "name": "cpu", "cpu_percent_mean": cpu}]} if cpu is not None else None
    return {"group": group, "scale": "quick", "case_id": f"c-w{world_size}", "world_size": world_size,
            "case": {"model": "m", "lr": lr, "world_size": world_size, "label": f"c-w{world_size}",
                     "scaling": scaling},
            "timing": {"train_s": train_s}, "final": {"test_accuracy": 0.9}, "samples_per_s": 1.0,
            "telemetry": telemetry}


def test_weak_scaling_speedup_counts_the_extra_work():
    rows = {r["world_size"]: r for r in scaling_rows([record(1, 10.0, "weak"), record(4, 12.5, "weak")])}
    assert rows[4]["speedup"] == pytest.approx(4 * 10.0 / 12.5)
    assert rows[4]["ideal_time_s"] == 10.0


def test_families_need_a_single_device_run_and_stay_apart():
    rows = scaling_rows([record(2, 5.0), record(4, 3.0),  # no world size 1: no baseline
                         record(1, 8.0, lr=0.2), record(2, 5.0, lr=0.2, cpu=150.0)])
    assert [(r["world_size"], r["speedup"]) for r in rows] == [(1, 1.0), (2, pytest.approx(1.6))]
    assert rows[1]["utilisation_mean"] == 150.0 and rows[0]["utilisation_mean"] is None
    assert rows[1]["utilisation_per_device"] == "cpu 150%" and rows[0]["utilisation_per_device"] == ""


def test_utilisation_is_listed_per_gpu():
    gpus = record(2, 5.0)
    gpus["telemetry"] = {"devices": [{"name": "H100", "index": 0, "utilization_mean": 91.0},
                                     {"name": "H100", "index": 1, "utilization_mean": 47.0}]}
    (_, two) = scaling_rows([record(1, 8.0), gpus])
    assert two["utilisation_per_device"] == "H100:0 91%, H100:1 47%"
    assert two["utilisation_mean"] == 69.0


def on(machine, commit, world_size, train_s):
    return {**record(world_size, train_s), "machine": machine, "commit": commit}


@pytest.mark.parametrize(("first", "second"), [(("a", "c1"), ("b", "c1")), (("a", "c1"), ("a", "c2"))],
                         ids=["machines", "commits"])
def test_runs_of_two_machines_or_commits_are_never_one_family(first, second):
    # world size 1 measured on one machine (or commit), 2 on the other: nothing to compare
    assert scaling_rows([on(*first, 1, 8.0), on(*second, 2, 5.0)]) == []
    rows = scaling_rows([on(*first, 1, 8.0), on(*second, 1, 6.0), on(*first, 2, 4.0), on(*second, 2, 4.0)])
    speedups = {(r["family"], r["world_size"]): r["speedup"] for r in rows}
    assert speedups == {("c-w1 [" + "@".join(first) + "]", 1): 1.0, ("c-w1 [" + "@".join(first) + "]", 2): 2.0,
                        ("c-w1 [" + "@".join(second) + "]", 1): 1.0, ("c-w1 [" + "@".join(second) + "]", 2): 1.5}


def test_throughput_of_two_machines_is_never_one_family():
    def entry(machine, world_size, samples_per_s):
        return {"group": "g", "case_id": f"c-w{world_size}", "world_size": world_size, "machine": machine,
                "commit": None, "case": {"model": "m", "world_size": world_size, "label": f"c-w{world_size}"},
                "samples_per_s": samples_per_s, "samples_per_s_per_device": samples_per_s / world_size,
                "round_s": {"mean": 1.0}, "rounds": 3}

    rows = throughput_rows([entry("a", 1, 100.0), entry("b", 1, 50.0), entry("a", 2, 150.0), entry("b", 2, 90.0)])
    assert {(r["case"], r["world_size"]): r["speedup"] for r in rows} == {
        ("c-w1 [a]", 1): 1.0, ("c-w2 [a]", 2): 1.5, ("c-w1 [b]", 1): 1.0, ("c-w2 [b]", 2): 1.8}


def test_scaling_table_names_its_headline_metric():
    (one, two) = scaling_rows([record(1, 8.0), record(2, 5.0)])
    assert one["final_test_accuracy"] == two["final_test_accuracy"] == 0.9
    lossy = [{**record(size, 8.0 / size), "final": {"test_loss": 0.5, "test_accuracy": None}} for size in (1, 2)]
    assert [row["final_test_loss"] for row in scaling_rows(lossy)] == [0.5, 0.5]


@pytest.mark.parametrize(("args", "files"), [
    (["--format", "svg"], {"scaling.svg"}),
    (["--format", "png,svg"], {"scaling.png", "scaling.svg"}),
    (["--figures", "scaling", "--format", "svg"], {"scaling.svg"}),
    (["--figures", "loss"], set()),
])
def test_scaling_figure_is_a_figure_kind_that_honours_format(scaling_json, tmp_path, capsys, args, files):
    assert main(["report", str(scaling_json), "-o", str(tmp_path), *args]) == 0
    written = {p.name for p in (tmp_path / "figures").iterdir() if p.name.startswith("scaling")}
    assert written == files
    for name in files:
        data = (tmp_path / "figures" / name).read_bytes()
        assert data.startswith(b"\x89PNG") if name.endswith(".png") else b"<svg" in data[:2000]
    index = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert ("figures/scaling." in index) == bool(files)
