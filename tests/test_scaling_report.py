"""The scaling section of the report: speedup, efficiency and the time split over world sizes.

The session's input is checked in: ``tests/data/scaling.json`` (made by ``tests/data/make_fixtures.py``
from ``tests/data/suites/scaling.py``), one case trained and one timed for throughput, each on 1 and 2
processes. The rest build the few records a rule needs here.
"""

from __future__ import annotations

import csv
import json
import math
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


# ----------------------------------------------------------------------------- impossible results
def on_cpu(run, cores=8, busy=False, reason=None, first_in_process=None, **host):
    """``run`` as measured on a CPU machine with ``cores`` cores, its load as the run recorded it."""
    timing = {**run["timing"], **({} if first_in_process is None else {"first_in_process": first_in_process})}
    return {**run, "device": "cpu", "timing": timing,
            "machine_load": {"busy": busy, "reason": reason, "hosts": [{"host": "vm", "cores": cores, **host}]}}


def flags_of(records) -> dict[int, dict[str, str]]:
    """World size -> {flag name: its reason}, read back from the row's two columns."""
    found = {}
    for row in scaling_rows(records):
        names = row["flags"].split(", ") if row["flags"] else []
        found[row["world_size"]] = {name: reason for name in names
                                    for reason in [row["flag_reasons"].split(f"{name}: ", 1)[1]]}
    return found


def test_plausible_runs_have_no_flags():
    runs = [on_cpu(record(1, 8.0), ranks=1, threads=8, first_in_process=True),
            on_cpu(record(2, 4.5), ranks=2, threads=8, first_in_process=True),
            on_cpu(record(4, 2.5), ranks=4, threads=8)]
    rows = scaling_rows(runs)
    assert [(r["flags"], r["flag_reasons"]) for r in rows] == [("", "")] * 3
    assert rows[2]["speedup"] == pytest.approx(3.2)  # below 4: nothing impossible


def test_a_speedup_above_the_world_size_is_flagged_as_faster_than_ideal():
    flags = flags_of([record(1, 20.0), record(2, 4.0), record(4, 5.05)])
    assert set(flags[2]) == {"superlinear"} and flags[1] == {} and flags[4] == {}  # 3.96 on 4: not flagged
    reason = flags[2]["superlinear"]
    assert reason.startswith("speedup 5.00 on 2 ranks is more than 2: the measured 4 s is faster than the ideal 10 s "
                             "(overhead -6 s)")
    assert "a busy machine or a cold start" in reason  # nothing recorded: the usual causes


def test_superlinear_within_timing_noise_is_not_flagged():
    from convbench.report.plausibility import SUPERLINEAR_TOLERANCE

    just_above = 8.0 / (2 * (1 + SUPERLINEAR_TOLERANCE)) * 0.999
    assert flags_of([record(1, 8.0), record(2, 8.0 / 2.01)])[2] == {}
    assert set(flags_of([record(1, 8.0), record(2, just_above)])[2]) == {"superlinear"}


def test_a_superlinear_row_names_a_cold_baseline_as_the_likely_cause():
    cold = flags_of([on_cpu(record(1, 20.0), first_in_process=True), on_cpu(record(2, 4.0), first_in_process=False)])
    assert "first run to train in its process (cold start" in cold[2]["superlinear"]
    warm = flags_of([on_cpu(record(1, 20.0), first_in_process=False), on_cpu(record(2, 4.0))])
    assert "cold start:" not in warm[2]["superlinear"]


def test_weak_scaling_is_superlinear_when_n_times_the_work_takes_less_time():
    flags = flags_of([record(1, 10.0, "weak"), record(2, 8.0, "weak"), record(4, 12.0, "weak")])
    assert set(flags[2]) == {"superlinear"} and flags[4] == {}
    assert "faster than the ideal 10 s" in flags[2]["superlinear"]


