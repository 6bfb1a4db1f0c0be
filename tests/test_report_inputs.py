"""`convbench report` and `compare` on inputs an adversarial user would give: nothing lost, nothing leaked.

Every input here is built in the test from the result contract (`RunResult`, `ThroughputResult`), then
broken one field at a time: a wrong type, a missing field, NaN, an infinity, deep nesting, a huge number,
a label that is hostile to Markdown or to a file system. The report must never raise, must say in one
line which entry of which file it left out and why, and must still report every good input beside it.
"""

from __future__ import annotations

import copy
import csv
import json
import math
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from convbench import Case
from convbench.cli import main
from convbench.report.build import make_report
from convbench.report.compare import compare_files
from convbench.report.figures import FigureOptions
from convbench.report.names import MAX_LENGTH, Names, safe_name
from convbench.report.scaling import scaling_rows
from convbench.result import RECORD_SCHEMA, RoundTimes, RunResult, Target, Telemetry, ThroughputResult, Timing

FIGURE_KINDS = ("loss", "accuracy", "lr", "heatmap", "params", "target", "utilisation", "profile", "scaling",
                "loss-scales", "error", "seeds", "gap")
HOSTILE = "a|b\nc | d"  # a label that would break a Markdown table: a column bar and a new line


# ------------------------------------------------------------------------------------- inputs
def run(lr: float = 0.1, *, batch_size: int = 100, seed: int = 0, world_size: int = 1, accuracy: float = 0.9,
        train_s: float = 2.0, label: str | None = None, diverged: bool = False, target_s: float | None = 1.5,
        model: str = "softmax") -> dict[str, Any]:
    """A complete, valid result: every part the report reads (target, parameters, telemetry) present."""
    case = Case(model=model, optimizer="sgd", lr=lr, batch_size=batch_size, steps=10, seed=seed,
                world_size=world_size, label=label, target_accuracy=0.5)
    steps = [0, 5, 10]
    telemetry = Telemetry(sampler="cpu", interval_s=0.1, host="h", samples=3, duration_s=train_s,
                          devices=[{"name": "cpu", "index": None, "host": "h", "cpu_percent_mean": 80.0}],
                          timeline={"t_s": [0.0, 0.5, 1.0], "cpu_percent": [70.0, 80.0, 90.0]})
    result = RunResult(
        case_id=case.id, case=case.to_dict(), scale="quick", device="cpu", world_size=world_size, steps=10,
        steps_planned=10, epochs=0.2, samples=1000, diverged=diverged, divergence=None,
        timing=Timing(setup_s=0.1, train_s=train_s, eval_s=0.3, train_per_step_s=train_s / 10),
        samples_per_s=1000 / train_s, final={"train_loss": 0.4, "test_loss": 0.5, "test_accuracy": accuracy},
        best={"test_accuracy": accuracy}, stop_reason="budget",
        target=Target(metric="accuracy", split="test", value=0.5, reached=target_s is not None,
                      step=None if target_s is None else 5, epoch=None if target_s is None else 0.1, time_s=target_s),
        curves={"train": {"step": steps, "loss": [2.0, 1.0, 0.4], "lr": [lr] * 3},
                "eval": {"step": steps, "epoch": [0.0, 0.1, 0.2], "time_s": [0.0, 1.0, train_s], "lr": [lr] * 3,
                         "test_accuracy": [0.1, 0.5, accuracy], "test_loss": [2.0, 1.0, 0.5]},
                "params": {"step": steps, "W": [0.0, 1.0, 2.0], "b": [0.0, 0.2, 0.5]}},
        telemetry=telemetry)
    return result.to_dict()


def speed(world_size: int = 1, samples_per_round: int = 1000) -> dict[str, Any]:
    case = Case(model="softmax", optimizer="sgd", lr=0.1, steps=10, world_size=world_size)
    return ThroughputResult(case_id=case.id, case=case.to_dict(), world_size=world_size, steps_per_round=10,
                            rounds=3, samples_per_round=samples_per_round, round_s=RoundTimes(0.5, 0.4, 0.6)).to_dict()


