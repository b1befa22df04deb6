"""What one finished run measured, read once: a :class:`RunRecord` per run, built by :func:`run_record` from
its ``summary.json`` and evaluation rows, and the equal time its seed is compared at (:func:`equal_times`).
A comparison's table (:mod:`~afl.experiments.compare`) and a sweep's results
(:mod:`~afl.experiments.sweep`) are made of these records; neither reads a statistic off a run itself.
Plain Python, no torch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from afl.experiments.metrics import (
    FINAL_WINDOW,
    accuracy_at,
    headline,
    late_rise,
    time_to_accuracy,
    val_selected,
)

#: Finished runs by group (an arm, a sweep's cell) and seed: ``{summary, history, output_dir}`` each.
Runs = Mapping[str, Mapping[int, Mapping[str, Any]]]


@dataclass(frozen=True)
class Reach:
    """One run against one target accuracy: when its test accuracy first reached it (None: never), and
    whether its headline ends at or above it. A target's own record, so that a run can hold several."""

    target: float
    time: float | None  # the simulated time of the first evaluation at or above the target
    updates: int | None  # the client updates of that evaluation
    ends_at: bool  # the headline is at or above the target
    fell_below: bool  # reached the target, then ended under it on the headline

    @property
    def reached(self) -> bool:
        return self.time is not None


def reach(history: Sequence[Mapping[str, Any]], headline_accuracy: float, target: float) -> Reach:
    """The :class:`Reach` of ``target`` by a run of these evaluation rows and this headline.

    Example:
        >>> rows = [{"sim_time": 10.0, "client_updates": 5, "test_accuracy": 0.6},
        ...         {"sim_time": 20.0, "client_updates": 10, "test_accuracy": 0.8}]
        >>> reach(rows, 0.7, 0.75)
        Reach(target=0.75, time=20.0, updates=10, ends_at=False, fell_below=True)
    """
    time = time_to_accuracy(history, target)
    updates = time_to_accuracy(history, target, "client_updates")
    return Reach(
        target=target,
        time=time,
        updates=None if updates is None else int(updates),
        ends_at=headline_accuracy >= target,
        fell_below=time is not None and headline_accuracy < target,
    )


@dataclass(frozen=True)
class RunRecord:
    """Every statistic of one finished run that a table reports. Values read from ``summary.json`` are
    kept as it holds them (a results.csv cell is written from them as they are); a statistic a run from
    before it existed lacks is None (``lost_updates``: 0)."""

    headline: float  # mean test accuracy of the last ``window`` evaluations (metrics.headline)
    window: int  # the evaluations the headline averages (logging.final_window)
    last: float  # test accuracy of the last evaluation alone
    best: float  # the best test accuracy of any evaluation
    val_selected: float | None  # test accuracy where validation accuracy was best (None: no val. split)
    late_rise: float | None  # validation accuracy's rise over the last fifth (metrics.late_rise)
    sim_time: float  # simulated time at the end of the budget
    equal_time: float  # the simulated time the run's seed is compared at (equal_times)
    acc_at_equal_time: float | None  # test accuracy of the last evaluation by then (None: none yet)
    to_target: Reach  # time and client updates to the target accuracy, and whether it ends there
    mean_staleness: float
    max_staleness: float | None  # the largest of the evaluation rows' max_staleness
    stale_updates: int | None
    dropped_updates: int | None
    lost_updates: int
    final_grad_norm_sq: float | None  # ‖∇L‖² of the global model at the last evaluation
    final_heterogeneity: float | None  # ν² at the last evaluation
    wall_time_s: float | None


def run_record(
    summary: Mapping[str, Any], history: Sequence[Mapping[str, Any]], equal_time: float, target: float
) -> RunRecord:
    """The :class:`RunRecord` of one finished run: its ``summary.json``, its evaluation rows (metrics.csv),
    the equal time of its seed and the target accuracy."""
    mean_last = headline({"summary": summary, "history": history})
    last_row = history[-1] if history else {}
    chosen = summary.get("val_selected_test_accuracy")
    if "val_selected_test_accuracy" not in summary:  # a run from before the summary held it
        kept = val_selected(history)
        chosen = None if kept is None else kept[0]
    staleness = (number(row.get("max_staleness")) for row in history)
    return RunRecord(
        headline=mean_last,
        window=int(summary.get("final_window", {}).get("evaluations", FINAL_WINDOW)),
        last=summary["final_test_accuracy"],
        best=summary["best_test_accuracy"],
        val_selected=chosen,
        late_rise=late_rise(history),
        sim_time=summary["sim_time"],
        equal_time=equal_time,
        acc_at_equal_time=accuracy_at(history, equal_time),
        to_target=reach(history, mean_last, target),
        mean_staleness=summary["mean_staleness"],
        max_staleness=max((v for v in staleness if v is not None and v == v), default=None),
        stale_updates=summary.get("stale_updates"),
        dropped_updates=summary.get("dropped_updates"),
        lost_updates=summary.get("lost_updates", 0),  # (runs from before availability existed)
        final_grad_norm_sq=number(last_row.get("grad_norm_sq")),
        final_heterogeneity=number(last_row.get("heterogeneity")),
        wall_time_s=summary.get("wall_time_s"),
    )


def equal_times(runs: Runs) -> dict[int, float]:
    """Per seed (in ascending order), the shortest simulated time any group's run of that seed took for
    its budget: where the groups' accuracies are compared at equal time.

    Example:
        >>> runs = {"afl": {0: {"summary": {"sim_time": 30.0}}, 1: {"summary": {"sim_time": 36.0}}},
        ...         "sync": {0: {"summary": {"sim_time": 90.0}}}}
        >>> equal_times(runs)
        {0: 30.0, 1: 36.0}
    """
    seeds = sorted({s for per_seed in runs.values() for s in per_seed})
    return {
        s: min(float(per_seed[s]["summary"]["sim_time"]) for per_seed in runs.values() if s in per_seed)
        for s in seeds
    }


def run_records(
    runs: Runs, equal_time: Mapping[int, float], target: float
) -> dict[str, dict[int, RunRecord]]:
    """The :class:`RunRecord` of every run, by group and seed as in ``runs``."""
    return {
        group: {
            seed: run_record(r["summary"], r["history"], equal_time[seed], target)
            for seed, r in per_seed.items()
        }
        for group, per_seed in runs.items()
    }


def number(value: Any) -> float | None:
    """A CSV cell as a number; None if empty (or absent).

    Example:
        >>> number("0.25"), number(""), number(None)
        (0.25, None, None)
    """
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
