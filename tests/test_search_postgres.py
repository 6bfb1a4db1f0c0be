"""`convbench search --storage postgresql://...`: two workers share one study on a real PostgreSQL server
(started by the test on loopback, in a temporary folder), as workers on many machines do."""

from __future__ import annotations

import optuna
import pytest
from postgres_server import running_server, unavailable
from search_runs import assert_no_duplicate_no_lost, finish, start_worker, write_space


@pytest.fixture(scope="module")
def postgres_url():
    reason = unavailable()
    if reason is not None:
        pytest.skip(f"no PostgreSQL server for the shared-storage test: {reason}")
    with running_server() as url:
        yield url


@pytest.mark.slow
def test_two_workers_share_a_study_on_postgresql(postgres_url, tmp_path):
    write_space(tmp_path)
    # one results file per worker, as on two machines; the report reads them together
    workers = [start_worker(tmp_path, "--storage", postgres_url, "--study", "pg", "--heartbeat", "2",
                            "--results", f"worker{index}.jsonl", STEPS="150", TRIALS="6") for index in range(2)]
    outputs = [finish(worker) for worker in workers]
    assert all(code == 0 for code, _ in outputs), outputs
    study = optuna.load_study(study_name="pg", storage=postgres_url)
    merged = tmp_path / "merged.jsonl"
    merged.write_bytes(b"".join((tmp_path / f"worker{index}.jsonl").read_bytes() for index in range(2)))
    assert_no_duplicate_no_lost(study, merged, budget=6, workers=2)
    assert len({t.user_attrs["worker"] for t in study.trials}) == 2
    assert "postgresql+psycopg2://postgres@127.0.0.1" in outputs[0][1]  # the worker says which study it joined


def test_a_server_that_refuses_is_one_line(tmp_path, capsys):
    from convbench.cli import main

    write_space(tmp_path)
    code = main(["search", str(tmp_path / "space.py"), "--storage", "postgresql+psycopg2://u:pw@127.0.0.1:1/x",
                 "--results", "none"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("convbench: error: --storage='postgresql+psycopg2://u:***@127.0.0.1:1/x': ")
    assert err.count("\n") == 1 and "pw@" not in err
