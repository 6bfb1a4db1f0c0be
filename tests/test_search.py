"""`convbench search`: the search space's checks, the trial's value and record, and real studies: one worker
on the journal file, two workers on one study, a worker killed mid-trial (its trial failed and retried by
another), a worker stopped by Ctrl-C, and the report's search section."""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import time
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from search_runs import (
    assert_no_duplicate_no_lost,
    finish,
    journal_study,
    start_worker,
    trial_lines,
    wait_for,
    write_space,
)

from convbench import Case
from convbench.cli import main as convbench_main
from convbench.engine import Progress
from convbench.errors import ConvbenchError
from convbench.report.search import read_studies
from convbench.search import Objective, SearchSpace, SearchSpaceError
from convbench.search.record import case_source
from convbench.search.space import load_space
from convbench.search.storage import HeartbeatJournalStorage, heartbeat_of, open_storage
from convbench.search.trial import objective_value, pruning_reporter
from convbench.search.worker import WorkerOptions, run_worker

BASE = Case(model="softmax", optimizer="sgd", lr=0.1, dataset="mnist-5k", steps=20, eval_every=10,
            eval_train_samples=500)
LR = {"lr": FloatDistribution(1e-3, 1.0, log=True)}


# ------------------------------------------------------------------------------------- the space
@pytest.mark.parametrize(("changes", "message"), [
    ({"params": {"lrr": LR["lr"]}}, "parameter 'lrr' is not a Case field a search can vary; did you mean 'lr'?"),
    ({"params": {"label": LR["lr"]}}, "parameter 'label' is not a Case field a search can vary"),
    ({"params": {"model.x": LR["lr"]}}, "only kwargs fields take a key; valid choices: model_kwargs.NAME"),
    ({"params": {"lr": [0.1, 0.2]}}, "params['lr'] must be an optuna.distributions distribution"),
    ({"params": {}}, "params must map at least one Case field"),
    ({"objective": "val_acc"}, "objective 'val_acc' is invalid; valid choices: [final_|best_]SPLIT_METRIC"),
    ({"direction": "up"}, "direction='up' is invalid; valid choices: maximize, minimize"),
    ({"sampler": "tpe2"}, "sampler='tpe2' is invalid; did you mean 'tpe'? valid choices: grid, random, tpe"),
    ({"pruner": "medan"}, "pruner='medan' is invalid; did you mean 'median'?"),
    ({"objective": "time_to_target"}, "objective 'time_to_target' needs a target"),
    ({"sampler": "grid"}, "sampler='grid' needs a CategoricalDistribution (the grid's values) for every parameter; "
                          "not for lr"),
    ({"trials": None}, "a search needs a budget"),
    ({"trials": 0}, "trials must be a whole number >= 1 or None, got 0"),
    ({"timeout_s": -1.0}, "timeout_s must be a positive number of seconds or None, got -1.0"),
])
def test_a_bad_search_space_is_one_line_naming_the_value(changes, message):
    fields = {"base": BASE, "params": LR, "trials": 3, **changes}
    with pytest.raises(SearchSpaceError) as caught:
        SearchSpace(**fields)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_pruner_needs_an_objective_measured_at_each_evaluation():
    with pytest.raises(SearchSpaceError, match="pruner='median' needs an objective measured at every evaluation"):
        SearchSpace(base=BASE.replace(target_accuracy=0.8), params=LR, objective="time_to_target", pruner="median",
                    trials=2)


@pytest.mark.parametrize(("text", "key", "direction"), [
    ("val_accuracy", "val_accuracy", "maximize"), ("final_test_loss", "test_loss", "minimize"),
    ("best_val_accuracy", "val_accuracy", "maximize"), ("time_to_target", None, "minimize"),
])
def test_objectives_read_their_metric_and_direction(text, key, direction):
    goal = Objective.parse(text)
    assert (goal.eval_key, goal.direction) == (key, direction)


