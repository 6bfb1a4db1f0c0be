"""`convbench compare BASE NEW`, on results of a real (tiny) benchmark session.

The inputs are checked in (``tests/data``, made by ``tests/data/make_fixtures.py``): ``compare.json`` and
its results file ``compare.jsonl`` hold two single-seed softmax cases, one case with three seeds and one
that diverges (the suite ``tests/data/suites/compare.py``). Regressions are made deterministically by
editing copies of that session's JSON (a train time scaled, an accuracy lowered, a run marked diverged),
and every expected number is computed here from the edited JSON.
"""

from __future__ import annotations

import copy
import json
import math
import re
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from quiet_fixtures import quiet_copy

from convbench.cli import main

DATA = Path(__file__).parent / "data"

Benches = dict[str, dict]  # test name -> pytest-benchmark entry


@dataclass
class Study:
    json_path: Path
    jsonl_path: Path
    document: dict

    def benches(self) -> Benches:
        return {b["fullname"]: b for b in self.document["benchmarks"]}

    def test(self, function: str, lr: float | None = None) -> str:
        """The (first) test name of a test function, optionally the one with that learning rate."""
        return next(name for name, b in self.benches().items()
                    if name.split("::")[1].startswith(f"{function}[")
                    and (lr is None or b["extra_info"]["convbench"]["case"]["lr"] == lr))

    def seeded(self) -> list[str]:
        return [name for name in self.benches() if "::test_seeded[" in name]


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Study:
    folder = tmp_path_factory.mktemp("compare-study")  # as if made on a quiet machine: see quiet_fixtures
    json_path, jsonl_path = quiet_copy(DATA / "compare.json", folder), quiet_copy(DATA / "compare.jsonl", folder)
    document = json.loads(json_path.read_text(encoding="utf-8"))
    found = Study(json_path, jsonl_path, document)
    results = {name: b["extra_info"]["convbench"] for name, b in found.benches().items()}
    assert len(results) == 6 and len(found.seeded()) == 3
    for name, result in results.items():  # every case converged but the diverging one
        assert result["diverged"] == ("test_diverging" in name), name
        assert result["target"]["reached"] == ("test_diverging" not in name), name
    return found


def result(benches: Benches, name: str) -> dict:
    return benches[name]["extra_info"]["convbench"]


def variant(study: Study, folder: Path, name: str, edit: Callable[[Benches], None]) -> Path:
    """A copy of the session's JSON, edited."""
    document = copy.deepcopy(study.document)
    edit({b["fullname"]: b for b in document["benchmarks"]})
    path = folder / f"{name}.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def run_compare(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["compare", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def case_name(test: str) -> str:
    """A test name without its seed token: the seeds of a case are compared together."""
    return re.sub(r"-seed\d+(?=\])", "", test)


def compared(out: str) -> dict[str, dict[str, str]]:
    """Case name -> its row in the printed comparison tables (convergence and throughput cases)."""
    rows, header = {}, None
    for line in out.splitlines():
        if not line.startswith("|"):
            header = None  # a line between tables: the next table has its own header
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
        elif not all(set(cell) <= set(":-") for cell in cells):
            row = dict(zip(header, cells, strict=True))
            rows[row["case"]] = row
    return rows


def mean_of(benches: Benches, names: list[str], read: Callable[[dict], float]) -> float:
    return statistics.fmean(read(result(benches, name)) for name in names)


def train_s(r: dict) -> float:
    return r["timing"]["train_s"]


def accuracy(r: dict) -> float:
    return r["final"]["test_accuracy"]


def pooled_se(a: list[float], b: list[float]) -> float:
    """sqrt(pooled variance x (1/n_a + 1/n_b)), from the textbook formula."""
    pooled = ((len(a) - 1) * statistics.variance(a) + (len(b) - 1) * statistics.variance(b)) / (len(a) + len(b) - 2)
    return math.sqrt(pooled * (1 / len(a) + 1 / len(b)))