def entry(result: dict[str, Any], group: str = "g", test: str | None = None, key: str = "convbench") -> dict[str, Any]:
    test = test or f"test_x[{result['case_id']}-seed{result['case']['seed']}]"
    return {"group": group, "name": test, "fullname": f"suite.py::{test}", "extra_info": {key: result}}


def document(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"machine_info": {"node": "host"}, "commit_info": {"id": "0123456789abcdef", "dirty": False},
            "benchmarks": list(entries)}


def write(path: Path, data: Any) -> Path:
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def good_file(folder: Path) -> Path:
    """The good input given beside every bad one: group ``good``, case ``good-case``."""
    return write(folder / "good.json", document(entry(run(label="good-case"), group="good")))


def assert_good_reported(text: str, out: Path) -> None:
    assert "## good (1 case)" in text
    rows = read_csv(out / "tables" / "good.csv")
    assert [row["case"] for row in rows] == ["good-case"]


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


# ------------------------------------------------------------------------- the shape of entries
def paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every field of a JSON value: each key of an object, the first item of a list, and all below them."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield (*prefix, key)
            yield from paths(item, (*prefix, key))
    elif isinstance(value, list) and value:
        yield (*prefix, 0)
        yield from paths(value[0], (*prefix, 0))


def replaced(data: Any, path: tuple[Any, ...], value: Any) -> Any:
    """A copy of ``data`` with the field at ``path`` set to ``value`` (``DELETE``: removed)."""
    data = copy.deepcopy(data)
    *parents, last = path
    holder = data
    for key in parents:
        holder = holder[key]
    if value is DELETE:
        del holder[last]
    else:
        holder[last] = copy.deepcopy(value)
    return data


def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


DELETE = object()
CORRUPTIONS = {
    "deleted": DELETE, "null": None, "text": "x", "hostile-text": HOSTILE, "mathtext": "$\\frac{$", "true": True,
    "list": [1, "x"], "object": {"x": [1]}, "nan": math.nan, "inf": math.inf, "-inf": -math.inf,
    "huge": 10**30, "negative": -1, "zero": 0, "deep": nested(200),
}


def corrupted_entries() -> list[tuple[str, dict[str, Any]]]:
    """Each field of a run's entry, of a throughput entry and of a failed case's entry, broken each way."""
    failed = {"case_id": "boom", "scale": "quick", "outcome": "failed", "error": "boom", "group": "g"}
    templates = [entry(run()), entry(speed(), key="convbench_throughput"), entry(failed, test="test_x[boom]")]
    broken = []
    for template in templates:
        for path in paths(template):
            for name, value in CORRUPTIONS.items():
                broken.append((f"{'.'.join(map(str, path))}={name}", replaced(template, path, value)))
    return broken


def test_the_corruptions_cover_every_field_the_report_reads() -> None:
    fields = {name.partition("=")[0] for name, _ in corrupted_entries()}
    for field in ("group", "name", "fullname", "extra_info", "extra_info.convbench.timing.train_s",
                  "extra_info.convbench.case.lr", "extra_info.convbench.curves.train.loss.0",
                  "extra_info.convbench.telemetry.devices.0.cpu_percent_mean",
                  "extra_info.convbench.final.test_accuracy", "extra_info.convbench_throughput.round_s.mean",
                  "extra_info.convbench.error"):
        assert field in fields


#: Fields whose corruptions must be left out (all but those listed as valid values for them).
VALID = {"extra_info.convbench.timing.train_s": {"nan", "inf", "-inf", "negative", "zero"},
         "extra_info.convbench.case.model": {"text", "hostile-text", "mathtext"},
         "extra_info.convbench.curves.train.loss.0": {"null", "nan", "inf", "-inf", "negative", "zero"},
         "extra_info.convbench.final.test_accuracy": {"deleted", "null", "nan", "inf", "-inf", "negative", "zero"},
         "group": {"deleted", "null", "text", "hostile-text", "mathtext"}}


