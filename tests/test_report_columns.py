"""The report's ``busy`` and energy columns: shown where runs recorded them, absent where none did, and a
number nobody measured is ``-``, never 0.

Runs are built here from the result contract with the machine load and energy each test needs; the
checked-in sessions (``tests/data``) have machine load on every run and no energy counter.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from convbench import Case
from convbench.cli import main
from convbench.result import Energy, MachineLoad, RunResult, Target, Timing

DATA = Path(__file__).parent / "data"


def run(seed: int = 0, *, lr: float = 0.1, busy: bool | None = False, load: bool = True,
        energy_j: float | None = None, to_target_j: float | None = None, source: str | None = None) -> dict[str, Any]:
    case = Case(model="softmax", optimizer="sgd", lr=lr, batch_size=100, steps=10, seed=seed, target_accuracy=0.5)
    result = RunResult(
        case_id=case.id, case=case.to_dict(), scale="quick", device="cpu", world_size=1, steps=10,
        steps_planned=10, epochs=0.2, samples=1000, diverged=False, divergence=None,
        timing=Timing(setup_s=0.1, train_s=1.0, eval_s=0.1), samples_per_s=1000.0,
        final={"train_loss": 0.4, "test_loss": 0.5, "test_accuracy": 0.9}, best={"test_accuracy": 0.9},
        target=Target(metric="accuracy", split="test", value=0.5, reached=True, step=5, time_s=0.5),
        curves={"train": {"step": [0, 10], "loss": [2.0, 0.4]},
                "eval": {"step": [0, 10], "epoch": [0.0, 0.2], "time_s": [0.0, 1.0], "test_accuracy": [0.1, 0.9],
                         "test_loss": [2.0, 0.5]}},
        stop_reason="budget", machine_load=MachineLoad(busy=busy) if load else None,
        energy=Energy(source=source, run_j=energy_j, to_target_j=to_target_j,
                      reason=None if source else "no energy counter readable"))
    test = f"test_x[{case.id}-seed{seed}]"
    return {"group": "g", "name": test, "fullname": f"suite.py::{test}", "extra_info": {"convbench": result.to_dict()}}


def report(tmp_path: Path, capsys: pytest.CaptureFixture[str], runs: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Report the runs; the rows of group g's CSV (also checked to be the Markdown table's columns, and the
    printed table to show ``busy`` where the CSV has it)."""
    path = tmp_path / "runs.json"
    path.write_text(json.dumps({"machine_info": {"node": "host"}, "benchmarks": runs}), encoding="utf-8")
    capsys.readouterr()
    assert main(["report", str(path), "-o", str(tmp_path / "out"), "--no-figures"]) == 0
    printed = capsys.readouterr().out
    with (tmp_path / "out" / "tables" / "g.csv").open(newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    markdown = (tmp_path / "out" / "tables" / "g.md").read_text(encoding="utf-8")
    header, printed_header = (next(line for line in text.splitlines() if line.startswith("| case"))
                              for text in (markdown, printed))
    shown = [cell.strip() for cell in header.strip("|").split("|")]
    assert [c for c in rows[0] if not c.endswith("_std")] == [c for c in shown if not c.endswith("_std")]
    assert ("busy" in rows[0]) == ("| busy " in printed_header)
    assert ("energy_j" in rows[0]) == ("| energy J " in printed_header)
    return rows


def test_busy_column_says_yes_no_or_unknown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = report(tmp_path, capsys, [run(lr=0.1, busy=True), run(lr=0.2, busy=False), run(lr=0.3, busy=None),
                                     run(lr=0.4, load=False)])
    assert {row["case"]: row["busy"] for row in rows} == {
        "softmax-sgd-lr0.1-bs100": "yes", "softmax-sgd-lr0.2-bs100": "no", "softmax-sgd-lr0.3-bs100": "?",
        "softmax-sgd-lr0.4-bs100": "-"}


def test_busy_over_seeds_counts_each(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (row,) = report(tmp_path, capsys, [run(0, busy=True), run(1, busy=False), run(2, busy=True)])
    assert row["seeds"] == "3" and row["busy"] == "2 yes, 1 no"


def test_no_busy_column_without_machine_load(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = report(tmp_path, capsys, [run(lr=0.1, load=False), run(lr=0.2, load=False)])
    assert "busy" not in rows[0]


def test_energy_columns_where_a_counter_was_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = report(tmp_path, capsys, [run(lr=0.1, source="rapl", energy_j=12.5, to_target_j=6.0),
                                     run(lr=0.2, source="rapl", energy_j=20.0),
                                     run(lr=0.3)])  # no counter: unknown, not 0
    energy = {row["case"]: (row["energy_j"], row["energy_to_target_j"]) for row in rows}
    assert energy == {"softmax-sgd-lr0.1-bs100": ("12.5", "6.0"), "softmax-sgd-lr0.2-bs100": ("20.0", ""),
                      "softmax-sgd-lr0.3-bs100": ("", "")}
    printed = (tmp_path / "out" / "tables" / "g.md").read_text(encoding="utf-8")
    (lr3,) = [line for line in printed.splitlines() if "lr0.3" in line]
    assert "| 0 " not in lr3 and lr3.count(" - ") >= 2


def test_energy_over_seeds_is_a_mean_with_spread(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (row,) = report(tmp_path, capsys, [run(seed, source="nvml", energy_j=value)
                                       for seed, value in enumerate((10.0, 12.0, 14.0))])
    assert float(row["energy_j"]) == pytest.approx(12.0) and float(row["energy_j_std"]) == pytest.approx(2.0)


def test_no_energy_columns_without_a_counter(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = report(tmp_path, capsys, [run(lr=0.1), run(lr=0.2)])
    assert not any(column.startswith("energy") for column in rows[0])


def test_energy_pivot_needs_energy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "runs.json"
    path.write_text(json.dumps({"benchmarks": [run(lr=0.1), run(lr=0.2)]}), encoding="utf-8")
    capsys.readouterr()
    code = main(["report", str(path), "-o", str(tmp_path / "out"), "--pivot", "lr,seed:energy_j"])
    assert code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("convbench: error: unknown --pivot metric 'energy_j'")


def test_checked_in_sessions_show_busy_and_no_energy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["report", str(DATA / "compare.json"), "-o", str(tmp_path), "--no-figures"]) == 0
    with (tmp_path / "tables" / "all_cases.csv").open(newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    runs = json.loads((DATA / "compare.json").read_text(encoding="utf-8"))["benchmarks"]
    expected = {"yes" if b is True else "no" if b is False else "?"
                for b in (r["extra_info"]["convbench"]["machine_load"]["busy"] for r in runs)}
    assert {row["busy"] for row in rows} == expected
    assert not any(column.startswith("energy") for column in rows[0])


def test_a_missing_number_beside_numbers_stays_missing_in_every_format(tmp_path: Path) -> None:
    """A column of [20.0, None] must not become [20.0, nan] on its way to a file (pandas 3 infers a float
    column from a plain list): missing is empty in CSV and ``-`` elsewhere; a NaN recorded stays ``nan``."""
    import pandas as pd

    from convbench.report.formats import to_csv, to_html, to_latex, to_markdown

    table = pd.DataFrame({"case": ["a", "b", "c"], "energy_j": [20.0, None, float("nan")]}, dtype=object)
    to_csv(table, tmp_path / "t.csv")
    with (tmp_path / "t.csv").open(newline="", encoding="utf-8") as stream:
        assert [row["energy_j"] for row in csv.DictReader(stream)] == ["20.0", "", "nan"]
    markdown = to_markdown(table).splitlines()
    assert [line.split("|")[2].strip() for line in markdown[2:]] == ["20", "-", "nan"]
    for text in (to_html(table, "t"), to_latex(table, "t")):
        assert "None" not in text and text.count("nan") == 1


def test_train_accuracy_stands_beside_the_held_out_one_where_runs_evaluated_it(tmp_path: Path,
                                                                              capsys: pytest.CaptureFixture[str]):
    (tmp_path / "without").mkdir()
    (tmp_path / "with").mkdir()
    rows = report(tmp_path / "without", capsys, [run(seed) for seed in range(2)])
    assert "final_train_accuracy" not in rows[0]  # no run evaluated the train split: no empty column
    runs = [run(seed) for seed in range(2)]
    for seed, entry in enumerate(runs):
        entry["extra_info"]["convbench"]["final"]["train_accuracy"] = 0.95 + 0.02 * seed
    (row,) = report(tmp_path / "with", capsys, runs)
    assert float(row["final_train_accuracy"]) == pytest.approx(0.96)  # the mean over the seeds
    assert float(row["final_test_accuracy"]) == pytest.approx(0.9)
