"""A run's record, by hand: the headline window, time and updates to a target, the accuracy at equal
time, whether the run ends at the target, and the equal time of a set of runs."""

from __future__ import annotations

from dataclasses import fields
from operator import attrgetter

import pytest

from afl.experiments.compare import TABLE_COLUMNS
from afl.experiments.records import RunRecord, equal_times, reach, run_record, run_records
from afl.experiments.sweep import RESULT_COLUMNS

#: (sim_time, client_updates, test_accuracy, val_accuracy, max_staleness): metrics.csv rows, as strings
POINTS = [
    (0, 0, 0.1, 0.1, "0"),
    (10, 5, 0.3, 0.3, "2"),
    (20, 10, 0.5, 0.6, "3"),
    (30, 15, 0.9, 0.85, ""),
    (40, 20, 0.8, 0.88, "5"),
    (50, 25, 0.8, 0.86, "4"),
    (60, 30, 0.75, 0.8, "nan"),
]


def _history() -> list[dict[str, str]]:
    rows = [
        {
            "sim_time": str(float(t)),
            "client_updates": str(u),
            "test_accuracy": str(a),
            "val_accuracy": str(v),
            "max_staleness": s,
            "grad_norm_sq": "",
            "heterogeneity": "",
        }
        for t, u, a, v, s in POINTS
    ]
    rows[-1]["grad_norm_sq"] = "0.25"
    return rows


def _summary(**changes) -> dict:
    """A summary.json from before the headline, the validation choice and lost updates were saved."""
    return {
        "final_test_accuracy": 0.75,
        "best_test_accuracy": 0.9,
        "sim_time": 60.0,
        "mean_staleness": 1.5,
        "stale_updates": 3,
        "dropped_updates": 1,
        "wall_time_s": 2.0,
        **changes,
    }


def test_the_headline_is_the_mean_of_the_last_five_evaluations_after_update_0() -> None:
    record = run_record(_summary(), _history(), equal_time=45.0, target=0.7)
    # seven evaluations, the last five: 0.5, 0.9, 0.8, 0.8, 0.75
    assert record.headline == pytest.approx(3.75 / 5) and record.window == 5
    assert (record.last, record.best, record.sim_time) == (0.75, 0.9, 60.0)
    saved = _summary(final_mean_test_accuracy=0.81, final_window={"evaluations": 3})
    record = run_record(saved, _history(), equal_time=45.0, target=0.7)
    assert record.headline == 0.81 and record.window == 3  # the summary's own, where it has one


def test_time_and_updates_to_target_are_those_of_the_first_crossing() -> None:
    record = run_record(_summary(), _history(), equal_time=45.0, target=0.7)
    # 0.5 at 20 s, then 0.9 at 30 s (15 updates): the first evaluation at or above 0.7
    assert record.to_target.target == 0.7
    assert record.to_target.time == 30.0 and record.to_target.updates == 15
    assert type(record.to_target.updates) is int
    assert record.to_target.reached and record.to_target.ends_at and not record.to_target.fell_below
    exact = reach(_history(), 0.75, 0.9)  # reached on equality, at the same evaluation
    assert (exact.time, exact.updates) == (30.0, 15)


def test_a_target_never_reached_has_no_time_and_no_updates() -> None:
    missed = run_record(_summary(), _history(), equal_time=45.0, target=0.95).to_target
    assert (missed.time, missed.updates) == (None, None)
    assert not missed.reached and not missed.ends_at and not missed.fell_below


def test_a_run_that_crossed_the_target_and_ended_under_it_fell_below() -> None:
    # 0.9 at 30 s crosses 0.85; the headline, 0.75, ends under it
    crossed = run_record(_summary(), _history(), equal_time=45.0, target=0.85).to_target
    assert crossed.time == 30.0 and crossed.updates == 15
    assert not crossed.ends_at and crossed.fell_below
    # judged on the headline, not on the last evaluation: a saved headline of 0.86 ends at 0.85
    held = run_record(_summary(final_mean_test_accuracy=0.86), _history(), 45.0, 0.85).to_target
    assert held.ends_at and not held.fell_below


def test_accuracy_at_equal_time_is_the_last_evaluation_by_then() -> None:
    history = _history()
    assert run_record(_summary(), history, equal_time=45.0, target=0.7).acc_at_equal_time == 0.8
    record = run_record(_summary(), history, equal_time=40.0, target=0.7)
    assert record.acc_at_equal_time == 0.8 and record.equal_time == 40.0  # the evaluation at 40 s counts
    assert run_record(_summary(), history, equal_time=39.0, target=0.7).acc_at_equal_time == 0.9
    late = run_record(_summary(), history[1:], equal_time=5.0, target=0.7)  # first evaluation at 10 s
    assert late.acc_at_equal_time is None


def test_the_run_diagnostics_from_its_summary_and_rows() -> None:
    record = run_record(_summary(), _history(), equal_time=45.0, target=0.7)
    assert record.max_staleness == 5.0  # the empty cell and the NaN left out
    assert record.final_grad_norm_sq == 0.25 and record.final_heterogeneity is None
    assert (record.mean_staleness, record.stale_updates, record.dropped_updates) == (1.5, 3, 1)
    assert record.lost_updates == 0 and record.wall_time_s == 2.0  # no lost_updates saved: 0
    assert record.late_rise is None  # 6 evaluations after update 0: fewer than 2 × 5
    # the best validation accuracy (0.88) is at 40 s, where test accuracy is 0.8
    assert record.val_selected == 0.8
    saved = run_record(_summary(val_selected_test_accuracy=None), _history(), 45.0, 0.7)
    assert saved.val_selected is None  # the summary's own: no validation split
    with pytest.raises(AttributeError):
        record.headline = 1.0  # type: ignore[misc]  # frozen


def test_equal_time_is_per_seed_the_shortest_end_of_simulated_time() -> None:
    def run(sim_time: float) -> dict:
        return {"summary": _summary(sim_time=sim_time), "history": _history()}

    runs = {"afl": {1: run(36.0), 0: run(30.0)}, "sync": {0: run(90.0)}, "slow": {1: run(120.0)}}
    times = equal_times(runs)
    assert times == {0: 30.0, 1: 36.0} and list(times) == [0, 1]  # in seed order
    records = run_records(runs, times, target=0.7)
    assert list(records) == ["afl", "sync", "slow"] and list(records["afl"]) == [1, 0]
    assert records["sync"][0].equal_time == 30.0 and records["slow"][1].equal_time == 36.0
    assert records["sync"][0] == run_record(runs["sync"][0]["summary"], _history(), 30.0, 0.7)


@pytest.mark.parametrize("columns", [TABLE_COLUMNS, RESULT_COLUMNS], ids=["compare", "sweep"])
def test_every_table_column_reads_a_field_of_the_record(columns: dict[str, str]) -> None:
    record = run_record(_summary(), _history(), equal_time=45.0, target=0.7)
    names = {f.name for f in fields(RunRecord)}
    for column, path in columns.items():
        assert path.split(".")[0] in names, column
        attrgetter(path)(record)