def fuzz_report(tmp_path: Path, corruption: str, figures: bool) -> None:
    """One file holds every field of a good entry broken one way (one field per entry); beside it, a good file.

    The report must not raise; each entry it leaves out is one line naming its file, entry and field; the
    entries it keeps are reported; the good file is reported in full."""
    broken = [(name.partition("=")[0], data) for name, data in corrupted_entries() if name.endswith(f"={corruption}")]
    for index, (_, data) in enumerate(broken):  # one test name per entry, so none supersedes another
        if isinstance(data.get("fullname"), str):
            data["fullname"] = f"suite.py::test_{index}"
    bad = write(tmp_path / "bad.json", document(*(data for _, data in broken)))
    out = tmp_path / "report"
    report = make_report([bad, good_file(tmp_path)], out, figures=figures,
                         figure_options=FigureOptions(kinds=FIGURE_KINDS, formats=("svg",)))
    assert_good_reported(report.text, out)
    left_out = {}
    if report.errors and "no convbench results among" in report.errors[0]:  # every entry left out
        (line,) = report.errors
        assert f"({len(broken)} left out, the first: " in line and "field '" in line, line
        return
    for line in report.errors:
        assert "\n" not in line and line.startswith(f"{bad}: "), line
        found = re.search(r"\bentry (\d+)\)?: (.+); left out$", line)
        assert found, line
        assert int(found.group(1)) not in left_out, f"entry {found.group(1)} reported twice"
        left_out[int(found.group(1))] = found.group(2)
        assert "field '" in found.group(2) or "expected an object" in found.group(2), line
    for index, (field, _) in enumerate(broken):
        if field in VALID:
            assert (index in left_out) == (corruption not in VALID[field]), (field, left_out.get(index))
    kept = len(broken) - len(left_out)
    assert report.cases >= 1 + min(kept, 1)


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_every_field_broken_every_way_never_crashes_the_tables(tmp_path: Path, corruption: str) -> None:
    fuzz_report(tmp_path, corruption, figures=False)


@pytest.mark.slow  # draws every figure kind over some 100 runs per corruption: about a minute in all
@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_every_field_broken_every_way_never_crashes_the_figures(tmp_path: Path, corruption: str) -> None:
    fuzz_report(tmp_path, corruption, figures=True)


