"""The printed per-group table (`convbench.report.terminal`): narrow, one cell per metric, one verdict."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from convbench.report.identity import Headline
from convbench.report.terminal import mean_spread_text, terminal_table, to_terminal, verdict_text

ACCURACY = Headline("test", accuracy=True)
LOSS = Headline("train", accuracy=False)


def table(**columns: list) -> pd.DataFrame:
    rows = len(next(iter(columns.values())))
    base = {"case": [f"c{i}" for i in range(rows)], "seeds": [1] * rows, "diverged": [False] * rows,
            "stalled": [False] * rows, "outcome": ["passed"] * rows}
    return pd.DataFrame({**base, **columns}, dtype=object).astype({"seeds": int})


@pytest.mark.parametrize(("mean", "spread", "shown"), [
    (0.82071, None, "0.8207"),
    (0.82071, 0.010412, "0.8207 ±0.01"),
    (1234.5678, 0.5, "1235 ±0.5"),
    (None, None, None),  # not recorded: the table shows "-"
    (math.nan, math.nan, "nan"),  # a recorded NaN stays visible; its spread (NaN) says nothing more
    (math.inf, None, "inf"),
])
def test_mean_and_spread_in_one_cell(mean, spread, shown):
    assert mean_spread_text(mean, spread) == shown


@pytest.mark.parametrize(("diverged", "stalled", "outcome", "shown"), [
    (False, False, "passed", "ok"),
    (True, False, "passed", "diverged"),
    (False, True, "passed", "stalled"),
    ("1/3", "1/3", "passed", "diverged 1/3, stalled 1/3"),
    (False, False, "failed", "failed"),
    (True, False, "2 passed, 1 failed", "diverged, 2 passed, 1 failed"),
    (False, None, "passed", "?"),  # recorded before the stalled verdict: not known to be fine
])
def test_verdict_is_one_cell(diverged, stalled, outcome, shown):
    assert verdict_text(pd.Series({"diverged": diverged, "stalled": stalled, "outcome": outcome})) == shown


def test_printed_table_keeps_what_answers_the_question_and_drops_empty_columns():
    shown = terminal_table(table(final_test_accuracy=[0.9, 0.8], final_test_accuracy_std=[0.01, None],
                                 best_test_accuracy=[0.91, 0.8], final_train_loss=[0.3, 0.5],
                                 time_to_target_s=[None, None], train_time_s=[2.0, 3.0],
                                 samples_per_s=[100.0, 90.0]), ACCURACY)
    assert list(shown.columns) == ["case", "test acc", "best test acc", "train loss", "train s", "verdict"]
    assert shown["test acc"].tolist() == ["0.9 ±0.01", "0.8"] and shown["case"].tolist() == ["c0", "c1"]


def test_seeds_column_only_where_some_case_has_several():
    one = table(final_test_accuracy=[0.9])
    several = table(final_test_accuracy=[0.9, 0.8]).assign(seeds=[3, 1])
    assert "seeds" not in terminal_table(one, ACCURACY).columns
    assert terminal_table(several, ACCURACY)["seeds"].tolist() == [3, 1]


def test_a_regression_group_prints_its_loss_and_no_accuracy():
    shown = terminal_table(table(final_train_loss=[0.01], final_train_loss_std=[0.002], train_time_s=[1.0]), LOSS)
    assert list(shown.columns) == ["case", "train loss", "train s", "verdict"]
    assert shown["train loss"].tolist() == ["0.01 ±0.002"]


def test_markdown_of_a_wide_group_stays_narrow():
    long_names = [f"cnn-sgd-lr{lr:g}-bs{bs}-w2" for lr in (0.1, 0.01, 0.001) for bs in (32, 64, 128)]
    rows = len(long_names)
    wide = table(final_test_accuracy=[0.912345] * rows, final_test_accuracy_std=[0.0123456] * rows,
                 best_test_accuracy=[0.92] * rows, best_test_accuracy_std=[0.01] * rows,
                 final_train_loss=[0.123456] * rows, final_train_loss_std=[0.0123] * rows,
                 time_to_target_s=[12.3456] * rows, time_to_target_s_std=[1.234] * rows,
                 train_time_s=[123.456] * rows, train_time_s_std=[12.34] * rows).assign(
        case=long_names, seeds=[3] * rows, diverged=["1/3"] * rows, stalled=["1/3"] * rows, busy=["2 yes, 1 no"] * rows)
    text = to_terminal(wide, ACCURACY)
    assert max(map(len, text.splitlines())) <= 160
    assert text.splitlines()[0].split("|")[1].strip() == "case"


def test_a_metric_one_case_did_not_record_is_a_dash_not_zero():
    text = to_terminal(table(final_test_accuracy=[0.9, 0.8], final_train_loss=[0.3, None]), ACCURACY)
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in text.splitlines()]
    column = rows[0].index("train loss")
    assert [row[column] for row in rows[2:]] == ["0.3", "-"]


def test_busy_and_parallel_columns_are_printed_where_runs_recorded_them():
    shown = terminal_table(table(final_test_accuracy=[0.9, 0.8]).assign(busy=["yes", "no"],
                                                                           parallel=["2 workers", "alone"]), ACCURACY)
    assert list(shown.columns)[-2:] == ["busy", "parallel"] and shown["parallel"].tolist() == ["2 workers", "alone"]