def test_drawn_values_set_fields_and_single_kwargs():
    space = SearchSpace(base=BASE.replace(optimizer="momentum", optimizer_kwargs={"nesterov": True}),
                        params={"lr": LR["lr"], "optimizer_kwargs.momentum": FloatDistribution(0.5, 0.99),
                                "batch_size": IntDistribution(16, 128)}, trials=2)
    case = space.case({"lr": 0.05, "optimizer_kwargs.momentum": 0.8, "batch_size": 32})
    assert (case.lr, case.batch_size) == (0.05, 32)
    assert dict(case.optimizer_kwargs) == {"nesterov": True, "momentum": 0.8}  # the base's other kwargs kept


def test_case_for_builds_what_a_field_takes_from_a_drawn_number():
    space = SearchSpace(base=BASE.replace(model="tf_cnn"), params={"filters": IntDistribution(4, 32)}, trials=2,
                        case_for=lambda base, v: base.replace(model_kwargs={"filters": (v["filters"],
                                                                                         2 * v["filters"])}))
    assert space.case({"filters": 8}).model_kwargs["filters"] == (8, 16)


def test_a_space_file_without_space_or_that_raises_is_one_line(tmp_path):
    (tmp_path / "none.py").write_text("X = 1\n")
    (tmp_path / "bad.py").write_text("from convbench import Case\nCase(model='m', optimizer='o', lr=-1, steps=1)\n")
    with pytest.raises(SearchSpaceError, match=r"none.py defines no SPACE = SearchSpace\(...\) \(found NoneType\)"):
        load_space(tmp_path / "none.py")
    with pytest.raises(SearchSpaceError, match=r"bad.py: invalid lr=-1.0: expected a positive number"):
        load_space(tmp_path / "bad.py")
    with pytest.raises(SearchSpaceError, match="no such file"):
        load_space(tmp_path / "missing.py")


# ------------------------------------------------------------------------------ value and record
class _Result:
    def __init__(self, final=None, best=None, reached=False, time_s=None):
        self.final, self.best = final or {}, best or {}
        self.target = type("T", (), {"reached": reached, "time_s": time_s})()


def test_a_run_that_never_measured_the_objective_gets_the_worst_value():
    assert objective_value(_Result({"val_accuracy": 0.9}), Objective.parse("val_accuracy")) == 0.9
    assert objective_value(_Result({"val_accuracy": None}), Objective.parse("val_accuracy")) == -math.inf
    assert objective_value(_Result({"val_loss": math.nan}), Objective.parse("val_loss")) == math.inf
    assert objective_value(_Result(best={"val_accuracy": 0.95}), Objective.parse("best_val_accuracy")) == 0.95
    assert objective_value(_Result(reached=True, time_s=1.5), Objective.parse("time_to_target")) == 1.5
    assert objective_value(_Result(reached=False), Objective.parse("time_to_target")) == math.inf


def test_the_pruner_hears_evaluations_not_heartbeats_and_stops_a_poor_trial():
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(n_startup_trials=1,
                                                                                            n_warmup_steps=0))
    first = study.ask()
    first.report(0.9, 10)
    study.tell(first, 0.9)
    trial = study.ask()
    report = pruning_reporter(trial, Objective.parse("val_accuracy"))
    report(Progress("c", 5, 20, 0.1, 0.1, {"train_loss": 2.0}))  # a heartbeat: no evaluation to report
    assert trial.storage.get_trial(trial._trial_id).intermediate_values == {}
    with pytest.raises(optuna.TrialPruned, match=r"pruned at step 10: val_accuracy 0\.1"):
        report(Progress("c", 10, 20, 0.2, 0.1, {"train_loss": 2.0, "val_accuracy": 0.1, "val_loss": 2.0}))


def test_the_best_case_is_printed_as_source_that_builds_it_again():
    case = BASE.replace(optimizer_kwargs={"momentum": 0.9}, augmentations=[("rotation", {"degrees": 10})],
                        scales={"quick": {"steps": 5}})
    source = case_source(case)
    assert source.startswith("Case(model='softmax', optimizer='sgd', lr=0.1, steps=20,")
    assert eval(source, {"Case": Case}) == case