def test_a_wrong_type_is_one_line_naming_benchmark_and_field(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    result = run(label="bad-case")
    result["timing"]["train_s"] = "fast"
    bad = write(tmp_path / "bad.json", document(entry(run(label="fine", lr=0.2)), entry(result)))
    code = main(["report", str(bad), str(good_file(tmp_path)), "-o", str(tmp_path / "out"), "--no-figures"])
    captured = capsys.readouterr()
    assert code == 1
    errors = [line for line in captured.err.splitlines() if "error" in line]
    assert errors == [f"convbench: error: {bad}: benchmark suite.py::test_x[bad-case-seed0] (entry 1): field "
                      f"'timing.train_s': expected a number, got 'fast'; left out"]
    assert "## good (1 case)" in captured.out
    assert [row["case"] for row in read_csv(tmp_path / "out" / "tables" / "g.csv")] == ["fine"]  # its neighbour


def results_line(data: dict[str, Any], machine: Any = None) -> str:
    """A results-file line: the entry with the record schema and where it ran."""
    return json.dumps({**data, "schema": RECORD_SCHEMA, "machine": machine or {"node": "host"},
                       "commit": {"id": "0123456789abcdef", "dirty": False}}) + "\n"


@pytest.mark.parametrize(("bad_entry", "message"), [
    (lambda e: e["extra_info"]["convbench"]["timing"].update(train_s=[1]),
     "field 'timing.train_s': expected a number, got [1]"),
    (lambda e: e.update(machine=["host"]), "field 'machine': expected an object, got ['host']"),
], ids=["timing", "machine"])
def test_a_bad_line_of_a_results_file_is_left_out_alone(tmp_path: Path, bad_entry, message: str) -> None:
    data = entry(run(label="bad-case"))
    line = json.loads(results_line(data))
    bad_entry(line)
    path = write(tmp_path / "results.jsonl", results_line(entry(run(label="fine", lr=0.2))) + json.dumps(line) + "\n")
    report = make_report([path, good_file(tmp_path)], tmp_path / "out", figures=False)
    assert report.errors == [f"{path}: benchmark suite.py::test_x[bad-case-seed0] (line 2): {message}; left out"]
    assert [row["case"] for row in read_csv(tmp_path / "out" / "tables" / "g.csv")] == ["fine"]
    assert_good_reported(report.text, tmp_path / "out")


@pytest.mark.parametrize(("change", "field"), [
    (lambda e: e.update(group=["g"]), "'group'"),
    (lambda e: e.update(name=5, fullname=None), "'name'"),
    (lambda e: e.update(extra_info=["convbench"]), "'extra_info'"),
    (lambda e: e["extra_info"]["convbench"]["case"].update(lr="0.1"), "'case.lr'"),
    (lambda e: e["extra_info"]["convbench"]["case"].pop("model"), "'case.model'"),
    (lambda e: e["extra_info"]["convbench"]["curves"]["train"]["loss"].append(1.0), "'curves.train.loss'"),
    (lambda e: e["extra_info"]["convbench"]["curves"]["params"]["W"].__setitem__(0, "w"), "'curves.params.W[0]'"),
    (lambda e: e["extra_info"]["convbench"]["telemetry"]["devices"][0].update(cpu_percent_mean="busy"),
     "'telemetry.devices[0].cpu_percent_mean'"),
    (lambda e: e["extra_info"]["convbench"].update(outcome=["passed"]), "'outcome'"),
    (lambda e: e["extra_info"]["convbench"].update(steps=10**30), "'steps'"),
    (lambda e: e["extra_info"]["convbench"]["case"].update(model_kwargs={"x": nested(100)}), "'case.model_kwargs.x"),
], ids=["group", "name", "extra_info", "lr", "model", "loss-length", "params", "telemetry", "outcome", "huge",
        "deep"])
def test_envelope_and_fields_the_contract_leaves_open_are_checked(tmp_path: Path, change, field: str) -> None:
    data = entry(run(label="bad-case"))
    change(data)
    bad = write(tmp_path / "bad.json", document(entry(run(label="fine", lr=0.2)), data))
    report = make_report([bad, good_file(tmp_path)], tmp_path / "out", figures=False)
    (line,) = report.errors
    assert f"field {field}" in line and "entry 1" in line, line
    assert_good_reported(report.text, tmp_path / "out")


def test_malformed_machine_and_commit_info_are_warnings_and_the_runs_still_count(tmp_path: Path) -> None:
    data = document(entry(run(label="fine")))
    data["machine_info"], data["commit_info"] = ["host"], {"id": 5}
    bad = write(tmp_path / "bad.json", data)
    report = make_report([bad, good_file(tmp_path)], tmp_path / "out", figures=False)
    assert report.errors == []
    assert [w for w in report.warnings if str(bad) in w] == [
        f"{bad}: field 'machine_info': expected an object, got ['host']; its runs are reported without it",
        f"{bad}: field 'commit_info.id': expected a string or null, got 5; its runs are reported without it"]
    assert report.cases == 2


@pytest.mark.parametrize(("name", "text"), [
    ("deep.json", '{"benchmarks": ' + "[" * 100_000 + "]" * 100_000 + "}"),
    ("huge.json", '{"benchmarks": [' + "9" * 5000 + "]}"),
    ("deep.jsonl", "[" * 100_000 + "]" * 100_000 + "\n"),
], ids=["deep-json", "long-integer", "deep-jsonl"])
def test_json_python_cannot_read_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str,
                                             text: str) -> None:
    bad = write(tmp_path / name, text)
    code = main(["report", str(bad), str(good_file(tmp_path)), "-o", str(tmp_path / "out"), "--no-figures"])
    captured = capsys.readouterr()
    assert code == 1
    (line,) = [line for line in captured.err.splitlines() if str(bad) in line]
    assert line.startswith(f"convbench: error: {bad}: ")
    assert "## good (1 case)" in captured.out