@pytest.mark.parametrize(("host", "expected"), [
    ({}, "4 ranks share 2 cores"),  # threads not recorded: one a rank
    ({"ranks": 4, "threads": 4}, "4 ranks (4 threads) share 2 cores"),
])
def test_more_ranks_than_cores_is_flagged_as_oversubscribed(host, expected):
    flags = flags_of([on_cpu(record(1, 8.0), cores=2), on_cpu(record(2, 5.0), cores=2),
                      on_cpu(record(4, 6.0), cores=2, **host)])
    assert flags[4] == {"oversubscribed": expected}
    assert flags[2] == {} and flags[1] == {}


def test_more_threads_than_cores_is_oversubscribed_and_named_for_a_slow_baseline():
    flags = flags_of([on_cpu(record(1, 20.0), cores=2, ranks=1, threads=4), on_cpu(record(2, 4.0), cores=2)])
    assert flags[1] == {"oversubscribed": "1 rank (4 threads) shares 2 cores"}
    assert "its threads outnumbered the cores (1 rank (4 threads) shares 2 cores)" in flags[2]["superlinear"]
    assert flags[2]["oversubscribed"] == ("the world-size-1 run it is measured against: "
                                          "1 rank (4 threads) shares 2 cores")


def test_cores_of_older_results_come_from_the_cpu_telemetry():
    run = record(4, 6.0, cpu=100.0)
    run["telemetry"]["devices"][0]["cores"] = 2
    assert flags_of([record(1, 8.0), {**run, "device": "cpu"}])[4] == {"oversubscribed": "4 ranks share 2 cores"}


def test_ranks_on_gpus_are_not_counted_against_cores():
    gpu = {**on_cpu(record(4, 3.0), cores=2), "device": "cuda:0"}
    assert flags_of([on_cpu(record(1, 8.0), cores=2), gpu])[4] == {}


def test_a_busy_run_and_a_row_measured_against_a_busy_baseline_are_flagged():
    why = "other processes used 60% of the 2 cores' time (more than 10%)"
    flags = flags_of([on_cpu(record(1, 8.0)), on_cpu(record(2, 5.0), busy=True, reason=why)])
    assert flags == {1: {}, 2: {"busy machine": why}}
    flags = flags_of([on_cpu(record(1, 30.0), busy=True, reason=why, threads=2), on_cpu(record(2, 5.0))])
    assert flags[1] == {"busy machine": why}
    assert flags[2]["busy machine"] == f"the world-size-1 run it is measured against: {why}"
    assert (f"the machine was busy during it ({why}); its 2 threads each wait for the slowest"
            in flags[2]["superlinear"])


def test_a_baseline_whose_load_was_not_judged_says_so_in_the_superlinear_reason():
    unsure = "other processes used 60% of the 2 cores' time, give or take 160% in a 0.03 s run: too close to judge"
    flags = flags_of([on_cpu(record(1, 30.0), busy=None, reason=unsure), on_cpu(record(2, 5.0))])
    assert set(flags[2]) == {"superlinear"}  # not judged busy: no busy flag, but the doubt is the likely cause
    assert f"the machine's load during it could not be judged ({unsure})" in flags[2]["superlinear"]


def test_flags_are_written_to_the_tables_with_their_reasons(tmp_path):
    from convbench.report.names import Names
    from convbench.report.scaling import write_scaling

    rows = scaling_rows([record(1, 20.0), on_cpu(record(2, 4.0)), on_cpu(record(4, 6.0), cores=2)])
    text, written = write_scaling(rows, tmp_path, Names())
    with open(written[0], newline="") as stream:
        table = {int(row["world_size"]): row for row in csv.DictReader(stream)}
    assert [table[size]["flags"] for size in (1, 2, 4)] == ["", "superlinear", "oversubscribed"]
    assert table[4]["flag_reasons"] == "oversubscribed: 4 ranks share 2 cores"
    markdown = written[1].read_text(encoding="utf-8")
    for shown in (markdown, text):  # the file has every column, the printed table fewer; both the reasons
        assert "| flags " in shown.splitlines()[2] and "flag_reasons" not in shown  # reasons under the table
        assert f"- c-w2 (world size 2): {rows[1]['flag_reasons']}" in shown
        assert "- c-w4 (world size 4): oversubscribed: 4 ranks share 2 cores" in shown
    assert "| family " in markdown and "| family " not in text


