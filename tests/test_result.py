"""The result contract: typed parts, one to_dict/from_dict each, every field checked on the way in."""

from __future__ import annotations

import copy
import json
import statistics

import pytest

from convbench.case import Case
from convbench.engine import run_in_this_process
from convbench.result import (
    READABLE_SCHEMAS,
    SCHEMA,
    THROUGHPUT_SCHEMA,
    Divergence,
    MachineLoad,
    ResultSchemaError,
    RoundTimes,
    RunResult,
    Target,
    Telemetry,
    ThroughputResult,
    Timing,
)

BLOBS = Case(model="softmax", dataset="blobs", optimizer="sgd", lr=0.1, batch_size=20, epochs=1,
             target_accuracy=0.5)


@pytest.fixture(scope="module")
def result_json(registry) -> dict:
    from convbench.engine import RunSettings

    settings = RunSettings(registry=registry, telemetry_interval_s=0.05)
    return run_in_this_process(BLOBS, settings).to_dict()


def test_a_run_is_typed_and_its_json_reads_back_to_the_same_result(result_json):
    result = RunResult.from_dict(result_json)
    assert isinstance(result.timing, Timing) and isinstance(result.target, Target)
    assert isinstance(result.telemetry, Telemetry) and result.telemetry.sampler == "psutil"
    assert result.to_dict() == result_json
    # what lands in the files is plain JSON, with no NaN
    assert json.loads(json.dumps(result_json, allow_nan=False)) == result_json
    assert result_json["schema"] == SCHEMA


def test_in_process_timing_has_no_pool_fields_and_pool_timing_keeps_them():
    alone = Timing(setup_s=1.0, train_s=2.0, eval_s=0.5)
    assert set(alone.to_dict()) == {"setup_s", "train_s", "eval_s", "train_per_step_s"}
    pooled = Timing(setup_s=1.0, train_s=2.0, eval_s=0.5, startup_s=0.0, process_group_init_s=0.3,
                    pool_reused=True)
    assert Timing.from_dict(pooled.to_dict()) == pooled
    assert pooled.to_dict()["startup_s"] == 0.0  # zero is a measurement, not a missing value


def test_replace_timing_changes_only_the_timing(result_json):
    result = RunResult.from_dict(result_json)
    changed = result.replace_timing(startup_s=3.0, pool_reused=False)
    assert changed.timing.startup_s == 3.0 and changed.timing.train_s == result.timing.train_s
    assert result.timing.startup_s is None  # frozen parts: the original is untouched
    assert changed.final == result.final


def test_version_1_results_are_still_read(result_json):
    old = {k: v for k, v in result_json.items() if k != "stop_reason"}
    old["schema"] = "convbench.result/1"
    assert "convbench.result/1" in READABLE_SCHEMAS
    result = RunResult.from_dict(old)
    assert result.stop_reason is None and result.schema == "convbench.result/1"


@pytest.mark.parametrize(("path", "value", "message"), [
    (("schema",), "convbench.result/99", "result schema 'convbench.result/99'"),
    (("steps",), "12", "field 'steps': expected a whole number, got '12'"),
    (("diverged",), 0, "field 'diverged': expected true or false"),
    (("timing", "train_s"), None, "field 'timing.train_s': expected a number"),
    (("timing", "train_s"), "fast", "field 'timing.train_s': expected a number"),
    (("timing",), [], "field 'timing': expected an object, got []"),
    (("final", "test_accuracy"), "high", "field 'final.test_accuracy': expected a number or null"),
    (("target", "step"), 1.5, "field 'target.step': expected a whole number"),
    (("curves", "eval", "step"), {}, "field 'curves.eval.step': expected a list"),
    (("telemetry", "devices"), [1], "field 'telemetry.devices[0]': expected an object"),
    (("case",), None, "field 'case' is missing"),
])
def test_a_malformed_field_is_one_error_naming_it(result_json, path, value, message):
    broken = copy.deepcopy(result_json)
    holder = broken
    for key in path[:-1]:
        holder = holder[key]
    if value is None and path == ("case",):
        del holder[path[-1]]
    else:
        holder[path[-1]] = value
    with pytest.raises(ResultSchemaError) as caught:
        RunResult.from_dict(broken)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_eval_curves_of_different_lengths_are_rejected(result_json):
    broken = copy.deepcopy(result_json)
    broken["curves"]["eval"]["test_accuracy"].append(0.5)
    with pytest.raises(ResultSchemaError, match=r"curves.eval.test_accuracy': \d+ values for \d+ steps"):
        RunResult.from_dict(broken)


