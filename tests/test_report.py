"""`convbench report` and `convbench list`, on the results of real (tiny) benchmark sessions.

The inputs are checked in (``tests/data``, made by ``tests/data/make_fixtures.py`` from the suites in
``tests/data/suites``): ``report.json`` and its results file ``report.jsonl`` hold four softmax cases on
mnist-5k in two groups, one of them with a learning rate large enough to diverge; ``seeded.json`` holds
an lr x batch_size grid with two seeds each; ``failures.jsonl`` holds a case that failed after training
and one that failed before. Every check compares the report with the numbers in those files, never with
constants. One slow test runs a suite through pytest and reports its output, end to end.
"""

from __future__ import annotations

import csv
import json
import platform
import re
import statistics
import subprocess
import sys
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest
from suite_runs import run_suite

from convbench.cli import main
from convbench.result import RECORD_SCHEMA, SCHEMA, RunResult, ThroughputResult

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DATA = Path(__file__).parent / "data"


@dataclass
class Study:
    json_path: Path
    jsonl_path: Path
    records: dict[str, dict]  # case id -> extra_info["convbench"] from the benchmark JSON

    def groups(self) -> dict[str, list[str]]:
        grouped: dict[str, list[str]] = {}
        for case_id, record in self.records.items():
            grouped.setdefault(record["group"], []).append(case_id)
        return grouped


def read_study(json_path: Path) -> Study:
    """A session's benchmark JSON, its results file next to it (``.jsonl``), and its results by case id."""
    document = json.loads(json_path.read_text(encoding="utf-8"))
    records = {b["extra_info"]["convbench"]["case_id"]: b["extra_info"]["convbench"] for b in document["benchmarks"]}
    return Study(json_path, json_path.with_suffix(".jsonl"), records)


@pytest.fixture(scope="module")
def study() -> Study:
    found = read_study(DATA / "report.json")
    assert len(found.records) == 4
    assert len({r["group"] for r in found.records.values()}) == 2
    assert sum(r["diverged"] for r in found.records.values()) == 1
    return found