@pytest.mark.parametrize("field", ["group", "timing", "case"])
def test_nesting_python_can_parse_but_not_print_is_one_line(tmp_path: Path, field: str) -> None:
    data = entry(run(label="deep"))
    where = data if field == "group" else data["extra_info"]["convbench"]
    where[field] = nested(600)  # json reads it; a plain repr of it in a message would raise RecursionError
    bad = write(tmp_path / "bad.json", document(entry(run(label="fine", lr=0.2)), data))
    report = make_report([bad, good_file(tmp_path)], tmp_path / "out", figures=False)
    (line,) = report.errors
    assert f"field '{field}" in line and "entry 1" in line and len(line) < len(str(bad)) + 200, line
    assert_good_reported(report.text, tmp_path / "out")


def test_a_file_of_bad_entries_only_says_why(tmp_path: Path) -> None:
    result = run()
    result["final"]["test_accuracy"] = "high"
    bad = write(tmp_path / "bad.json", document(entry(result), entry(copy.deepcopy(result), test="other")))
    report = make_report([bad, good_file(tmp_path)], tmp_path / "out", figures=False)
    (line,) = report.errors
    assert line.startswith(f"{bad}: no convbench results among 2 entries (2 left out, the first: benchmark ")
    assert "field 'final.test_accuracy': expected a number or null, got 'high'" in line
    assert_good_reported(report.text, tmp_path / "out")


# ------------------------------------------------------------------------------ non-finite numbers
def test_non_finite_numbers_are_shown_as_such(tmp_path: Path) -> None:
    result = run(label="odd")
    result["samples_per_s"] = math.inf
    result["final"]["test_accuracy"] = math.nan
    result["final"]["train_loss"] = None  # not recorded: shown as missing, unlike the NaN
    bad = write(tmp_path / "odd.json", json.dumps(document(entry(result))))  # json writes NaN and Infinity
    out = tmp_path / "out"
    report = make_report([bad, good_file(tmp_path)], out, figure_options=FigureOptions(kinds=FIGURE_KINDS))
    assert report.errors == []
    (row,) = read_csv(out / "tables" / "g.csv")
    assert (row["samples_per_s"], row["final_test_accuracy"], row["final_train_loss"]) == ("inf", "nan", "")
    lines = report.text.splitlines()
    (at,) = [i for i, line in enumerate(lines) if line.startswith("| odd ")]
    cells = [cell.strip() for cell in lines[at].strip("|").split("|")]
    header = next(line for line in reversed(lines[:at]) if line.startswith("| case "))  # its own table's
    columns = [cell.strip() for cell in header.strip("|").split("|")]
    values = dict(zip(columns, cells, strict=True))
    assert values["test acc"] == "nan"  # samples/s is in the written tables
    assert "train loss" not in values  # no run of the group recorded it: the column is left out
    html_cells = re.findall(r"<td>([^<]*)</td>", (out / "tables" / "g.html").read_text(encoding="utf-8"))
    assert "inf" in html_cells and "nan" in html_cells and "-" in html_cells


def test_a_nan_seed_makes_the_mean_nan_instead_of_vanishing(tmp_path: Path) -> None:
    seeds = [run(seed=seed, accuracy=0.8 + seed / 10) for seed in range(3)]
    seeds[1]["final"]["test_accuracy"] = math.nan
    path = write(tmp_path / "seeds.json", json.dumps(document(*map(entry, seeds))))
    report = make_report([path], tmp_path / "out", figures=False)
    (row,) = read_csv(tmp_path / "out" / "tables" / "g.csv")
    assert row["seeds"] == "3" and row["final_test_accuracy"] == "nan"
    assert float(row["best_test_accuracy"]) == pytest.approx((0.8 + 0.9 + 1.0) / 3)
    assert report.errors == []


