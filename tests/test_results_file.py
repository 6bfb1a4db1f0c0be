"""The results file (one JSON line per finished case): nothing a reader can read is lost to a bad line.

A results file lives for many sessions, some of them killed mid-write, some of another convbench, some
edited by hand; a bad line must cost that line only. The lines here are built from real runs (the
`blobs` dataset, in this process) in the format the pytest plugin writes; the plugin's own writing,
start-up check and failed writes are exercised on pytest sessions in test_pytest_plugin.py.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from convbench import launch, results_file
from convbench.case import Case
from convbench.cli import main
from convbench.engine import RunSettings, run_in_this_process
from convbench.errors import ReportInputError
from convbench.report.load import load
from convbench.result import RECORD_SCHEMA, RunResult, ThroughputResult
from convbench.throughput import measure

BLOBS = Case(model="softmax", dataset="blobs", optimizer="sgd", lr=0.1, batch_size=50, steps=12, eval_every=6)
LEARNING_RATES = (0.05, 0.1, 0.2)


@pytest.fixture(scope="module")
def results(registry) -> list[RunResult]:
    settings = RunSettings(registry=registry, telemetry_interval_s=None)
    return [run_in_this_process(BLOBS.replace(lr=lr), settings) for lr in LEARNING_RATES]


def entry(result: RunResult, test: str = "test_blobs") -> dict:
    """A results-file line as the pytest plugin writes it."""
    name = f"{test}[{result.case_id}]"
    return {"schema": RECORD_SCHEMA, "machine": {"node": "box"}, "commit": {"id": "abc", "dirty": False},
            "session": "0123456789ab", "time": "2026-01-01T00:00:00+00:00", "fullname": f"test_suite.py::{name}",
            "name": name, "group": test,
            "extra_info": {"convbench": {"case_id": result.case_id, "scale": "quick", "outcome": "passed",
                                         "error": None, "group": test, **result.to_dict()}}}


def encoded(value: dict) -> bytes:
    return json.dumps(value).encode()


def good_lines(results: list[RunResult]) -> list[bytes]:
    return [encoded(entry(result)) for result in results]


def write(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def names_line(warning: str, number: int) -> bool:
    """Whether a warning lists line ``number`` ("line 7 (...)" or "lines 2, 7, 9 (...)")."""
    return re.search(rf"\blines? (\d+, )*{number}\b", warning) is not None


# ---------------------------------------------------------------------------------- bad lines
def _other_record_schema(results: list[RunResult]) -> bytes:
    return encoded({**entry(results[0]), "schema": "convbench.record/999"})


def _other_result_schema(results: list[RunResult]) -> bytes:
    line = entry(results[0])
    line["extra_info"]["convbench"]["schema"] = "convbench.result/999"
    return encoded(line)


def _result_without_timing(results: list[RunResult]) -> bytes:
    line = entry(results[0])
    del line["extra_info"]["convbench"]["timing"]
    return encoded(line)


def _not_utf8(results: list[RunResult]) -> bytes:
    good = good_lines(results)[0]
    return good[:40] + b"\xff\xfe" + good[40:]


#: name -> (a bad line made from good results, what the warning says about it)
BAD_LINES = {
    "garbage": (lambda results: b"<<< not json at all >>>", "malformed JSON"),
    "cut": (lambda results: good_lines(results)[0][:300], "malformed JSON"),
    "non-utf8": (_not_utf8, "not UTF-8"),
    "null": (lambda results: b"null", "not an object"),
    "array": (lambda results: b"[1, 2, 3]", "not an object"),
    "foreign-object": (lambda results: b'{"a": 1}', "record schema None"),
    "other-record-schema": (_other_record_schema, "record schema 'convbench.record/999'"),
}
#: name -> (a line that reads as a record but holds an invalid result, what the error says about it)
INVALID_RESULTS = {
    "other-result-schema": (_other_result_schema, "field 'schema': expected one of 'convbench.result/1', "
                                                   "'convbench.result/2', 'convbench.result/3', "
                                                   "got 'convbench.result/999'"),
    "result-without-timing": (_result_without_timing, "field 'timing' is missing"),
}


@pytest.mark.parametrize("kind", BAD_LINES)
def test_a_bad_line_in_the_middle_costs_only_that_line(results, tmp_path, kind):
    make_bad, reason = BAD_LINES[kind]
    lines = good_lines(results)
    lines.insert(1, make_bad(results))
    loaded = load(write(tmp_path / "results.jsonl", lines))
    assert [record["case_id"] for record in loaded.records] == [result.case_id for result in results]
    (warning,) = loaded.warnings
    assert str(tmp_path / "results.jsonl") in warning
    assert "skipped 1 unreadable line" in warning and names_line(warning, 2), warning
    assert reason in warning, warning


@pytest.mark.parametrize("kind", INVALID_RESULTS)
def test_an_invalid_result_in_the_middle_is_left_out_with_an_error_naming_its_line(results, tmp_path, kind):
    """A record whose result is invalid is an error, as in a benchmark JSON file: a warning would let
    `compare` pass a NEW file that lost a case to it."""
    make_bad, reason = INVALID_RESULTS[kind]
    lines = good_lines(results)
    lines.insert(1, make_bad(results))
    loaded = load(write(tmp_path / "results.jsonl", lines))
    assert [record["case_id"] for record in loaded.records] == [result.case_id for result in results]
    (error,) = loaded.rejected
    assert error.startswith(str(tmp_path / "results.jsonl")) and "(line 2)" in error and reason in error, error
    assert error.endswith("left out") and not loaded.warnings


def test_many_bad_lines_are_one_warning_naming_each_line(results, tmp_path):
    bad = [make_bad(results) for make_bad, _ in BAD_LINES.values()]
    lines = [good_lines(results)[0], *bad, *good_lines(results)[1:]]  # good on 1, bad on 2..10, good after
    loaded = load(write(tmp_path / "results.jsonl", lines))
    assert [record["case_id"] for record in loaded.records] == [result.case_id for result in results]
    (warning,) = loaded.warnings
    assert f"skipped {len(bad)} unreadable lines" in warning
    assert all(names_line(warning, number) for number in range(2, 2 + len(bad))), warning
    for _, reason in BAD_LINES.values():
        assert reason in warning


def test_line_numbers_count_blank_lines(results, tmp_path):
    lines = good_lines(results)
    lines[1] = lines[1][:100]
    lines.insert(1, b"")  # the bad line is now the file's line 3
    (warning,) = load(write(tmp_path / "results.jsonl", lines)).warnings
    assert names_line(warning, 3) and not names_line(warning, 2), warning


def test_a_file_with_no_good_line_is_still_an_error_saying_why(results, tmp_path):
    path = write(tmp_path / "future.jsonl", [_other_result_schema(results), b"null"])
    with pytest.raises(ReportInputError) as excinfo:
        load(path)
    message = str(excinfo.value)
    assert "\n" not in message and str(path) in message
    assert "got 'convbench.result/999'" in message and "not an object" in message


def test_a_cut_last_line_is_skipped_with_a_warning(results, tmp_path):
    lines = good_lines(results)
    path = tmp_path / "results.jsonl"
    path.write_bytes(b"".join(line + b"\n" for line in lines[:-1]) + lines[-1][:200])  # no newline: cut
    loaded = load(path)
    assert [record["case_id"] for record in loaded.records] == [result.case_id for result in results[:-1]]
    (warning,) = loaded.warnings
    assert names_line(warning, len(lines)), warning


def test_report_and_compare_keep_the_good_lines_of_a_damaged_file(results, tmp_path, capsys):
    good = write(tmp_path / "good.jsonl", good_lines(results))
    lines = good_lines(results)
    lines.insert(2, b"\x00\x00 garbage \xff")
    damaged = write(tmp_path / "damaged.jsonl", lines)
    capsys.readouterr()
    code = main(["report", str(damaged), "-o", str(tmp_path / "report"), "--no-figures"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert f"{len(results)} cases" in out
    assert len([line for line in err.splitlines() if str(damaged) in line and names_line(line, 3)]) == 1
    code = main(["compare", str(good), str(damaged)])
    out, err = capsys.readouterr()
    assert code == 0, err  # the same runs on both sides: nothing regressed
    for result in results:
        assert result.case_id in out
    assert len([line for line in err.splitlines() if str(damaged) in line and names_line(line, 3)]) == 1


# ------------------------------------------------------------------------------- throughput lines
@pytest.fixture(scope="module")
def speed(registry) -> ThroughputResult:
    """A real throughput measurement (two rounds on `blobs`, in this process)."""
    with launch.prepare(BLOBS, RunSettings(registry=registry, telemetry_interval_s=None)) as prepared:
        return measure(prepared, steps=3, rounds=2, warmup_steps=1)


def throughput_entry(measured: ThroughputResult, outcome: str = "passed") -> dict:
    """A results-file line of a throughput case, as the pytest plugin writes it."""
    name = f"test_speed[{measured.case_id}]"
    return {"schema": RECORD_SCHEMA, "machine": {"node": "box"}, "commit": {"id": "abc", "dirty": False},
            "session": "0123456789ab", "time": "2026-01-01T00:00:00+00:00", "fullname": f"test_suite.py::{name}",
            "name": name, "group": "test_speed",
            "extra_info": {"convbench_throughput": {"case_id": measured.case_id, "scale": "quick", "outcome": outcome,
                                                    "error": None, "group": "test_speed", **measured.to_dict()}}}


def test_throughput_lines_are_read_beside_convergence_lines(results, speed, tmp_path):
    path = tmp_path / "results.jsonl"
    for line in (entry(results[0]), throughput_entry(speed), entry(results[1])):
        results_file.append_record(path, line)
    loaded = load(path)
    assert [record["case_id"] for record in loaded.records] == [results[0].case_id, results[1].case_id]
    (read,) = loaded.throughput
    assert ThroughputResult.from_dict(read) == speed
    assert (read["group"], read["machine"], read["commit"]) == ("test_speed", "box", "abc")
    assert not loaded.warnings


def test_a_malformed_throughput_line_costs_only_that_line(results, speed, tmp_path):
    broken = throughput_entry(speed)
    broken["extra_info"]["convbench_throughput"]["round_s"]["mean"] = "fast"
    lines = [encoded(entry(results[0])), encoded(broken), encoded(throughput_entry(speed))]
    loaded = load(write(tmp_path / "results.jsonl", lines))
    assert len(loaded.records) == 1 and len(loaded.throughput) == 1
    (error,) = loaded.rejected  # an invalid result, as for convergence lines: left out with an error
    assert "(line 2)" in error and "field 'round_s.mean': expected a number, got 'fast'" in error, error
    assert not loaded.warnings


def test_a_throughput_case_that_failed_before_measuring_is_a_warning(results, speed, tmp_path):
    failed = throughput_entry(speed)
    failed["extra_info"]["convbench_throughput"] = {"case_id": "c", "scale": "quick", "outcome": "failed",
                                                    "error": "unknown optimizer 'adma'", "group": "test_speed"}
    loaded = load(write(tmp_path / "results.jsonl", [encoded(failed), encoded(throughput_entry(speed))]))
    assert len(loaded.throughput) == 1
    (warning,) = loaded.warnings
    assert "failed before measuring throughput: unknown optimizer 'adma'" in warning, warning


def test_report_of_a_results_file_shows_its_throughput_table(results, speed, tmp_path, capsys):
    path = tmp_path / "results.jsonl"
    for line in (entry(results[0]), throughput_entry(speed)):
        results_file.append_record(path, line)
    capsys.readouterr()
    assert main(["report", str(path), "-o", str(tmp_path / "report"), "--no-figures"]) == 0
    assert "## throughput" in capsys.readouterr().out
    (row,) = csv.DictReader((tmp_path / "report" / "tables" / "throughput.csv").open(newline=""))
    assert float(row["samples_per_s"]) == pytest.approx(speed.samples_per_s)
    assert float(row["round_std_s"]) == pytest.approx(speed.round_s.std)


# ------------------------------------------------------------------------------------ writing
def test_a_record_appended_after_a_cut_line_starts_a_line_of_its_own(results, tmp_path):
    first, second, third = (entry(result) for result in results)
    path = tmp_path / "results.jsonl"
    results_file.append_record(path, first)
    with path.open("ab") as stream:
        stream.write(encoded(second)[:500])  # a session killed while writing: no newline
    results_file.append_record(path, third)
    loaded = load(path)
    assert [record["case_id"] for record in loaded.records] == [results[0].case_id, results[2].case_id]
    (warning,) = loaded.warnings
    assert names_line(warning, 2) and "malformed JSON" in warning, warning


def test_appended_records_are_whole_lines_with_nothing_between(results, tmp_path):
    path = tmp_path / "new" / "folder" / "results.jsonl"  # folders are created
    for result in results:
        results_file.append_record(path, entry(result))
    assert path.read_bytes() == b"".join(json.dumps(entry(r), allow_nan=False).encode() + b"\n" for r in results)


def test_a_value_json_cannot_hold_is_written_as_text_not_lost(results, tmp_path):
    line = entry(results[0])
    line["extra_info"]["convbench"]["case"]["kwargs"] = {"betas": (0.9, 0.99), "device": Path("/dev/x")}
    results_file.append_record(tmp_path / "results.jsonl", line)
    (record,) = load(tmp_path / "results.jsonl").records
    assert record["case"]["kwargs"] == {"betas": [0.9, 0.99], "device": "/dev/x"}


@pytest.mark.slow
def test_sessions_appending_to_one_file_at_once_never_interleave(tmp_path):
    """Lines far larger than a pipe or stdio buffer, from several processes at once, all arrive whole."""
    writer = textwrap.dedent("""
        import sys
        from pathlib import Path
        from convbench.results_file import append_record

        writer = sys.argv[2]
        for index in range(int(sys.argv[3])):
            append_record(Path(sys.argv[1]), {"writer": writer, "index": index, "padding": writer * 300_000})
    """)
    path, writers, lines_each = tmp_path / "results.jsonl", "abcd", 20
    processes = [subprocess.Popen([sys.executable, "-c", writer, str(path), name, str(lines_each)])
                 for name in writers]
    assert [process.wait(timeout=120) for process in processes] == [0] * len(writers)
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b""
    records = [json.loads(line) for line in lines[:-1]]  # every line whole: none empty, none glued
    assert sorted((r["writer"], r["index"]) for r in records) == [(w, i) for w in writers for i in range(lines_each)]
    assert all(r["padding"] == r["writer"] * 300_000 for r in records)


def test_a_file_of_cases_that_all_failed_before_training_is_read_and_compares_as_regressions(results, tmp_path,
                                                                                              capsys):
    """Every case of NEW failing before training (a typo in a shared setting) is the worst regression, not an
    unreadable file."""
    base = write(tmp_path / "base.jsonl", good_lines(results))
    failed_lines = []
    for result in results:
        line = entry(result)
        line["extra_info"]["convbench"] = {"case_id": result.case_id, "scale": result.scale, "outcome": "failed",
                                           "error": "unknown optimizer 'sdg'", "group": "test_blobs"}
        failed_lines.append(encoded(line))
    new = write(tmp_path / "new.jsonl", failed_lines)
    loaded = load(new)
    assert len(loaded.failed) == len(results) and not loaded.records
    assert main(["compare", str(base), str(new)]) == 1
    out = capsys.readouterr().out
    assert out.count("stopped converging (failed before training)") == len(results), out