def test_non_finite_numbers_are_read_as_numbers_not_rejected(result_json):
    diverged = copy.deepcopy(result_json)
    diverged["final"]["train_loss"] = float("inf")
    diverged["divergence"] = {"step": 3, "reason": "non-finite loss (inf)"}
    result = RunResult.from_dict(diverged)
    assert result.final["train_loss"] == float("inf")
    assert result.divergence == Divergence(step=3, reason="non-finite loss (inf)")
    assert result.to_dict()["final"]["train_loss"] is None  # and written back as JSON's null


def test_throughput_result_derives_its_rates_and_reads_back():
    measured = ThroughputResult(case_id="c", case={"model": "mlp"}, world_size=2, steps_per_round=10, rounds=3,
                                samples_per_round=1000, round_s=RoundTimes.of([0.5, 0.25, 0.75]), startup_s=1.5)
    data = measured.to_dict()
    assert data["samples_per_s"] == pytest.approx(2000.0) and data["samples_per_s_per_device"] == pytest.approx(1000)
    assert data["round_s"] == {"mean": 0.5, "min": 0.25, "max": 0.75, "median": 0.5, "std": pytest.approx(0.25)}
    assert data["machine_load"] is None
    assert ThroughputResult.from_dict(data) == measured
    with pytest.raises(ResultSchemaError, match=r"field 'round_s\.mean'"):
        ThroughputResult.from_dict({**data, "round_s": {"min": 1, "max": 2}})


def test_round_spread_is_the_sample_deviation_and_one_round_has_none():
    spread = RoundTimes.of([1.0, 2.0, 3.0, 10.0])
    assert spread.median == 2.5  # the middle of an even count: the mean of the two middle rounds
    assert spread.std == pytest.approx(statistics.stdev([1.0, 2.0, 3.0, 10.0]))
    assert spread.std == pytest.approx(4.0825, abs=1e-4)  # n - 1 in the denominator, not n (3.5355)
    once = RoundTimes.of([0.4])
    assert (once.mean, once.median, once.std) == (0.4, 0.4, None)


def test_throughput_written_before_round_spread_and_machine_load_still_reads():
    old = {"schema": THROUGHPUT_SCHEMA, "case_id": "c", "case": {}, "world_size": 1, "steps_per_round": 5,
           "rounds": 2, "samples_per_round": 500, "round_s": {"mean": 0.5, "min": 0.4, "max": 0.6}}
    result = ThroughputResult.from_dict(old)
    assert result.round_s == RoundTimes(mean=0.5, min=0.4, max=0.6)
    assert result.round_s.std is None and result.round_s.median is None and result.machine_load is None
    with pytest.raises(ResultSchemaError, match=r"field 'round_s\.std': expected a number or null, got 'wide'"):
        ThroughputResult.from_dict({**old, "round_s": {**old["round_s"], "std": "wide"}})


def test_throughput_machine_load_reads_back_and_is_checked():
    load = MachineLoad(busy=True, other_cpu_share=0.4, own_cpu_share=0.5, duration_s=2.0,
                       reason="other processes used 40% of the 2 cores' time", hosts=[{"host": "vm"}])
    measured = ThroughputResult(case_id="c", case={}, world_size=1, steps_per_round=5, rounds=2,
                                samples_per_round=500, round_s=RoundTimes.of([0.5, 0.6]), machine_load=load)
    data = json.loads(json.dumps(measured.to_dict(), allow_nan=False))
    assert data["machine_load"]["busy"] is True
    assert ThroughputResult.from_dict(data) == measured
    with pytest.raises(ResultSchemaError, match=r"field 'machine_load\.busy': expected true or false"):
        ThroughputResult.from_dict({**data, "machine_load": {**data["machine_load"], "busy": "yes"}})