def test_non_finite_numbers_never_crash_a_figure(tmp_path: Path) -> None:
    """Every figure kind over runs whose numbers are NaN or infinite in every place a figure reads."""
    runs = [run(lr, batch_size=size, world_size=world, train_s=2.0 / world)
            for lr in (0.1, 0.2) for size in (50, 100) for world in (1, 2)]
    odd = runs[0]
    odd["final"]["test_accuracy"], odd["final"]["test_loss"] = math.nan, math.inf
    odd["curves"]["train"]["loss"][1] = math.inf
    odd["curves"]["eval"]["test_accuracy"][2] = math.nan
    odd["curves"]["eval"]["time_s"][1] = math.inf
    odd["curves"]["params"]["W"][1] = -math.inf
    odd["target"]["time_s"] = math.inf
    odd["timing"]["train_s"] = math.nan
    odd["telemetry"]["timeline"]["cpu_percent"][0] = math.nan
    odd["telemetry"]["devices"][0]["cpu_percent_mean"] = math.inf
    runs[1]["timing"]["train_s"] = math.inf
    path = write(tmp_path / "odd.json", json.dumps(document(*map(entry, runs))))
    for x, kinds in (("step", FIGURE_KINDS), ("epoch", ("loss", "accuracy")), ("time", ("loss", "accuracy"))):
        report = make_report([path], tmp_path / x, figure_options=FigureOptions(kinds=kinds, x=x))
        assert report.errors == []
        drawn = {p.name for p in report.written if p.parent.name == "figures"}
        assert {"g-loss.png", "g-accuracy.png"} <= drawn
    assert {"g-lr.png", "g-params.png", "g-target.png", "g-utilisation.png", "scaling.png"} <= {
        p.name for p in (tmp_path / "step" / "figures").iterdir()}


# -------------------------------------------------------------------------------------- names
@pytest.mark.parametrize("name", ["a b", "a/b", "../../etc/passwd", ".hidden", "..", "x" * 300, "学习率", "café",
                                  "con", "", "-rf", HOSTILE])
def test_safe_name_is_safe_and_bounded(name: str) -> None:
    stem = safe_name(name)
    assert re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", stem), stem
    assert not stem.startswith((".", "-")) and len(stem) <= MAX_LENGTH
    assert stem.split(".")[0].upper() not in ("CON", "NUL", "PRN", "AUX")


def test_long_names_that_differ_past_the_cut_stay_apart() -> None:
    first, second = "x" * 300 + "1", "x" * 300 + "2"
    assert safe_name(first) != safe_name(second)
    assert safe_name("学习率") != safe_name("損失")
    assert safe_name("optimizer=sgd") == "optimizer_sgd"  # plain names keep their readable form


def test_names_are_unique_per_report_and_stable_per_group() -> None:
    names = Names()
    assert [names.group(g) for g in ("a b", "a/b", "A_B", "a b")] == ["a_b", "a_b-2", "A_B-3", "a_b"]
    assert names.file("tables", names.group("a b")) == "a_b"
    assert names.file("tables", "a_b") == "a_b-2"  # the folder already has one
    assert names.file("figures", names.group("a/b"), "loss") == "a_b-2-loss"


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.links += [value for key, value in attrs if key in ("href", "src") and value]


@pytest.mark.filterwarnings("ignore:Glyph")  # the plotting font lacks CJK glyphs; the names are the point
@pytest.mark.parametrize("groups", [("a b", "a/b"), ("x" * 300, "x" * 300 + "y"), (".hidden", "hidden"),
                                    ("学习率", "損失"), ("scaling", "all_cases")],
                         ids=["space-slash", "300-chars", "leading-dot", "unicode", "reserved"])