# ------------------------------------------------------------------------------- heartbeats
@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_a_running_trial_without_a_recent_heartbeat_is_stale(tmp_path):
    storage = open_storage(str(tmp_path / "journal.log"), heartbeat_s=1)
    assert isinstance(storage, HeartbeatJournalStorage)
    study = optuna.create_study(storage=storage, study_name="s")
    alive, dead = study.ask(), study.ask()
    now = time.time()
    storage.set_trial_system_attr(alive._trial_id, "convbench:heartbeat", now)
    storage.set_trial_system_attr(dead._trial_id, "convbench:heartbeat", now - 10)  # grace: 2 s
    assert storage._get_stale_trial_ids(study._study_id) == [dead._trial_id]
    storage.record_heartbeat(dead._trial_id)
    assert storage._get_stale_trial_ids(study._study_id) == []
    assert heartbeat_of(storage.get_trial(dead._trial_id)) >= now


def test_a_storage_url_whose_driver_or_server_is_missing_is_one_line():
    with pytest.raises(ConvbenchError, match=r"--storage='postgresql://u:\*\*\*@127.0.0.1:1/x': cannot open it") as err:
        open_storage("postgresql://u:secret@127.0.0.1:1/x", heartbeat_s=1)
    assert "secret" not in str(err.value)
    with pytest.raises(ConvbenchError, match="--heartbeat=0: expected a whole number of seconds >= 1"):
        open_storage(None, heartbeat_s=0)