def test_the_checked_in_session_is_flagged_only_where_its_runs_say_so(scaling_json):
    results = session_results("convbench")
    records = [{**result, "group": "g"} for result in results.values()]
    rows = {row["world_size"]: row for row in scaling_rows(records)}
    for size, result in results.items():
        busy = any(r["machine_load"]["busy"] is True for r in (result, results[1]))
        assert ("busy machine" in rows[size]["flags"]) == busy
    assert ("superlinear" in rows[2]["flags"]) == (rows[2]["speedup"] > 2 * 1.02)


def test_throughput_above_the_world_size_is_flagged():
    def entry(world_size, samples_per_s):
        return {"group": "g", "case_id": f"c-w{world_size}", "world_size": world_size, "machine": None,
                "commit": None, "case": {"model": "m", "world_size": world_size, "label": f"c-w{world_size}"},
                "samples_per_s": samples_per_s, "samples_per_s_per_device": samples_per_s / world_size,
                "round_s": {"mean": 1.0}, "rounds": 3}

    rows = throughput_rows([entry(1, 100.0), entry(2, 250.0), entry(4, 300.0)])
    assert [row["flags"] for row in rows] == ["", "superlinear", ""]
    assert rows[1]["flag_reasons"].startswith("superlinear: throughput 2.50 times world size 1's on 2 ranks")


def test_the_figure_leaves_flagged_speedups_out_and_says_why():
    import pandas as pd

    from convbench.report.figures.scaling import scaling_figure

    runs = [on_cpu(record(1, 20.0), cores=2), on_cpu(record(2, 4.0), cores=2), on_cpu(record(4, 6.0), cores=2)]
    fig = scaling_figure(pd.DataFrame(scaling_rows(runs)))
    speed_ax, time_ax = fig.axes
    (points,) = [line.get_xydata().tolist() for line in speed_ax.lines if line.get_label() == "c-w1"]
    assert points[0] == [1.0, 1.0]
    assert [x for x, y in points if not math.isnan(y)] == [1.0]  # 5x on 2 ranks and 4 ranks on 2 cores: not drawn
    note = fig.get_supxlabel()
    assert "world size 2: superlinear" in note and "world size 4: oversubscribed" in note
    ideal, overhead, _ = ([bar.get_height() for bar in container] for container in time_ax.containers)
    assert ideal == pytest.approx([20.0, 4.0, 5.0])  # the ideal 10 s on 2 ranks is cut at the 4 s measured
    assert overhead == pytest.approx([0.0, 0.0, 1.0])
    faded = [bar.get_alpha() for bar in time_ax.containers[0]]
    assert faded[0] is None and faded[1] < 1 and faded[2] < 1
    labels = [text.get_text() for text in time_ax.texts]
    assert labels == ["superlinear\nideal 10 s > measured", "oversubscribed"]


@pytest.mark.parametrize("times", [(20.0, 12.0, 8.0), (5.0, 6.0, 9.0), (9.0, 9.5, 9.0)])
def test_the_time_legend_covers_no_bar_and_no_flag_label(times):
    import pandas as pd

    from convbench.report.figures.scaling import scaling_figure

    runs = [record(size, time) for size, time in zip((1, 2, 4), times, strict=True)]
    fig = scaling_figure(pd.DataFrame(scaling_rows(runs)))
    fig.canvas.draw()
    _, time_ax = fig.axes
    legend = time_ax.get_legend().get_window_extent()
    drawn = [bar.get_window_extent() for container in time_ax.containers for bar in container if bar.get_height()]
    drawn += [text.get_window_extent() for text in time_ax.texts]
    assert drawn and not [box for box in drawn if box.overlaps(legend)]