def test_every_group_gets_its_own_files_and_index_links_each_once(tmp_path: Path, groups: tuple[str, str]) -> None:
    runs = [entry(run(0.1 * (i + 1), world_size=w, train_s=2.0 / w), group=group)
            for i, group in enumerate(groups) for w in (1, 2)]
    path = write(tmp_path / "groups.json", document(*runs))
    out = tmp_path / "out"
    report = make_report([path], out, figure_options=FigureOptions(kinds=("loss", "scaling")))
    assert report.errors == []
    written = [p.relative_to(out).as_posix() for p in report.written]
    assert len(written) == len(set(written))  # no file written twice
    assert all(len(Path(p).name) < 120 and not Path(p).name.startswith(".") for p in written)
    tables = {p for p in written if p.startswith("tables/") and p.endswith(".csv")}
    assert len(tables) == 2 + 2  # one per group, all_cases and scaling
    figures = [p for p in written if p.startswith("figures/") and p.endswith("-loss.png")]
    assert len(figures) == 2
    parser = Links()
    parser.feed((out / "index.html").read_text(encoding="utf-8"))
    for figure in figures:
        assert parser.links.count(figure) == 1  # its link under the interactive curves that stand in for it
    for file in written:
        if file != "index.html":
            assert file in parser.links, file


# ----------------------------------------------------------------------------------- compare
def compare_paths(tmp_path: Path, base: list[dict], new: list[dict]) -> tuple[Path, Path]:
    return (write(tmp_path / "base.json", json.dumps(document(*map(entry, base)))),
            write(tmp_path / "new.json", json.dumps(document(*map(entry, new)))))


@pytest.mark.parametrize(("value", "reason"), [(math.nan, "final_test_accuracy nan in NEW"),
                                               (None, "final_test_accuracy missing in NEW"),
                                               (math.inf, "final_test_accuracy inf in NEW")])
def test_a_headline_metric_nan_or_missing_in_new_is_a_regression(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                  value: float | None, reason: str) -> None:
    new = run()
    new["final"]["test_accuracy"] = value
    base_path, new_path = compare_paths(tmp_path, [run()], [new])
    comparison = compare_files(base_path, new_path)
    (change,) = comparison.changes
    assert change.regressed and reason in change.problems
    assert main(["compare", str(base_path), str(new_path)]) == 1
    assert f"REGRESSION: {reason}" in capsys.readouterr().out


def test_one_seed_of_several_without_its_metric_is_a_regression(tmp_path: Path) -> None:
    new = [run(seed=seed) for seed in range(3)]
    new[2]["final"]["test_accuracy"] = None
    comparison = compare_files(*compare_paths(tmp_path, [run(seed=seed) for seed in range(3)], new))
    (change,) = comparison.changes
    assert "final_test_accuracy missing in NEW (1 of 3 runs)" in change.problems


def test_a_non_finite_train_time_in_new_is_a_regression(tmp_path: Path) -> None:
    new = run()
    new["timing"]["train_s"] = math.inf
    (change,) = compare_files(*compare_paths(tmp_path, [run()], [new])).changes
    assert "train time inf in NEW" in change.problems


def test_infinities_of_both_signs_do_not_crash_compare(tmp_path: Path) -> None:
    base = [run(seed=seed) for seed in range(2)]
    base[0]["timing"]["train_s"], base[1]["timing"]["train_s"] = math.inf, -math.inf
    base[0]["final"]["test_accuracy"], base[1]["final"]["test_accuracy"] = math.inf, -math.inf
    comparison = compare_files(*compare_paths(tmp_path, base, [run(seed=seed) for seed in range(2)]))
    (change,) = comparison.changes
    assert not change.regressed  # nothing finite in BASE to compare against: noted, not failed
    assert any("not compared" in note for note in change.notes)


def test_an_entry_left_out_of_new_is_an_error_not_a_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    new = run()
    new["final"] = "lost"
    base_path, new_path = compare_paths(tmp_path, [run(), run(0.2)], [new, run(0.2)])
    assert main(["compare", str(base_path), str(new_path)]) == 2
    captured = capsys.readouterr()
    (line,) = [line for line in captured.err.splitlines() if "error" in line]
    assert line.startswith(f"convbench: error: {new_path}: benchmark ") and "field 'final'" in line
    assert "1 case compared" in captured.out  # the rest is still compared