# ------------------------------------------------------------------------------------ studies
@pytest.mark.slow
def test_a_tiny_study_on_the_journal_file_writes_every_trial_and_reports_its_best(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    space = SearchSpace(base=BASE, params={"lr": LR["lr"], "batch_size": CategoricalDistribution([50, 100])},
                        sampler="tpe", trials=3, seed=0)
    summary = run_worker(space, WorkerOptions(study="tiny", results=tmp_path / "results.jsonl", threads=1,
                                              heartbeat_s=1), say=lambda line: None)
    assert summary.ran == {"complete": 3}
    study = journal_study(tmp_path / ".convbench" / "search-journal.log", "tiny")
    values = {t.number: t.value for t in study.trials}
    lines = trial_lines(tmp_path / "results.jsonl")
    assert {line["trial"]: line["value"] for line in lines} == values
    assert all(0.1 < value <= 1 for value in values.values())  # they learned: above chance on 10 classes
    # the study's best trial is the report's, as a Case to paste
    code = convbench_main(["report", str(tmp_path / "results.jsonl"), "-o", str(tmp_path / "report")])
    out = capsys.readouterr().out
    assert code == 0
    best = study.best_trial
    assert f"best: trial {best.number}, final_val_accuracy {best.value:.6g}" in out
    pasted = next(line for line in out.splitlines() if line.startswith("Case("))
    rebuilt = eval(pasted, {"Case": Case})
    assert (rebuilt.lr, rebuilt.batch_size) == (best.params["lr"], best.params["batch_size"])
    for suffix in ("history", "importance", "parallel"):
        assert (tmp_path / "report" / "figures" / f"search-tiny-{suffix}.png").stat().st_size > 1000
    assert "search-tiny-history.png" in (tmp_path / "report" / "index.html").read_text()
    # a second worker on a study whose budget is spent runs nothing
    again = run_worker(space, WorkerOptions(study="tiny", results=tmp_path / "results.jsonl", heartbeat_s=1),
                       say=lambda line: None)
    assert again.ran == {} and len(trial_lines(tmp_path / "results.jsonl")) == 3
    # a seeded study taken up again goes on drawing new values, not the first trials' again
    more = run_worker(dataclasses.replace(space, trials=5), WorkerOptions(study="tiny", results=None, heartbeat_s=1),
                      say=lambda line: None)
    assert more.ran == {"complete": 2}
    drawn = [t.params["lr"] for t in journal_study(tmp_path / ".convbench" / "search-journal.log", "tiny").trials]
    assert len(set(drawn)) == 5, drawn


@pytest.mark.slow
def test_a_multi_process_trial_reports_its_evaluations_to_the_pruner(tmp_path, monkeypatch):
    """The session's process alone talks to the study: rank 0's evaluations reach it through the worker pool."""
    monkeypatch.chdir(tmp_path)
    space = SearchSpace(base=BASE.replace(world_size=2), params=LR, pruner="median", trials=1, seed=0)
    summary = run_worker(space, WorkerOptions(study="ddp", results=tmp_path / "r.jsonl", heartbeat_s=1),
                         say=lambda line: None)
    assert summary.ran == {"complete": 1}
    trial = journal_study(tmp_path / ".convbench" / "search-journal.log", "ddp").trials[0]
    assert sorted(trial.intermediate_values) == [10, 20]  # every evaluation after step 0
    assert trial.intermediate_values[20] == trial.value
    (line,) = trial_lines(tmp_path / "r.jsonl")
    assert ", world_size=2," in line["case_source"]


@pytest.mark.slow
def test_a_study_made_for_another_objective_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    optuna.create_study(storage=open_storage(None, 1), study_name="s", direction="maximize").set_user_attr(
        "convbench_objective", "final_val_accuracy")
    space = SearchSpace(base=BASE, params=LR, objective="val_loss", trials=1)
    with pytest.raises(ConvbenchError, match="study 's' was created for objective 'final_val_accuracy' \\(maximize\\), "
                                             "not 'final_val_loss' \\(minimize\\)"):
        run_worker(space, WorkerOptions(study="s", results=None, heartbeat_s=1), say=lambda line: None)


@pytest.mark.slow
def test_two_local_workers_share_one_study_with_no_duplicate_and_no_lost_trial(tmp_path):
    write_space(tmp_path)
    workers = [start_worker(tmp_path, "--heartbeat", "1", STEPS="150", TRIALS="6") for _ in range(2)]
    outputs = [finish(worker) for worker in workers]
    assert all(code == 0 for code, _ in outputs), outputs
    study = journal_study(tmp_path / ".convbench" / "search-journal.log")
    assert_no_duplicate_no_lost(study, tmp_path / ".convbench" / "results.jsonl", budget=6, workers=2)
    ran_by = {t.user_attrs["worker"] for t in study.trials}
    assert len(ran_by) == 2, ran_by  # both took trials from the one study


def _running_with_heartbeat(path: Path) -> optuna.trial.FrozenTrial | None:
    if not path.exists():
        return None
    try:
        trials = journal_study(path).get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    except KeyError:  # the study is not created yet
        return None
    return next((t for t in trials if heartbeat_of(t) is not None), None)


@pytest.mark.slow
def test_a_worker_killed_mid_trial_leaves_it_failed_and_another_worker_runs_it_again(tmp_path):
    write_space(tmp_path)
    journal, results = tmp_path / ".convbench" / "search-journal.log", tmp_path / ".convbench" / "results.jsonl"
    doomed = start_worker(tmp_path, "--heartbeat", "1", STEPS="1000000", TRIALS="1")
    try:
        running = wait_for(lambda: _running_with_heartbeat(journal), "the first worker's trial to beat")
    finally:
        doomed.send_signal(signal.SIGKILL)
        doomed.wait()
    # the killed worker's heartbeats stop; past the grace period (2 x 1 s) the trial is stale
    wait_for(lambda: time.time() - heartbeat_of(journal_study(journal).trials[running.number]) > 2.5,
             "the killed trial's last heartbeat to age past the grace period")
    code, output = finish(start_worker(tmp_path, "--heartbeat", "1", STEPS="20", TRIALS="1"))
    assert code == 0, output
    trials = journal_study(journal).trials
    assert trials[running.number].state == optuna.trial.TrialState.FAIL
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == running.number]
    assert len(retried) == 1 and retried[0].state == optuna.trial.TrialState.COMPLETE
    assert retried[0].params == running.params  # the same values, run again
    assert f"trial {retried[0].number} (retry of trial {running.number})" in output
    assert [(line["trial"], line["retry_of"]) for line in trial_lines(results)] == [(retried[0].number,
                                                                                     running.number)]