def regressions(out: str) -> dict[str, str]:
    return {name: row["status"] for name, row in compared(out).items() if row["status"].startswith("REGRESSION")}


# ---------------------------------------------------------------------------------- no change
def test_identical_files_have_no_regressions(study: Study, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    copied = variant(study, tmp_path, "same", lambda benches: None)
    code, out, err = run_compare(capsys, study.json_path, copied)
    assert code == 0, err
    rows = compared(out)
    names = {case_name(name) for name in study.benches()}
    assert set(rows) == names
    benches = study.benches()
    for name, row in rows.items():
        members = [test for test in benches if case_name(test) == name]
        assert row["seeds"] == str(len(members))
        assert row["time"] == "+0.0%"
        assert row["change"] == "+0"
        assert row["status"] == "ok"
        assert row["train_s base"] == row["train_s new"] == format(mean_of(benches, members, train_s), ".4g")
        assert row["final_test_accuracy base"] == format(mean_of(benches, members, accuracy), ".4g")
        converged = "no" if "test_diverging" in name else "yes"
        n = len(members)
        assert row["converged"] == (f"{converged} -> {converged}" if n == 1 else f"{n}/{n} -> {n}/{n}")
    assert f"{len(names)} cases compared: no regressions" in out


def test_benchmark_json_against_its_results_file(study: Study, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_compare(capsys, study.json_path, study.jsonl_path)
    assert code == 0, err
    rows = compared(out)
    assert set(rows) == {case_name(name) for name in study.benches()}
    assert {row["time"] for row in rows.values()} == {"+0.0%"}


def test_help_explains_the_seed_noise_rule(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["compare", "--help"])
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "2 x the pooled standard error" in text
    assert "--time-threshold" in text and "--metric-threshold" in text


# ---------------------------------------------------------------------------------- train time
def scale_time(name: str, factor: float) -> Callable[[Benches], None]:
    def edit(benches: Benches) -> None:
        result(benches, name)["timing"]["train_s"] *= factor
    return edit


#: Judge one run a side by the thresholds alone, however short: the session's runs take milliseconds.
SINGLE_RUNS = ("--min-time-samples", "1", "--min-time-diff", "0")


def test_single_run_time_change_is_not_enough_data(study: Study, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    slow = study.test("test_single", lr=0.1)
    new = variant(study, tmp_path, "slower", scale_time(slow, 1.5))
    code, out, err = run_compare(capsys, study.json_path, new, "--min-time-diff", "0")
    assert code == 0, err
    row = compared(out)[slow]
    assert row["time"] == "+50.0%"
    assert row["status"] == "ok (time +50.0% not judged: not enough data (1 run each; need 3))"
    single = len([name for name in study.benches() if "::test_seeded[" not in name])
    assert f"times not judged for {single} of " in out


def test_slower_case_is_a_regression(study: Study, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    slow = study.test("test_single", lr=0.1)
    new = variant(study, tmp_path, "slower", scale_time(slow, 1.5))
    code, out, _ = run_compare(capsys, study.json_path, new, *SINGLE_RUNS)
    assert code == 1
    (base_t,), (new_t,) = seed_values(study.json_path, [slow], train_s), seed_values(new, [slow], train_s)
    assert new_t > base_t
    rows = compared(out)
    assert rows[slow]["time"] == f"{(new_t - base_t) / base_t:+.1%}"
    assert list(regressions(out)) == [slow]
    assert "slower" in rows[slow]["status"]
    assert "1 regression(s)" in out


@pytest.mark.parametrize(("factor", "threshold", "code"), [(1.05, None, 0), (1.05, "0.04", 1), (1.05, "0.06", 0),
                                                           (1.3, "0.25", 1), (1.3, "0.35", 0), (0.5, "0", 0)])
def test_time_threshold(study: Study, tmp_path: Path, capsys: pytest.CaptureFixture[str], factor: float,
                        threshold: str | None, code: int) -> None:
    slow = study.test("test_single", lr=0.5)
    new = variant(study, tmp_path, "slower", scale_time(slow, factor))
    args = [] if threshold is None else ["--time-threshold", threshold]
    got, out, _ = run_compare(capsys, study.json_path, new, *args, *SINGLE_RUNS)
    change = factor - 1  # the edit scales one run's time: the relative change is the factor's excess
    assert (change > (0.10 if threshold is None else float(threshold))) == bool(code)  # the case is what it says
    assert got == code
    assert compared(out)[slow]["time"] == f"{change:+.1%}"
    assert list(regressions(out)) == ([slow] if code else [])


# ------------------------------------------------------------------------------------- metric
def shift_accuracy(names: list[str], delta: float) -> Callable[[Benches], None]:
    def edit(benches: Benches) -> None:
        for name in names:
            result(benches, name)["final"]["test_accuracy"] += delta
    return edit


@pytest.mark.parametrize(("delta", "threshold", "code"), [(-0.02, None, 1), (-0.005, None, 0), (-0.02, "0.03", 0),
                                                          (-0.05, "0.03", 1), (0.05, None, 0)])
def test_metric_drop(study: Study, tmp_path: Path, capsys: pytest.CaptureFixture[str], delta: float,
                     threshold: str | None, code: int) -> None:
    name = study.test("test_single", lr=0.1)
    new = variant(study, tmp_path, "worse", shift_accuracy([name], delta))
    args = [] if threshold is None else ["--metric-threshold", threshold]
    got, out, _ = run_compare(capsys, study.json_path, new, *args)
    base = accuracy(result(study.benches(), name))
    changed = base + delta
    assert (base - changed > (0.01 if threshold is None else float(threshold))) == bool(code)
    assert got == code
    row = compared(out)[name]
    assert row["change"] == f"{changed - base:+.4g}"
    assert row["final_test_accuracy new"] == format(changed, ".4g")
    assert list(regressions(out)) == ([name] if code else [])


def test_loss_is_compared_where_there_is_no_accuracy(study: Study, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    name = study.test("test_single", lr=0.5)

    def no_accuracy(benches: Benches) -> None:
        for bench in benches.values():
            bench["extra_info"]["convbench"]["final"]["test_accuracy"] = None

    def higher_loss(benches: Benches) -> None:
        no_accuracy(benches)
        result(benches, name)["final"]["test_loss"] += 0.05

    base = variant(study, tmp_path, "base", no_accuracy)
    new = variant(study, tmp_path, "new", higher_loss)
    code, out, _ = run_compare(capsys, base, new)
    assert code == 1
    row = compared(out)[name]
    before = result(study.benches(), name)["final"]["test_loss"]
    assert row["final_test_loss base"] == format(before, ".4g")
    assert row["change"] == f"{(before + 0.05) - before:+.4g}"
    assert list(regressions(out)) == [name]
    code, out, _ = run_compare(capsys, new, base)  # a lower loss is an improvement
    assert code == 0


# ------------------------------------------------------------------------------- convergence
def _diverged(r: dict) -> None:
    r["diverged"] = True


def _target_missed(r: dict) -> None:
    r["target"]["reached"] = False


def _failed(r: dict) -> None:
    r["outcome"] = "failed"


@pytest.mark.parametrize(("edit", "reason"), [(_diverged, "diverged"), (_target_missed, "target not reached"),
                                              (_failed, "test failed")], ids=["diverged", "target", "failed"])
def test_case_that_stopped_converging_is_a_regression(study: Study, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str], edit, reason: str) -> None:
    name = study.test("test_single", lr=0.5)
    new = variant(study, tmp_path, "broken", lambda benches: edit(result(benches, name)))
    code, out, _ = run_compare(capsys, study.json_path, new)
    assert code == 1
    row = compared(out)[name]
    assert row["converged"] == "yes -> no"
    assert f"stopped converging ({reason})" in row["status"]
    assert list(regressions(out)) == [name]


def test_case_that_did_not_converge_in_base_is_no_regression(study: Study, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    name = study.test("test_single", lr=0.5)
    base = variant(study, tmp_path, "base", lambda benches: _diverged(result(benches, name)))
    code, out, _ = run_compare(capsys, base, study.json_path)
    assert code == 0
    assert compared(out)[name]["converged"] == "no -> yes"
    assert compared(out)[study.test("test_diverging")]["converged"] == "no -> no"


def test_one_seed_diverging_is_a_regression(study: Study, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seeds = study.seeded()
    new = variant(study, tmp_path, "one-seed", lambda benches: _diverged(result(benches, seeds[1])))
    code, out, _ = run_compare(capsys, study.json_path, new)
    assert code == 1
    row = compared(out)[case_name(seeds[0])]
    assert row["converged"] == f"{len(seeds)}/{len(seeds)} -> {len(seeds) - 1}/{len(seeds)}"
    assert "stopped converging (diverged)" in row["status"]


def failed_before_training() -> dict:
    """What the results file holds for a case that failed before training (a real one: no such optimizer)."""
    lines = (DATA / "failures.jsonl").read_text(encoding="utf-8").splitlines()
    (failed,) = [e for e in (json.loads(line)["extra_info"]["convbench"] for line in lines) if "schema" not in e]
    return failed


def test_case_that_failed_before_training_in_a_results_file(study: Study, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    name = study.test("test_single", lr=0.1)
    lines = study.jsonl_path.read_text(encoding="utf-8").splitlines()
    entries = [json.loads(line) for line in lines]
    (entry,) = [e for e in entries if e["fullname"] == name]
    measured, failed = entry["extra_info"]["convbench"], failed_before_training()
    # that record, for this case: the same fields, the outcome and error of the real failure
    entry["extra_info"]["convbench"] = {**failed, "case_id": measured["case_id"], "scale": measured["scale"],
                                        "group": measured["group"]}
    path = tmp_path / "crashed.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in entries), encoding="utf-8")
    code, out, err = run_compare(capsys, study.jsonl_path, path)
    assert code == 1
    row = compared(out)[name]
    assert "stopped converging (failed before training)" in row["status"]
    assert row["train_s new"] == "-" and row["time"] == "-"
    assert list(regressions(out)) == [name]
    assert failed["error"] in err  # the loader's warning about it


# ------------------------------------------------------------------------------------- seeds
def spread(names: list[str], read: Callable[[dict], float], write: Callable[[dict, float], None], width: float,
           shift: Callable[[float], float] = lambda v: v) -> Callable[[Benches], None]:
    """Set the seeds' values to mean x (1 + width x (i - 1)) for seeds i = 0, 1, 2, then apply ``shift``."""
    def edit(benches: Benches) -> None:
        center = statistics.fmean(read(result(benches, name)) for name in names)
        for i, name in enumerate(names):
            write(result(benches, name), shift(center * (1 + width * (i - 1))))
    return edit


def set_time(r: dict, value: float) -> None:
    r["timing"]["train_s"] = value


def set_accuracy(r: dict, value: float) -> None:
    r["final"]["test_accuracy"] = value


def seed_values(path: Path, names: list[str], read: Callable[[dict], float]) -> list[float]:
    benches = {b["fullname"]: b for b in json.loads(path.read_text())["benchmarks"]}
    return [read(result(benches, name)) for name in names]


def welch_p(before: list[float], after: list[float]) -> float:
    """One-sided p of Welch's t-test that ``after`` is greater, from the textbook formulas (t statistic and
    Welch-Satterthwaite degrees of freedom) and Student's t distribution."""
    from scipy.stats import t as student_t

    va, vb = statistics.variance(before) / len(before), statistics.variance(after) / len(after)
    t = (statistics.fmean(after) - statistics.fmean(before)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(before) - 1) + vb ** 2 / (len(after) - 1))
    return float(student_t.sf(t, df))


@pytest.mark.parametrize(("factor", "code"), [(1.3, 0), (3.0, 1)], ids=["within-noise", "beyond-noise"])
def test_seed_noise_in_train_time(study: Study, tmp_path: Path, capsys: pytest.CaptureFixture[str], factor: float,
                                  code: int) -> None:
    seeds = study.seeded()
    base = variant(study, tmp_path, "base", spread(seeds, train_s, set_time, 0.1))
    new = variant(study, tmp_path, "new", spread(seeds, train_s, set_time, 0.1, lambda v: v * factor))
    before, after = seed_values(base, seeds, train_s), seed_values(new, seeds, train_s)
    change = (statistics.fmean(after) - statistics.fmean(before)) / statistics.fmean(before)
    p = welch_p(before, after)
    assert change > 0.10  # beyond the plain threshold either way: only the noise test tells them apart
    assert (p <= 0.01) == bool(code)
    got, out, _ = run_compare(capsys, base, new, "--min-time-diff", "0")
    assert got == code
    row = compared(out)[case_name(seeds[0])]
    assert row["seeds"] == str(len(seeds))
    assert row["time"] == f"{change:+.1%}"
    if code:
        assert "slower" in row["status"] and f"Welch p = {p:.2g}" in row["status"]
    else:
        assert row["status"] == f"ok (time {change:+.1%} within noise (Welch p = {p:.2g} > 0.01))"


@pytest.mark.parametrize(("drop", "code"), [(0.03, 0), (0.2, 1)], ids=["within-noise", "beyond-noise"])
def test_seed_noise_in_accuracy(study: Study, tmp_path: Path, capsys: pytest.CaptureFixture[str], drop: float,
                                code: int) -> None:
    seeds = study.seeded()
    base = variant(study, tmp_path, "base", spread(seeds, accuracy, set_accuracy, 0.06))
    new = variant(study, tmp_path, "new", spread(seeds, accuracy, set_accuracy, 0.06, lambda v: v - drop))
    before, after = seed_values(base, seeds, accuracy), seed_values(new, seeds, accuracy)
    change = statistics.fmean(after) - statistics.fmean(before)
    noise = 2 * pooled_se(before, after)
    assert -change > 0.01
    assert (-change > noise) == bool(code)
    got, out, _ = run_compare(capsys, base, new)
    assert got == code
    row = compared(out)[case_name(seeds[0])]
    assert row["change"] == f"{change:+.4g}"
    assert row["final_test_accuracy base"] == format(statistics.fmean(before), ".4g")
    assert list(regressions(out)) == ([case_name(seeds[0])] if code else [])


def test_single_seed_gets_no_noise_allowance(study: Study, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    name = study.test("test_single", lr=0.1)
    new = variant(study, tmp_path, "new", shift_accuracy([name], -0.03))  # within noise for the seeded case above
    code, out, _ = run_compare(capsys, study.json_path, new)
    assert code == 1
    assert list(regressions(out)) == [name]


# ------------------------------------------------------------------------------ unmatched cases
def test_cases_in_one_file_only_are_listed_not_failures(study: Study, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    removed, rescaled = study.test("test_single", lr=0.1), study.test("test_single", lr=0.5)

    document = copy.deepcopy(study.document)
    document["benchmarks"] = [b for b in document["benchmarks"] if b["fullname"] != removed]
    result({b["fullname"]: b for b in document["benchmarks"]}, rescaled)["scale"] = "full"
    new = tmp_path / "new.json"
    new.write_text(json.dumps(document), encoding="utf-8")
    code, out, err = run_compare(capsys, study.json_path, new)
    assert code == 0, err
    assert removed not in compared(out) and rescaled not in compared(out)
    only_base = out.split("only in BASE (2, not compared):\n")[1].split("\n\n")[0].splitlines()
    only_new = out.split("only in NEW (1, not compared):\n")[1].split("\n\n")[0].splitlines()
    assert sorted(line.strip() for line in only_base) == sorted([f"{removed} [quick]", f"{rescaled} [quick]"])
    assert [line.strip() for line in only_new] == [f"{rescaled} [full]"]
    compared_count = len({case_name(name) for name in study.benches()}) - 2
    assert f"{compared_count} cases compared: no regressions" in out


# ------------------------------------------------------------------------------------ bad input
def _missing(folder: Path, study: Study) -> tuple[Path, str]:
    return folder / "absent.json", "no such file"


def _malformed(folder: Path, study: Study) -> tuple[Path, str]:
    path = folder / "malformed.json"
    path.write_text(study.json_path.read_text(encoding="utf-8")[:100], encoding="utf-8")
    return path, "malformed JSON"


def _foreign(folder: Path, study: Study) -> tuple[Path, str]:
    path = folder / "foreign.json"
    path.write_text(json.dumps([1, 2]), encoding="utf-8")
    return path, "not a pytest-benchmark JSON file"


@pytest.mark.parametrize("make_bad", [_missing, _malformed, _foreign], ids=["missing", "malformed", "foreign"])
@pytest.mark.parametrize("side", ["BASE", "NEW"])
def test_unreadable_input_is_a_one_line_error(study: Study, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              make_bad, side: str) -> None:
    bad, detail = make_bad(tmp_path, study)
    args = [bad, study.json_path] if side == "BASE" else [study.json_path, bad]
    code, out, err = run_compare(capsys, *args)
    assert code == 2
    assert out == ""
    (line,) = err.splitlines()
    assert line.startswith(f"convbench: error: {bad}: ") and detail in line


def test_both_inputs_unreadable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_compare(capsys, tmp_path / "a.json", tmp_path / "b.json")
    assert code == 2 and out == ""
    assert [line.split(": ")[2] for line in err.splitlines()] == [str(tmp_path / "a.json"), str(tmp_path / "b.json")]


@pytest.mark.parametrize(("option", "value"), [("--time-threshold", "abc"), ("--time-threshold", "-0.1"),
                                               ("--metric-threshold", "nan"), ("--metric-threshold", "x")])
def test_bad_threshold_is_a_one_line_error(study: Study, capsys: pytest.CaptureFixture[str], option: str,
                                           value: str) -> None:
    code, out, err = run_compare(capsys, study.json_path, study.json_path, option, value)
    assert code == 2 and out == ""
    (line,) = err.splitlines()
    assert line.startswith(f"convbench: error: {option} ") and repr(value) in line


def test_runs_of_a_case_from_another_machine_in_the_same_file_are_not_pooled_as_seeds(
        study: Study, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A results file appended to on two machines holds each seeded run twice over: the other machine's
    (here with a much higher accuracy) must not join this machine's as extra seeds of one measurement."""
    lines = [json.loads(line) for line in study.jsonl_path.read_text(encoding="utf-8").splitlines()]
    elsewhere = []
    for line in copy.deepcopy([line for line in lines if "::test_seeded[" in line["fullname"]]):
        line["machine"] = {"node": "other-host"}
        line["extra_info"]["convbench"]["final"]["test_accuracy"] = 1.0
        elsewhere.append(line)
    assert len(elsewhere) == 3
    base = tmp_path / "appended.jsonl"
    base.write_text("".join(json.dumps(line) + "\n" for line in [*elsewhere, *lines]), encoding="utf-8")
    code, out, err = run_compare(capsys, base, study.jsonl_path)
    assert code == 0, out + err  # the same runs on the same machine: nothing changed
    (row,) = [line for line in out.splitlines() if "::test_seeded[" in line]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[2] == "3" and "6 -> 3" not in row  # this machine's three seeds, not six pooled
    assert "3 run(s) of cases also run on another machine or commit in the same file set aside" in err