def test_the_figure_names_rows_left_out_for_a_divergence():
    import pandas as pd

    from convbench.report.figures.scaling import left_out_notes

    broken = {**record(1, 8.0), "diverged": True}
    notes = left_out_notes(pd.DataFrame(scaling_rows([broken, record(2, 5.0)])))
    assert notes == ["world size 1: diverged", "world size 2: its world-size-1 run diverged"]


def test_a_plausible_figure_draws_every_speedup_and_has_no_note():
    import pandas as pd

    from convbench.report.figures.scaling import scaling_figure

    fig = scaling_figure(pd.DataFrame(scaling_rows([record(1, 8.0), record(2, 5.0)])))
    assert fig.get_supxlabel() == "" and len(fig.axes[1].texts) == 0


# ----------------------------------------------------------------------------- cold start, cores, threads
def test_the_first_run_on_a_device_in_a_process_is_recorded_as_cold(settings, monkeypatch):
    from convbench import recording
    from convbench.case import Case
    from convbench.engine import run_in_this_process
    from convbench.result import RunResult

    monkeypatch.setattr(recording, "_TRAINED_HERE", set())  # as in a process that has trained nothing yet
    case = Case(model="softmax", dataset="blobs", optimizer="sgd", lr=0.1, batch_size=20, steps=5)
    first, second = run_in_this_process(case, settings), run_in_this_process(case, settings)
    assert (first.timing.first_in_process, second.timing.first_in_process) == (True, False)
    assert RunResult.from_dict(first.to_dict()).timing.first_in_process is True
    # recording it changes nothing measured
    assert (first.curves["train"], first.final) == (second.curves["train"], second.final)


def test_timing_without_first_in_process_reads_as_unknown():
    from convbench.result import Timing

    assert Timing.from_dict({"setup_s": 1.0, "train_s": 2.0, "eval_s": 0.5}).first_in_process is None
    assert "first_in_process" not in Timing(setup_s=1.0, train_s=2.0, eval_s=0.5).to_dict()


def test_machine_load_records_each_hosts_ranks_and_threads():
    from convbench.machine_load import combine

    def reading(host, threads):
        return {"host": host, "duration_s": 1.0, "own_cpu_s": 1.0, "machine_busy_s": 2.0, "machine_total_s": 4.0,
                "cores": 2, "own_processes": 1, "pids": [1], "gpu": None, "gpu_pids": None, "gpu_reason": None,
                **({} if threads is None else {"threads": threads})}

    load = combine([reading("a", 1), reading("a", 3), reading("b", 2), reading("c", None)])
    assert [(h["host"], h["ranks"], h["threads"]) for h in load.hosts] == [("a", 2, 4), ("b", 1, 2), ("c", 1, None)]


@pytest.mark.slow
def test_a_fresh_pool_records_its_first_run_as_cold_and_its_ranks_threads():
    import os

    import psutil

    from convbench import launch
    from convbench.case import Case
    from convbench.engine import RunSettings

    case = Case(model="softmax", dataset="mnist-5k", optimizer="sgd", lr=0.5, batch_size=100, steps=5,
                eval_every=5, eval_train_samples=200, world_size=2)
    launch.close_pools()
    try:
        first, second = (launch.run_case(case, RunSettings(telemetry_interval_s=None)) for _ in range(2))
    finally:
        launch.close_pools()
    assert (first.timing.first_in_process, second.timing.first_in_process) == (True, False)
    (host,) = first.machine_load.hosts
    # a pool's CPU ranks share the cores: each takes its share of them as threads (convbench.pool)
    assert (host["ranks"], host["threads"], host["cores"]) == (2, 2 * max(1, (os.cpu_count() or 1) // 2),
                                                              psutil.cpu_count())


def test_a_nan_time_is_not_called_superlinear():
    assert flags_of([record(1, math.nan), record(2, 4.0)])[2] == {}