@pytest.mark.slow
def test_ctrl_c_stops_a_worker_cleanly_and_queues_its_trial_again(tmp_path):
    write_space(tmp_path)
    journal = tmp_path / ".convbench" / "search-journal.log"
    worker = start_worker(tmp_path, "--heartbeat", "1", STEPS="1000000", TRIALS="2")
    try:
        running = wait_for(lambda: _running_with_heartbeat(journal), "the worker's trial to beat")
        worker.send_signal(signal.SIGINT)
        code, output = finish(worker, timeout=60)
    finally:
        if worker.poll() is None:
            os.kill(worker.pid, signal.SIGKILL)
    assert code == 130, output
    assert (f"search stopped by Ctrl-C after no trials; trial {running.number} ended failed and is queued again"
            in output)
    assert "Traceback" not in output
    trials = journal_study(journal).trials
    assert trials[running.number].state == optuna.trial.TrialState.FAIL
    queued = [t for t in trials if t.state == optuna.trial.TrialState.WAITING]
    assert [(t.params, t.system_attrs["failed_trial"]) for t in queued] == [(running.params, running.number)]


def test_the_report_keeps_the_last_reading_of_each_trial_and_skips_foreign_lines(tmp_path):
    line = ('{"extra_info": {"convbench_search": {"schema": "convbench.search/1", "study": "s", "trial": 0, '
            '"direction": "minimize", "objective": "final_val_loss", "params": {"lr": 0.1}, "distributions": {}, '
            '"case_source": "Case(...)", "value": %s}}}')
    path = tmp_path / "r.jsonl"
    path.write_text("\n".join([line % "1.0", "garbage", '{"extra_info": {"convbench_search": 3}}', line % "0.5"]))
    studies = read_studies([path])
    assert list(studies) == ["s"] and studies["s"].trials[0]["value"] == 0.5


def test_the_example_search_space_loads_and_builds_the_labs_cases():
    space = load_space(Path(__file__).parent.parent / "examples" / "search" / "cnn_random_search.py")
    case = space.case({"lr": 0.01, "momentum": 0.9, "batch_size": 64, "filters": 8})
    assert (dict(case.model_kwargs), dict(case.optimizer_kwargs)) == ({"filters": (8, 16)}, {"momentum": 0.9})
    assert case.at_scale("quick").dataset == "mnist-5k"


@pytest.mark.parametrize(("space_text", "options", "message"), [
    ("", ["--trials", "0"], "convbench: error: --trials='0': expected a whole number >= 1"),
    ("", ["--timeout", "-5"], "convbench: error: --timeout='-5': expected a positive, finite number of seconds"),
    ("", ["--heartbeat", "x"], "convbench: error: --heartbeat='x': expected a whole number >= 1"),
    ("sofmax", [], "convbench: error: unknown model 'sofmax'; did you mean 'softmax'?"),
])
def test_the_command_line_says_what_is_wrong_in_one_line_before_any_trial(tmp_path, capsys, space_text, options,
                                                                           message):
    source = write_space(tmp_path).read_text().replace('model="softmax"', f'model="{space_text or "softmax"}"')
    (tmp_path / "space.py").write_text(source)
    code = convbench_main(["search", str(tmp_path / "space.py"), "--results", str(tmp_path / "r.jsonl"),
                           "--storage", str(tmp_path / "journal.log"), *options])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(message) and err.count("\n") == 1, err
    assert not (tmp_path / "journal.log").exists()  # no study was touched


def test_the_command_lines_budget_replaces_the_spaces_and_grid_search_walks_the_categorical_values():
    from convbench.search.space import with_budget
    from convbench.search.worker import make_pruner, make_sampler

    space = SearchSpace(base=BASE, params={"lr": CategoricalDistribution([0.1, 0.2]),
                                           "batch_size": CategoricalDistribution([50, 100])},
                        sampler="grid", pruner="hyperband", trials=10)
    assert (with_budget(space, None, 60.0).trials, with_budget(space, None, 60.0).timeout_s) == (10, 60.0)
    assert with_budget(space, 3, None).trials == 3
    study = optuna.create_study(sampler=make_sampler(space), pruner=make_pruner(space))
    assert isinstance(study.pruner, optuna.pruners.HyperbandPruner)
    study.optimize(lambda t: t.suggest_categorical("lr", [0.1, 0.2]) * t.suggest_categorical("batch_size", [50, 100]),
                   n_trials=10)
    assert len(study.trials) == 4  # the grid's four points, each once; then the sampler stops the study
    assert {(t.params["lr"], t.params["batch_size"]) for t in study.trials} == {(0.1, 50), (0.1, 100), (0.2, 50),
                                                                                (0.2, 100)}