def run_report(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["report", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def printed_tables(text: str) -> dict[str, tuple[int, list[dict[str, str]]]]:
    """Group -> (the case count in its heading, its rows) from the Markdown tables `report` prints.

    Other sections (pivot tables) are skipped; `printed_runs` reads the run counts of the headings.
    """
    tables: dict[str, tuple[int, list[dict[str, str]]]] = {}
    group, count, header, rows = None, 0, None, []
    for line in text.splitlines():
        heading = re.match(r"^## (.+) \((\d+) cases?(?:, \d+ runs)?\)$", line)
        if heading:
            group, count, header, rows = heading.group(1), int(heading.group(2)), None, []
            tables[group] = (count, rows)
        elif line.startswith("## "):
            group = None
        elif group is not None and line.startswith("|"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if header is None:
                header = cells
            elif not all(set(cell) <= set(":-") for cell in cells):
                rows.append(dict(zip(header, cells, strict=True)))
    return tables


def csv_value(cell: str) -> float | None:
    return None if cell == "" else float(cell)


def assert_row_matches(row: dict[str, str], record: dict) -> None:
    """A CSV row holds exactly the JSON's numbers."""
    assert row["case"] == record["case_id"]
    assert csv_value(row["final_test_accuracy"]) == record["final"]["test_accuracy"]
    assert csv_value(row["best_test_accuracy"]) == record["best"]["test_accuracy"]
    assert csv_value(row["final_train_loss"]) == record["final"]["train_loss"]
    assert csv_value(row["final_test_loss"]) == record["final"]["test_loss"]
    assert csv_value(row["train_time_s"]) == record["timing"]["train_s"]
    assert row["diverged"] == str(record["diverged"])
    assert row["outcome"] == record["outcome"]


# ---------------------------------------------------------------------------- checked-in inputs
@pytest.mark.parametrize("path", sorted(DATA.glob("*.json*")), ids=lambda path: path.name)
def test_checked_in_results_are_what_convbench_writes_today(path: Path) -> None:
    """The report tests read these files; stale ones would test a format convbench no longer writes.
    After a change to the result, regenerate them: ``python tests/data/make_fixtures.py``."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        entries = [json.loads(line) for line in text.splitlines()]
        assert {entry["schema"] for entry in entries} == {RECORD_SCHEMA}, "regenerate: tests/data/make_fixtures.py"
    else:
        entries = json.loads(text)["benchmarks"]
    results = 0
    for entry in entries:
        for key, kind in (("convbench", RunResult), ("convbench_throughput", ThroughputResult)):
            written = entry["extra_info"].get(key)
            if written is None or "schema" not in written:  # not this kind, or failed before training
                continue
            today = kind.from_dict(written).to_dict()
            assert set(today) <= set(written), f"no {set(today) - set(written)}: regenerate tests/data/make_fixtures.py"
            assert {name: written[name] for name in today} == today, "regenerate: tests/data/make_fixtures.py"
            results += 1
    assert results > 0
    assert all(entry["extra_info"]["convbench"]["schema"] == SCHEMA for entry in entries
               if "schema" in entry["extra_info"].get("convbench", {})), "regenerate: tests/data/make_fixtures.py"


# --------------------------------------------------------------------------------------- tables
def test_printed_tables_show_the_json_numbers(study: Study, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_report(capsys, study.json_path, "-o", tmp_path, "--no-figures")
    assert code == 0, err
    tables = printed_tables(out)
    assert {group: sorted(cases) for group, cases in study.groups().items()} == {
        group: sorted(row["case"] for row in rows) for group, (_, rows) in tables.items()}
    for count, rows in tables.values():
        assert count == len(rows)
        for row in rows:
            record = study.records[row["case"]]
            for column, value in (("test acc", record["final"]["test_accuracy"]),
                                  ("best test acc", record["best"]["test_accuracy"]),
                                  ("train s", record["timing"]["train_s"])):
                assert row[column] == format(value, ".4g"), column
            expected = [word for word in ("diverged", "stalled") if record[word]]
            expected += [] if record["outcome"] == "passed" else [record["outcome"]]
            assert row["verdict"] == (", ".join(expected) or "ok")
        assert max(map(len, out.splitlines())) <= 160  # a terminal, not a spreadsheet (every column: tables/)
        accuracies = [study.records[row["case"]]["final"]["test_accuracy"] for row in rows]
        assert accuracies == sorted(accuracies, reverse=True)  # best final accuracy first
    assert f"{len(study.records)} cases" in out


def test_csv_tables_hold_the_json_numbers(study: Study, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_report(capsys, study.json_path, "-o", tmp_path, "--no-figures")
    assert code == 0, err
    tables = tmp_path / "tables"
    for group, cases in study.groups().items():
        rows = read_csv(tables / f"{group}.csv")
        assert sorted(row["case"] for row in rows) == sorted(cases)
        for row in rows:
            assert_row_matches(row, study.records[row["case"]])
    everything = read_csv(tables / "all_cases.csv")
    assert sorted(row["case"] for row in everything) == sorted(study.records)
    for row in everything:
        record = study.records[row["case"]]
        assert_row_matches(row, record)
        assert row["group"] == record["group"]
        assert int(row["steps"]) == record["steps"]
        assert float(row["lr"]) == record["case"]["lr"]
        assert row["optimizer"] == record["case"]["optimizer"]
        assert row["scale"] == record["scale"]
        assert row["source"] == str(study.json_path)


def test_markdown_table_per_group(study: Study, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_report(capsys, study.json_path, "-o", tmp_path, "--no-figures")
    assert code == 0, err
    groups = study.groups()
    assert sorted(p.stem for p in (tmp_path / "tables").glob("*.md")) == sorted(groups)
    for group, cases in groups.items():
        text = (tmp_path / "tables" / f"{group}.md").read_text(encoding="utf-8")
        assert text.splitlines()[0] == f"# {group}"
        (_, rows), = printed_tables(f"## {group} ({len(cases)} case{'s' * (len(cases) != 1)})\n" + text).values()
        assert sorted(row["case"] for row in rows) == sorted(cases)
        for row in rows:
            assert row["final_test_accuracy"] == format(study.records[row["case"]]["final"]["test_accuracy"], ".4g")


# -------------------------------------------------------------------------------------- figures
def test_figures_per_group_are_png(study: Study, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_report(capsys, study.json_path, "-o", tmp_path, "--figures", "loss,accuracy")
    assert code == 0, err
    figures = tmp_path / "figures"
    expected = {f"{group}-{kind}.png" for group in study.groups() for kind in ("loss", "accuracy")}
    assert {p.name for p in figures.iterdir()} == expected
    for name in expected:
        data = (figures / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE), name
        assert len(data) > 10_000, name  # a drawn chart, not an empty canvas
    written = sum(1 for p in tmp_path.rglob("*") if p.is_file())
    assert f"wrote {written} files" in out


def test_no_figures_writes_no_png(study: Study, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_report(capsys, study.json_path, "-o", tmp_path, "--no-figures")
    assert code == 0, err
    assert list(tmp_path.rglob("*.png")) == []
    assert (tmp_path / "tables" / "all_cases.csv").is_file()
    written = sum(1 for p in tmp_path.rglob("*") if p.is_file())
    assert f"wrote {written} files" in out


# --------------------------------------------------------------------------------- bad inputs
def _malformed(folder: Path, study: Study) -> tuple[Path, list[str]]:
    path = folder / "malformed.json"
    text = study.json_path.read_text(encoding="utf-8")
    broken = text[: len(text) // 2]
    path.write_text(broken, encoding="utf-8")
    with pytest.raises(json.JSONDecodeError) as excinfo:
        json.loads(broken)
    return path, [f"line {excinfo.value.lineno}", f"column {excinfo.value.colno}"]


def _foreign(folder: Path, study: Study) -> tuple[Path, list[str]]:
    path = folder / "foreign.json"
    path.write_text(json.dumps({"a": 1}), encoding="utf-8")
    return path, ["benchmarks"]


def _plain_benchmark(folder: Path, study: Study) -> tuple[Path, list[str]]:
    document = json.loads(study.json_path.read_text(encoding="utf-8"))
    for bench in document["benchmarks"]:
        bench["extra_info"].pop("convbench")
    path = folder / "plain-benchmark.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return path, ["no convbench results"]


def _missing(folder: Path, study: Study) -> tuple[Path, list[str]]:
    return folder / "does-not-exist.json", ["no such file"]


BAD_INPUTS = [_malformed, _foreign, _plain_benchmark, _missing]
BAD_IDS = ["malformed", "foreign", "benchmark-without-convbench", "missing"]


@pytest.mark.parametrize("make_bad", BAD_INPUTS, ids=BAD_IDS)
def test_bad_input_is_a_one_line_error(study: Study, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       make_bad) -> None:
    path, details = make_bad(tmp_path, study)
    code, out, err = run_report(capsys, path, "-o", tmp_path / "report", "--no-figures")
    assert code == 2
    assert out == ""
    naming = [line for line in err.splitlines() if str(path) in line]
    assert len(naming) == 1, err
    assert naming[0].startswith("convbench: error: ")
    for detail in details:
        assert detail in naming[0]
    assert "Traceback" not in err
    assert not (tmp_path / "report").exists()


@pytest.mark.parametrize("make_bad", BAD_INPUTS, ids=BAD_IDS)
def test_bad_input_prints_exactly_one_stderr_line(study: Study, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str], make_bad) -> None:
    path, _ = make_bad(tmp_path, study)
    code, _, err = run_report(capsys, path, "-o", tmp_path / "report", "--no-figures")
    assert code == 2
    assert len(err.splitlines()) == 1, err


def test_one_bad_input_among_several_still_reports_the_good_one(study: Study, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.json"
    code, out, err = run_report(capsys, study.json_path, missing, "-o", tmp_path / "report", "--no-figures")
    assert code == 1
    assert [line for line in err.splitlines() if "error" in line and str(missing) in line]
    rows = read_csv(tmp_path / "report" / "tables" / "all_cases.csv")
    assert sorted(row["case"] for row in rows) == sorted(study.records)
    for case_id in study.records:
        assert case_id in out


# ------------------------------------------------------------------------------- results files
def jsonl_lines(study: Study) -> list[str]:
    return study.jsonl_path.read_text(encoding="utf-8").splitlines()


def test_results_file_reports_the_same_numbers_as_the_json(study: Study, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_report(capsys, study.jsonl_path, "-o", tmp_path, "--no-figures")
    assert code == 0, err
    rows = read_csv(tmp_path / "tables" / "all_cases.csv")
    assert sorted(row["case"] for row in rows) == sorted(study.records)
    for row in rows:
        assert_row_matches(row, study.records[row["case"]])
        assert row["group"] == study.records[row["case"]]["group"]
        assert row["source"] == str(study.jsonl_path)
    assert {group: sorted(cases) for group, cases in study.groups().items()} == {
        group: sorted(row["case"] for row in rows) for group, (_, rows) in printed_tables(out).items()}


def test_truncated_last_line_is_skipped_with_a_warning(study: Study, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    lines = jsonl_lines(study)
    last = json.loads(lines[-1])
    path = tmp_path / "interrupted.jsonl"
    path.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2], encoding="utf-8")
    code, out, err = run_report(capsys, path, "-o", tmp_path / "report", "--no-figures")
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "warning" in line and str(path) in line]
    assert len(warnings) == 1, err
    assert f"line {len(lines)}" in warnings[0]
    kept = [json.loads(line)["extra_info"]["convbench"]["case_id"] for line in lines[:-1]]
    rows = read_csv(tmp_path / "report" / "tables" / "all_cases.csv")
    assert sorted(row["case"] for row in rows) == sorted(kept)
    assert last["extra_info"]["convbench"]["case_id"] not in out
    assert f"{len(kept)} cases" in out


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_wrong_result_schema_is_a_one_line_error(study: Study, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 suffix: str) -> None:
    wrong = "convbench.result/999"
    path = tmp_path / f"future{suffix}"
    if suffix == ".jsonl":  # every line: one bad line of a results file is skipped (test_results_file.py)
        entries = [json.loads(line) for line in jsonl_lines(study)]
        for entry in entries:
            entry["extra_info"]["convbench"]["schema"] = wrong
        path.write_text("".join(json.dumps(e) + "\n" for e in entries), encoding="utf-8")
    else:
        document = json.loads(study.json_path.read_text(encoding="utf-8"))
        document["benchmarks"][0]["extra_info"]["convbench"]["schema"] = wrong
        path.write_text(json.dumps(document), encoding="utf-8")
    code, out, err = run_report(capsys, path, "-o", tmp_path / "report", "--no-figures")
    (line,) = [line for line in err.splitlines() if str(path) in line]
    assert wrong in line
    assert line.startswith("convbench: error: ")
    if suffix == ".jsonl":  # no line left: nothing to report
        assert code == 2 and out == ""
    else:  # the bad entry is left out, the file's other entries are still reported (exit 1: not read whole)
        left_out = json.loads(study.json_path.read_text(encoding="utf-8"))["benchmarks"][0]
        assert code == 1 and line.endswith("left out")
        rows = read_csv(tmp_path / "report" / "tables" / "all_cases.csv")
        assert sorted(row["case"] for row in rows) == sorted(
            name for name in study.records if name != left_out["extra_info"]["convbench"]["case_id"])


def test_wrong_record_schema_is_an_error(study: Study, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    entries = [json.loads(line) for line in jsonl_lines(study)]
    wrong = entries[0]["schema"].rsplit("/", 1)[0] + "/999"
    for entry in entries:
        entry["schema"] = wrong
    path = tmp_path / "future-records.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in entries), encoding="utf-8")
    code, _, err = run_report(capsys, path, "-o", tmp_path / "report", "--no-figures")
    assert code == 2
    assert wrong in err


def test_case_in_both_json_and_results_file_is_reported_once(study: Study, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_report(capsys, study.json_path, study.jsonl_path, "-o", tmp_path, "--no-figures")
    assert code == 0, err
    rows = read_csv(tmp_path / "tables" / "all_cases.csv")
    assert sorted(row["case"] for row in rows) == sorted(study.records)
    for row in rows:
        assert_row_matches(row, study.records[row["case"]])
    printed = [row["case"] for _, table in printed_tables(out).values() for row in table]
    assert sorted(printed) == sorted(study.records)
    assert f"\n{len(study.records)} cases;" in out


@pytest.mark.slow
def test_console_script_runs_the_report(study: Study, tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("convbench")
    completed = subprocess.run([str(script), "report", str(study.json_path), "-o", str(tmp_path), "--no-figures"],
                               capture_output=True, text=True, timeout=120, check=False)
    assert completed.returncode == 0, completed.stderr
    for case_id in study.records:
        assert case_id in completed.stdout
    assert sorted(row["case"] for row in read_csv(tmp_path / "tables" / "all_cases.csv")) == sorted(study.records)


# ------------------------------------------------------------------------------ HTML and LaTeX
class _HTMLTable(HTMLParser):
    """The cells of every <tr> in an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.cell: str | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self.cell = ""

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self.cell is not None:
            self.rows[-1].append(self.cell.strip())
            self.cell = None

    def handle_data(self, data: str) -> None:
        if self.cell is not None:
            self.cell += data


def html_rows(path: Path) -> list[dict[str, str]]:
    parser = _HTMLTable()
    parser.feed(path.read_text(encoding="utf-8"))
    header, *rows = parser.rows
    return [dict(zip(header, row, strict=True)) for row in rows]


def latex_rows(path: Path) -> list[dict[str, str]]:
    """Rows of a booktabs tabular: the lines ending in \\\\, cells split on &, escapes undone."""
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.endswith("\\\\")]
    header, *rows = [[cell.strip().replace("\\_", "_").replace("\\%", "%") for cell in line[:-2].split(" & ")]
                     for line in lines]
    return [dict(zip(header, row, strict=True)) for row in rows]


def test_html_and_latex_tables_per_group(study: Study, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_report(capsys, study.json_path, "-o", tmp_path, "--no-figures")
    assert code == 0, err
    printed = printed_tables(out)
    for group, cases in study.groups().items():
        html_path, tex_path = tmp_path / "tables" / f"{group}.html", tmp_path / "tables" / f"{group}.tex"
        assert f"<title>{group}</title>" in html_path.read_text(encoding="utf-8")
        assert tex_path.read_text(encoding="utf-8").splitlines()[0] == f"% {group}"
        markdown = printed_tables(f"## {group} (1 case)\n" + (tmp_path / "tables" / f"{group}.md").read_text())
        for rows in (html_rows(html_path), latex_rows(tex_path)):
            assert list(rows[0]) == list(markdown[group][1][0])  # the Markdown file's columns, in order
            assert next(iter(printed[group][1][0])) == "case" and len(printed[group][1][0]) < len(rows[0])
            assert sorted(row["case"] for row in rows) == sorted(cases)
            for row in rows:
                record = study.records[row["case"]]
                for column, value in (("final_test_accuracy", record["final"]["test_accuracy"]),
                                      ("final_test_loss", record["final"]["test_loss"]),
                                      ("train_time_s", record["timing"]["train_s"])):
                    assert row[column] == format(value, ".4g"), column
                assert row["seeds"] == "1"
                assert row["diverged"] == str(record["diverged"])
                assert row["outcome"] == record["outcome"]


def test_html_and_latex_of_all_cases(study: Study, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_report(capsys, study.json_path, "-o", tmp_path, "--no-figures")
    assert code == 0, err
    columns = list(read_csv(tmp_path / "tables" / "all_cases.csv")[0])
    for rows in (html_rows(tmp_path / "tables" / "all_cases.html"), latex_rows(tmp_path / "tables" / "all_cases.tex")):
        assert list(rows[0]) == columns
        assert sorted(row["case"] for row in rows) == sorted(study.records)
        for row in rows:
            record = study.records[row["case"]]
            assert row["group"] == record["group"]
            assert row["final_test_accuracy"] == format(record["final"]["test_accuracy"], ".4g")
            assert row["steps"] == str(record["steps"])


# ----------------------------------------------------------------------------------- seeds
#: Table column -> how to read it from a result.
SEEDED_METRICS = {
    "final_test_accuracy": lambda r: r["final"]["test_accuracy"],
    "best_test_accuracy": lambda r: r["best"]["test_accuracy"],
    "final_train_loss": lambda r: r["final"]["train_loss"],
    "final_test_loss": lambda r: r["final"]["test_loss"],
    "time_to_target_s": lambda r: r["target"]["time_s"],
    "steps_to_target": lambda r: r["target"]["step"],
    "train_time_s": lambda r: r["timing"]["train_s"],
}


def seedless(case_id: str) -> str:
    return re.sub(r"-seed\d+$", "", case_id)


def config(record: dict) -> str:
    """What a run is apart from its seed."""
    case = {k: v for k, v in record["case"].items() if k not in ("seed", "label")}
    return json.dumps([record["group"], record["scale"], case], sort_keys=True)


@pytest.fixture(scope="module")
def seeded() -> Study:
    """Four configurations run with two seeds each in one group, and one single-seed case in another."""
    found = read_study(DATA / "seeded.json")
    assert len(found.records) == 9
    assert not any(r["diverged"] for r in found.records.values())
    return found


def configurations(study: Study) -> dict[str, dict[str, list[dict]]]:
    """Group -> table row name -> the runs of that configuration (its seeds)."""
    runs: dict[str, dict[str, list[dict]]] = {}
    for record in study.records.values():
        runs.setdefault(record["group"], {}).setdefault(config(record), []).append(record)
    named: dict[str, dict[str, list[dict]]] = {}
    for group, configs in runs.items():
        for members in configs.values():
            name = members[0]["case_id"] if len(members) == 1 else seedless(members[0]["case_id"])
            named.setdefault(group, {})[name] = members
    return named


def heading_counts(text: str) -> dict[str, str]:
    return {m.group(1): m.group(2) for m in re.finditer(r"^## (.+) \((.+)\)$", text, flags=re.M)}


def test_seeds_become_one_row_with_mean_and_std(seeded: Study, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_report(capsys, seeded.json_path, "-o", tmp_path, "--no-figures")
    assert code == 0, err
    expected = configurations(seeded)
    sizes = sorted(len(m) for configs in expected.values() for m in configs.values())
    assert sizes[0] == 1 and sizes[-1] > 1  # the study has single- and multi-seed cases
    for group, configs in expected.items():
        rows = read_csv(tmp_path / "tables" / f"{group}.csv")
        assert sorted(row["case"] for row in rows) == sorted(configs)
        for row in rows:
            runs = configs[row["case"]]
            assert int(row["seeds"]) == len(runs)
            for column, read in SEEDED_METRICS.items():
                values = [read(r) for r in runs]
                if len(values) == 1:
                    assert csv_value(row[column]) == values[0], column  # exactly the JSON's number
                    assert row[f"{column}_std"] == "", column  # no spread from one seed
                else:
                    assert csv_value(row[column]) == pytest.approx(statistics.fmean(values), rel=1e-12), column
                    assert csv_value(row[f"{column}_std"]) == pytest.approx(statistics.stdev(values), rel=1e-9,
                                                                            abs=1e-15), column
            assert row["diverged"] == "False"
            assert row["outcome"] == "passed"
    everything = read_csv(tmp_path / "tables" / "all_cases.csv")  # still one row per run
    assert sorted(row["case"] for row in everything) == sorted(seeded.records)


def test_printed_seed_tables(seeded: Study, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_report(capsys, seeded.json_path, "-o", tmp_path, "--no-figures")
    assert code == 0, err
    expected = configurations(seeded)
    printed = printed_tables(out)
    headings = heading_counts(out)
    for group, configs in expected.items():
        runs = sum(len(m) for m in configs.values())
        cases = f"{len(configs)} case" + ("s" if len(configs) != 1 else "")
        assert headings[group] == (cases if runs == len(configs) else f"{cases}, {runs} runs")
        _, rows = printed[group]
        spread = any(len(m) > 1 for m in configs.values())
        assert ("seeds" in rows[0]) == spread  # a seeds column only where some case has several
        for row in rows:
            values = [r["final"]["test_accuracy"] for r in configs[row["case"]]]
            mean = format(statistics.fmean(values), ".4g")  # the spread beside the mean, where there is one
            assert row["test acc"] == (mean if len(values) == 1 else f"{mean} ±{statistics.stdev(values):.2g}")
        means = [statistics.fmean(r["final"]["test_accuracy"] for r in configs[row["case"]]) for row in rows]
        assert means == sorted(means, reverse=True)
    assert f"\n{len(seeded.records)} cases;" in out


def test_seed_spread_in_html_and_latex(seeded: Study, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_report(capsys, seeded.json_path, "-o", tmp_path, "--no-figures")
    assert code == 0, err
    for group, configs in configurations(seeded).items():
        spread = any(len(m) > 1 for m in configs.values())
        tables = tmp_path / "tables"
        for rows in (html_rows(tables / f"{group}.html"), latex_rows(tables / f"{group}.tex")):
            assert ("train_time_s_std" in rows[0]) == spread
            for row in rows:
                times = [r["timing"]["train_s"] for r in configs[row["case"]]]
                assert row["seeds"] == str(len(times))
                assert row["train_time_s"] == format(statistics.fmean(times), ".4g")
                if spread:
                    assert row["train_time_s_std"] == format(statistics.stdev(times), ".4g")


def test_figures_still_drawn_for_seeded_cases(seeded: Study, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_report(capsys, seeded.json_path, "-o", tmp_path, "--figures", "loss,accuracy")
    assert code == 0, err
    expected = {f"{group}-{kind}.png" for group in seeded.groups() for kind in ("loss", "accuracy")}
    assert {p.name for p in (tmp_path / "figures").iterdir()} == expected
    for name in expected:
        assert (tmp_path / "figures" / name).read_bytes().startswith(PNG_SIGNATURE)


# ------------------------------------------------------------------------------------- sorting
@pytest.mark.parametrize(("args", "descending"), [
    (["--sort", "train_time_s"], False),
    (["--sort=-train_time_s"], True),
    (["--sort", "-train_time_s"], True),
    (["--sort", "train_time_s", "--descending"], True),
], ids=["ascending", "minus-attached", "minus-separate", "descending-flag"])
def test_sort_by_a_column(seeded: Study, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                          descending: bool) -> None:
    code, out, err = run_report(capsys, seeded.json_path, "-o", tmp_path, "--no-figures", *args)
    assert code == 0, err
    printed = printed_tables(out)
    for group, configs in configurations(seeded).items():
        mean_time = {name: statistics.fmean(r["timing"]["train_s"] for r in runs) for name, runs in configs.items()}
        expected = sorted(mean_time, key=mean_time.get, reverse=descending)
        assert [row["case"] for row in read_csv(tmp_path / "tables" / f"{group}.csv")] == expected
        assert [row["case"] for row in printed[group][1]] == expected


def test_sort_by_a_text_column(seeded: Study, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_report(capsys, seeded.json_path, "-o", tmp_path, "--no-figures", "--sort", "case")
    assert code == 0, err
    for group, configs in configurations(seeded).items():
        assert [row["case"] for row in read_csv(tmp_path / "tables" / f"{group}.csv")] == sorted(configs)


def test_unknown_sort_column_is_a_one_line_error(seeded: Study, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_report(capsys, seeded.json_path, "-o", tmp_path / "ok", "--no-figures")
    assert code == 0, err
    columns = list(read_csv(tmp_path / "ok" / "tables" / "test_grid.csv")[0])
    code, out, err = run_report(capsys, seeded.json_path, "-o", tmp_path / "bad", "--sort=-final_test_acuracy")
    assert code == 2
    assert out == ""
    (line,) = err.splitlines()
    assert line.startswith("convbench: error: ") and "'final_test_acuracy'" in line
    assert "did you mean 'final_test_accuracy'" in line
    assert sorted(line.split("valid choices: ")[1].split(", ")) == sorted(columns)
    assert not (tmp_path / "bad").exists()


# ------------------------------------------------------------------------------------ grouping
def test_group_by_case_fields(seeded: Study, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_report(capsys, seeded.json_path, "-o", tmp_path, "--no-figures", "--group-by", "optimizer,lr")
    assert code == 0, err
    expected: dict[tuple[str, float], list[dict]] = {}
    for record in seeded.records.values():
        expected.setdefault((record["case"]["optimizer"], record["case"]["lr"]), []).append(record)
    printed = printed_tables(out)
    assert list(printed) == [f"optimizer={opt}, lr={lr:g}" for opt, lr in sorted(expected)]
    csv_tables = [read_csv(p) for p in (tmp_path / "tables").glob("*.csv") if p.stem != "all_cases"]
    assert len(csv_tables) == len(expected)
    for (optimizer, lr), runs in expected.items():
        count, rows = printed[f"optimizer={optimizer}, lr={lr:g}"]
        names = {(r["group"], r["case_id"] if sum(config(o) == config(r) for o in runs) == 1
                  else seedless(r["case_id"])) for r in runs}
        assert {(row["group"], row["case"]) for row in rows} == names
        assert count == len(names)
        seeds = [int(row.get("seeds", 1)) for row in rows]  # no seeds column: one seed each
        assert sum(seeds) == len(runs)
        for row in rows:
            values = [r["final"]["test_accuracy"] for r in runs if r["group"] == row["group"]
                      and row["case"] in (r["case_id"], seedless(r["case_id"]))]
            assert row["test acc"].split(" ±")[0] == format(statistics.fmean(values), ".4g")
        (written,) = [t for t in csv_tables if {(row["group"], row["case"]) for row in t} == names]
        assert sorted(int(row["seeds"]) for row in written) == sorted(seeds)


def test_group_by_seed_splits_the_seeds(seeded: Study, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_report(capsys, seeded.json_path, "-o", tmp_path, "--no-figures", "--group-by", "seed")
    assert code == 0, err
    printed = printed_tables(out)
    seeds = sorted({r["case"]["seed"] for r in seeded.records.values()})
    assert list(printed) == [f"seed={seed}" for seed in seeds]
    for seed in seeds:
        _, rows = printed[f"seed={seed}"]
        expected = sorted(cid for cid, r in seeded.records.items() if r["case"]["seed"] == seed)
        assert sorted(row["case"] for row in rows) == expected
        assert "seeds" not in rows[0]  # one seed per row: no seeds column


def test_unknown_group_by_field_is_a_one_line_error(seeded: Study, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_report(capsys, seeded.json_path, "-o", tmp_path, "--group-by", "optimiser,lr")
    assert code == 2
    assert out == ""
    (line,) = err.splitlines()
    assert line.startswith("convbench: error: ") and "'optimiser'" in line and "did you mean 'optimizer'" in line
    choices = line.split("valid choices: ")[1].split(", ")
    assert {"optimizer", "lr", "batch_size", "seed", "model", "group"} <= set(choices) <= case_fields(seeded)
    assert not tmp_path.joinpath("tables").exists()


def case_fields(study: Study) -> set[str]:
    """The names a run is described by: its case's fields, its group, its scale, and where it ran (the
    machine and commit of the JSON's machine_info and commit_info)."""
    document = json.loads(study.json_path.read_text(encoding="utf-8"))
    return {"group", "scale", "machine", "commit", *document["benchmarks"][0]["extra_info"]["convbench"]["case"]}


# -------------------------------------------------------------------------------------- pivots
def printed_sections(text: str) -> dict[str, list[dict[str, str]]]:
    """Every printed section: heading -> its table's rows."""
    sections: dict[str, list[dict[str, str]]] = {}
    heading, header = None, None
    for line in text.splitlines():
        if line.startswith("## "):
            heading, header = line[3:], None
            sections[heading] = []
        elif heading is not None and line.startswith("|"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if header is None:
                header = cells
            elif not all(set(cell) <= set(":-") for cell in cells):
                sections[heading].append(dict(zip(header, cells, strict=True)))
    return sections


@pytest.mark.parametrize(("spec", "metric", "read"), [
    ("lr,batch_size", "final_test_accuracy", lambda r: r["final"]["test_accuracy"]),
    ("lr,batch_size:train_time_s", "train_time_s", lambda r: r["timing"]["train_s"]),
], ids=["default-metric", "train-time"])
def test_pivot_lr_by_batch_size(seeded: Study, tmp_path: Path, capsys: pytest.CaptureFixture[str], spec: str,
                                metric: str, read) -> None:
    code, out, err = run_report(capsys, seeded.json_path, "-o", tmp_path, "--no-figures", "--pivot", spec)
    assert code == 0, err
    sections = printed_sections(out)
    for group in seeded.groups():
        runs = [r for r in seeded.records.values() if r["group"] == group]
        lrs = sorted({r["case"]["lr"] for r in runs})
        sizes = sorted({r["case"]["batch_size"] for r in runs})
        rows = read_csv(tmp_path / "tables" / f"pivot-{group}.csv")
        printed = sections[f"pivot {group}: mean {metric} by lr (rows) and batch_size (columns)"]
        md = (tmp_path / "tables" / f"pivot-{group}.md").read_text(encoding="utf-8")
        assert md.startswith(f"# pivot {group}: mean {metric} by lr (rows)")
        assert list(rows[0]) == ["lr \\ batch_size", *map(str, sizes)]
        assert [float(row["lr \\ batch_size"]) for row in rows] == lrs
        assert len(printed) == len(lrs)
        for row, shown, lr in zip(rows, printed, lrs, strict=True):
            for size in sizes:
                values = [read(r) for r in runs if r["case"]["lr"] == lr and r["case"]["batch_size"] == size]
                mean = statistics.fmean(values)
                assert float(row[str(size)]) == pytest.approx(mean, rel=1e-12)
                assert shown[str(size)] == format(mean, ".4g")


def test_pivot_per_group_by_group(seeded: Study, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_report(capsys, seeded.json_path, "-o", tmp_path, "--no-figures", "--group-by", "optimizer",
                              "--pivot", "lr,batch_size")
    assert code == 0, err
    optimizers = {r["case"]["optimizer"] for r in seeded.records.values()}
    assert {p.name for p in (tmp_path / "tables").glob("pivot-*.csv")} == {f"pivot-optimizer_{o}.csv"
                                                                             for o in optimizers}
    for optimizer in optimizers:
        runs = [r for r in seeded.records.values() if r["case"]["optimizer"] == optimizer]
        rows = read_csv(tmp_path / "tables" / f"pivot-optimizer_{optimizer}.csv")
        assert len(rows) == len({r["case"]["lr"] for r in runs})
        assert len(rows[0]) - 1 == len({r["case"]["batch_size"] for r in runs})


def test_pivot_warns_when_cells_mix_configurations(seeded: Study, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_report(capsys, seeded.json_path, "-o", tmp_path, "--no-figures", "--pivot", "lr,seed")
    assert code == 0, err
    for group in seeded.groups():
        cells: dict[tuple, set[str]] = {}
        for r in seeded.records.values():
            if r["group"] == group:
                cells.setdefault((r["case"]["lr"], r["case"]["seed"]), set()).add(config(r))
        mixed = sum(len(configs) > 1 for configs in cells.values())
        warnings = [line for line in err.splitlines() if f"pivot {group}:" in line]
        if mixed:
            (line,) = warnings
            assert line.startswith("convbench: warning: ") and f"{mixed} cell(s)" in line
        else:
            assert warnings == []
    assert any(f"pivot {group}:" in err for group in seeded.groups())  # the study does mix batch sizes


@pytest.mark.parametrize("spec", ["lr", "lr,batch_size,seed", "lr,bogus", "lr,batch_size:bogus", "lr,lr",
                                  "lr,batch_size:"])
def test_bad_pivot_is_a_one_line_error(seeded: Study, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       spec: str) -> None:
    code, out, err = run_report(capsys, seeded.json_path, "-o", tmp_path, "--pivot", spec)
    assert code == 2
    assert out == ""
    (line,) = err.splitlines()
    assert line.startswith("convbench: error: ") and "--pivot" in line
    assert "bogus" not in spec or "'bogus'" in line
    assert not tmp_path.joinpath("tables").exists()


# ------------------------------------------------------------------------------------------ list
BUILTINS = {
    "optimizer": ("optimizers", ["sgd", "momentum", "nesterov", "adam", "rmsprop"]),
    "model": ("models", ["softmax", "mlp", "lenet5", "tf_cnn"]),
    "scheduler": ("schedulers", ["step", "exponential"]),
    "augmentation": ("augmentations", ["rotation"]),
    "dataset": ("datasets", ["mnist-5k", "mnist"]),
    "figure": ("figures", ["loss", "accuracy", "lr", "heatmap", "params", "target", "utilisation", "profile",
                           "scaling", "loss-scales", "error", "seeds", "gap"]),
}


def listed(text: str) -> dict[str, dict[str, str]]:
    """Kind -> {component name: plugin} from `convbench list` output, checking each heading's count."""
    sections: dict[str, dict[str, str]] = {}
    counts: dict[str, int] = {}
    kind = None
    for line in text.splitlines():
        heading = re.match(r"^(\w+)s \((\d+)\):$", line)
        if heading:
            kind = heading.group(1)
            counts[kind], sections[kind] = int(heading.group(2)), {}
            continue
        entry = re.match(r"^  (\S+)\s.*\((\S+)\)$", line)
        assert kind is not None and entry, line
        sections[kind][entry.group(1)] = entry.group(2)
    assert {k: len(v) for k, v in sections.items()} == counts
    return sections


def test_list_shows_every_kind_with_its_plugins(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    sections = listed(capsys.readouterr().out)
    assert list(sections) == list(BUILTINS)
    for kind, (module, names) in BUILTINS.items():
        for name in names:
            assert sections[kind].get(name) == f"convbench_plugins.{module}", (kind, name)


def test_list_one_kind(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "optimizer"]) == 0
    out = capsys.readouterr().out
    sections = listed(out)
    assert list(sections) == ["optimizer"]
    assert set(BUILTINS["optimizer"][1]) <= set(sections["optimizer"])
    for kind in ("model", "dataset"):
        for name in BUILTINS[kind][1]:
            assert name not in sections["optimizer"]


def test_list_unknown_kind_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "bogus"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.splitlines()
    assert line.startswith("convbench: error: ") and "'bogus'" in line
    for kind in BUILTINS:
        assert kind in line


def test_list_suggests_the_kind_meant(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "models"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "did you mean 'model'" in line


def test_a_benchmarks_folder_stands_for_its_saved_runs(study: Study, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    # the layout of pytest-benchmark's --benchmark-autosave: .benchmarks/<machine>/<counter>_<commit>_<date>.json
    saved = tmp_path / ".benchmarks" / "Linux-CPython-3.11-64bit"
    saved.mkdir(parents=True)
    (saved / "0001_abc_20261124.json").write_text(study.json_path.read_text(encoding="utf-8"), encoding="utf-8")
    code, _, err = run_report(capsys, tmp_path / ".benchmarks", "-o", tmp_path / "report", "--no-figures")
    assert code == 0, err
    rows = read_csv(tmp_path / "report" / "tables" / "all_cases.csv")
    assert sorted(row["case"] for row in rows) == sorted(study.records)
    assert {row["source"] for row in rows} == {str(saved / "0001_abc_20261124.json")}


def test_an_empty_folder_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    code, _, err = run_report(capsys, tmp_path / "empty", "-o", tmp_path / "report")
    assert code == 2
    assert err.strip() == f"convbench: error: {tmp_path / 'empty'}: a folder with no .json or .jsonl files"


def test_results_of_two_machines_are_both_reported_and_labelled(study: Study, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    document = json.loads(study.json_path.read_text(encoding="utf-8"))
    paths = []
    for node, commit in (("box-a", "1111111111aaaa"), ("box-b", "2222222222bbbb")):
        copy = json.loads(json.dumps(document))
        copy["machine_info"]["node"] = node
        copy["commit_info"] = {"id": commit, "dirty": node == "box-b"}
        paths.append(tmp_path / f"{node}.json")
        paths[-1].write_text(json.dumps(copy), encoding="utf-8")
    code, out, err = run_report(capsys, *paths, "-o", tmp_path / "report", "--no-figures")
    assert code == 0, err
    assert "superseded" not in err  # another machine's run of the same test is not a re-run
    rows = read_csv(tmp_path / "report" / "tables" / "all_cases.csv")
    assert len(rows) == 2 * len(study.records)
    assert {(row["machine"], row["commit"]) for row in rows} == {("box-a", "1111111111"),
                                                                  ("box-b", "2222222222-dirty")}
    case_id = next(iter(study.records))
    assert f"{case_id} [box-a@1111111111]" in out and f"{case_id} [box-b@2222222222-dirty]" in out


def test_results_file_lines_say_where_they_ran(study: Study) -> None:
    lines = [json.loads(line) for line in study.jsonl_path.read_text(encoding="utf-8").splitlines()]
    node = json.loads(study.json_path.read_text(encoding="utf-8"))["machine_info"]["node"]
    assert node and {line["machine"]["node"] for line in lines} == {node}  # the same host as the JSON names
    assert all(set(line["commit"]) == {"id", "dirty"} for line in lines)


# ------------------------------------------------------------------------------------ failures
def test_cases_that_failed_are_reported_as_such(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = DATA / "failures.jsonl"
    entries = [json.loads(line)["extra_info"]["convbench"] for line in path.read_text(encoding="utf-8").splitlines()]
    trained = {e["case_id"]: e for e in entries if "schema" in e}
    (before,) = [e for e in entries if "schema" not in e]  # failed before training: no measurements
    assert before["outcome"] == "failed" and before["error"]
    assert sorted(e["outcome"] for e in trained.values()) == ["failed", "passed"]
    code, out, err = run_report(capsys, path, "-o", tmp_path, "--no-figures")
    assert code == 0, err
    rows = read_csv(tmp_path / "tables" / "all_cases.csv")
    assert sorted(row["case"] for row in rows) == sorted(trained)
    for row in rows:
        assert_row_matches(row, trained[row["case"]])  # a failed test's measurements are still reported
    (warning,) = [line for line in err.splitlines() if "failed before training" in line]
    assert warning.startswith(f"convbench: warning: {path}: ") and before["error"] in warning
    assert before["case_id"] not in out


# --------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_a_real_session_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The live pipeline the checked-in files stand for: a suite run by pytest, then `convbench report`
    on its benchmark JSON and results file (the same suite as ``data/report.json``)."""
    live = read_study(run_suite(tmp_path, (DATA / "suites" / "report.py").read_text(encoding="utf-8"),
                                "--convbench-results", "out.jsonl"))
    assert sorted(live.records) == sorted(read_study(DATA / "report.json").records)  # the checked-in cases
    for source in (live.json_path, live.jsonl_path):
        code, out, err = run_report(capsys, source, "-o", tmp_path / source.suffix[1:])
        assert code == 0, err
        tables = printed_tables(out)
        assert {group: sorted(cases) for group, cases in live.groups().items()} == {
            group: sorted(row["case"] for row in rows) for group, (_, rows) in tables.items()}
        for _, rows in tables.values():
            for row in rows:
                assert row["test acc"] == format(live.records[row["case"]]["final"]["test_accuracy"], ".4g")
        for row in read_csv(tmp_path / source.suffix[1:] / "tables" / "all_cases.csv"):
            assert_row_matches(row, live.records[row["case"]])
        assert (tmp_path / source.suffix[1:] / "figures" / "test_mixed-loss.png").read_bytes().startswith(
            PNG_SIGNATURE)
    lines = [json.loads(line) for line in live.jsonl_path.read_text(encoding="utf-8").splitlines()]
    assert {line["machine"]["node"] for line in lines} == {platform.node()}
    assert all(set(line["commit"]) == {"id", "dirty"} for line in lines)
