"""Speed options in `convbench report`: runs with them are told apart, grouped by them, and a compiled run's
compilation time has a column of its own, beside (never inside) the training time."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from convbench.cli import main
from convbench.report.load import CASE_FIELDS

DATA = Path(__file__).parent / "data"


def _markdown_rows(text: str) -> dict[str, list[dict[str, str]]]:
    """Heading (``## ...``) -> the rows of the Markdown table under it."""
    tables: dict[str, list[dict[str, str]]] = {}
    heading, header = None, None
    for line in text.splitlines():
        if line.startswith("## "):
            heading, header = line[3:].split(" (")[0], None
            tables[heading] = []
        elif heading is not None and line.startswith("|"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if header is None:
                header = cells
            elif not all(set(cell) <= set(":-") for cell in cells):
                tables[heading].append(dict(zip(header, cells, strict=True)))
    return tables


@pytest.fixture
def with_options(tmp_path: Path) -> Path:
    """The report study with one run marked bf16 and compiled (7.5 s of compilation), as such a run records it."""
    document = json.loads((DATA / "report.json").read_text(encoding="utf-8"))
    run = document["benchmarks"][2]["extra_info"]["convbench"]
    run["case"].update(precision="bf16", compile="default")
    run["case_id"] += "-bf16-compile"
    run["timing"].update(compile_s=7.5, first_step_s=0.25)
    path = tmp_path / "options.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def test_group_by_precision_separates_the_runs_and_shows_compile_time_apart(with_options, tmp_path, capsys):
    assert {"precision", "channels_last", "compile"} <= set(CASE_FIELDS)
    code = main(["report", str(with_options), "-o", str(tmp_path / "out"), "--no-figures", "--group-by", "precision"])
    out = capsys.readouterr().out
    assert code == 0
    tables = _markdown_rows(out)
    assert set(tables) == {"precision=bf16", "precision=fp32"}
    (fast,) = tables["precision=bf16"]
    assert fast["case"].endswith("-bf16-compile")
    assert float(fast["compile s"]) == 7.5  # printed beside the train time, apart from it
    assert float(fast["train s"]) < 7.5  # compilation is not training time
    assert len(tables["precision=fp32"]) == 3 and "compile s" not in tables["precision=fp32"][0]  # none compiled
    written = {}
    for name in ("precision=bf16", "precision=fp32"):  # the written tables have the column for every row
        path = tmp_path / "out" / "tables" / f"{name.replace('=', '_')}.csv"
        with path.open(newline="", encoding="utf-8") as stream:
            written[name] = list(csv.DictReader(stream))
    assert float(written["precision=bf16"][0]["compile_time_s"]) == 7.5
    assert all(row["compile_time_s"] == "" for row in written["precision=fp32"])


def test_results_without_speed_options_get_no_compile_column_and_read_as_fp32(tmp_path, capsys):
    document = json.loads((DATA / "report.json").read_text(encoding="utf-8"))
    for entry in document["benchmarks"]:  # as written before the options existed
        for name in ("precision", "channels_last", "compile"):
            entry["extra_info"]["convbench"]["case"].pop(name, None)
    path = tmp_path / "old.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    code = main(["report", str(path), "-o", str(tmp_path / "out"), "--no-figures", "--group-by", "precision"])
    out = capsys.readouterr().out
    assert code == 0
    tables = _markdown_rows(out)
    assert list(tables) == ["precision=fp32"]
    assert "compile_time_s" not in tables["precision=fp32"][0]