# ----------------------------------------------------------------------------------- scaling
def test_a_diverged_run_gets_no_speedup_and_is_flagged() -> None:
    def record(world_size: int, train_s: float, diverged: bool = False) -> dict[str, Any]:
        return {**run(world_size=world_size, train_s=train_s, diverged=diverged), "group": "g"}

    rows = {r["world_size"]: r for r in scaling_rows([record(1, 8.0), record(2, 5.0), record(4, 1.0, True)])}
    assert [rows[size]["diverged"] for size in (1, 2, 4)] == [False, False, True]
    assert rows[2]["speedup"] == pytest.approx(1.6)
    assert rows[4]["speedup"] is None and rows[4]["efficiency"] is None
    rows = scaling_rows([record(1, 8.0, True), record(2, 5.0)])  # the baseline itself diverged
    assert [(r["diverged"], r["speedup"]) for r in rows] == [(True, None), (False, None)]


# ---------------------------------------------------------------------------------- markdown
def markdown_rows(text: str) -> list[list[str]]:
    """The cells of each Markdown table row, split at unescaped bars."""
    return [[cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            for line in text.splitlines() if line.startswith("|")]


def test_bars_and_newlines_in_labels_do_not_break_markdown(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    runs = [entry(run(lr, label=f"{HOSTILE} {lr} {size}", batch_size=size), group=HOSTILE)
            for lr in (0.1, 0.2) for size in (50, 100)]
    path = write(tmp_path / "hostile.json", document(*runs))
    out = tmp_path / "out"
    assert main(["report", str(path), "-o", str(out), "--no-figures", "--pivot", "lr,batch_size"]) == 0
    printed = capsys.readouterr().out
    escaped = "a\\|b c \\| d"
    assert f"## {escaped} (4 cases)" in printed.splitlines()
    assert f"## pivot {escaped}: mean final_test_accuracy by lr (rows) and batch_size (columns)" in printed
    written = [(out / "tables" / name).read_text(encoding="utf-8") for name in
               ("a_b_c_d.md", "pivot-a_b_c_d.md")]
    for text in (printed, *written):
        tables = markdown_rows(text)
        widths = {len(row) for row in tables}
        assert len(widths) <= 2, widths  # every table's rows as wide as its header (the pivot's, its own)
        assert all(row[0] != "" for row in tables)
    assert f"| {escaped} 0.1 50 " in printed
    assert written[0].splitlines()[0] == f"# {escaped}"
    assert main(["compare", str(path), str(path)]) == 0
    rows = markdown_rows(capsys.readouterr().out)
    assert len({len(row) for row in rows}) == 1 and len(rows) == 2 + 4  # header, rule and one row per case
    assert rows[2][0].startswith("suite.py::test_x[a\\|b c \\| d 0.1 50")


# ------------------------------------------------------------------------------ labels in figures
def test_a_sweep_over_a_list_valued_field_draws_its_heatmap(tmp_path: Path) -> None:
    runs = []
    for lr in (0.1, 0.2):
        for augmentations in ([], [["rotation", {"degrees": 10}]]):
            result = run(lr, accuracy=0.5 + lr + len(augmentations) / 10)
            result["case"]["augmentations"] = augmentations
            runs.append(entry(result, test=f"test_x[{lr}-{len(augmentations)}]"))
    path = write(tmp_path / "sweep.json", document(*runs))
    report = make_report([path], tmp_path / "out", figure_options=FigureOptions(kinds=("heatmap", "lr")))
    assert report.errors == []
    assert {p.name for p in report.written if p.parent.name == "figures"} == {"g-heatmap.png", "g-lr.png"}


def test_dollar_signs_in_labels_are_text_not_formulas(tmp_path: Path) -> None:
    runs = [entry(run(lr, label=f"$\\frac{{{lr}$"), group="cost in $\\frac{$") for lr in (0.1, 0.2)]
    path = write(tmp_path / "dollars.json", document(*runs))
    report = make_report([path], tmp_path / "out", figure_options=FigureOptions(kinds=FIGURE_KINDS))
    assert report.errors == []
    assert "cost_in_frac-loss.png" in {p.name for p in report.written}
