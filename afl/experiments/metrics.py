"""Finished runs read back (:func:`load_run`), and what a comparison reads off their evaluation rows: the
time to a target accuracy, the accuracy at a given time, the mean and standard deviation over seeds, and
Student's t intervals of a mean and of paired differences between arms. Plain Python (and scipy's t
quantiles), no torch."""

from __future__ import annotations

import csv
import json
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def time_to_accuracy(
    history: Sequence[Mapping[str, Any]], target: float, key: str = "sim_time"
) -> float | None:
    """The first ``key`` (sim_time, or client_updates: an integer) at which test accuracy reached
    ``target``."""
    for row in history:
        if float(row["test_accuracy"]) >= target:
            return int(float(row[key])) if key == "client_updates" else float(row[key])
    return None


#: Evaluations averaged for a run's headline accuracy (``logging.final_window``): near a plateau one
#: evaluation swings more than the differences between rules (consecutive ones differ by up to 0.05 on
#: Fashion-MNIST), so tables rank by the mean of the last few, never by the last alone.
FINAL_WINDOW = 5


def final_mean(
    history: Sequence[Mapping[str, Any]], window: int = FINAL_WINDOW, key: str = "test_accuracy"
) -> tuple[float, int, int]:
    """The mean of ``key`` over the last ``window`` evaluations after update 0 (all of them if fewer),
    and the client updates of the first and last evaluation it covers.

    Example:
        >>> points = [(0, 0.1), (10, 0.6), (20, 0.8), (30, 0.7)]
        >>> rows = [{"client_updates": u, "test_accuracy": a} for u, a in points]
        >>> final_mean(rows, window=2)
        (0.75, 20, 30)
    """
    rows = [r for r in history if float(r["client_updates"]) > 0] or list(history)
    tail = rows[-max(1, window) :]
    mean = statistics.fmean(float(r[key]) for r in tail)
    return mean, int(float(tail[0]["client_updates"])), int(float(tail[-1]["client_updates"]))


def val_selected(history: Sequence[Mapping[str, Any]]) -> tuple[float, int] | None:
    """The test accuracy of the evaluation with the best validation accuracy (the first of equals), and
    its client updates: the model a practitioner would keep, chosen without the test set. None without
    a validation split."""
    rows = [
        r
        for r in history
        if r.get("val_accuracy") not in (None, "") and float(r["val_accuracy"]) == float(r["val_accuracy"])
    ]
    if not rows:
        return None
    best = max(rows, key=lambda r: float(r["val_accuracy"]))
    return float(best["test_accuracy"]), int(float(best["client_updates"]))


def headline(run: Mapping[str, Any]) -> float:
    """A finished run's headline accuracy (``{summary, history}``): its summary's
    ``final_mean_test_accuracy``, or, for a run from before it existed, the same from its rows."""
    saved = run["summary"].get("final_mean_test_accuracy")
    return float(saved) if saved is not None else final_mean(run["history"])[0]


#: The plateau rule of a budget: a run has levelled off when its validation accuracy (the mean of the
#: last ``FINAL_WINDOW`` evaluations) rose by less than this over the last fifth of its client updates.
PLATEAU_RISE = 0.005


def late_rise(
    history: Sequence[Mapping[str, Any]], window: int = FINAL_WINDOW, key: str = "val_accuracy"
) -> float | None:
    """How much ``key`` rose over the last fifth of the run: the mean of its last ``window`` evaluations
    minus the mean of the ``window`` evaluations up to 80% of the run's client updates. Under
    :data:`PLATEAU_RISE` the budget reached a plateau; above it, more updates would still pay. None
    without the key (no validation split) or with too few evaluations (fewer than 2 × ``window``).

    Example:
        >>> rows = [{"client_updates": 10 * i, "val_accuracy": min(0.8, 0.1 * i)} for i in range(21)]
        >>> round(late_rise(rows, window=2), 3)  # flat at 0.8 from update 80 on: no rise at the end
        0.0
        >>> rows = [{"client_updates": 10 * i, "val_accuracy": 0.01 * i} for i in range(21)]
        >>> round(late_rise(rows, window=2), 3)  # still climbing 0.01 an evaluation
        0.04
    """
    rows = [
        r
        for r in history
        if float(r["client_updates"]) > 0 and r.get(key) not in (None, "") and float(r[key]) == float(r[key])
    ]
    if len(rows) < 2 * window:
        return None
    cut = 0.8 * float(rows[-1]["client_updates"])
    early = [r for r in rows if float(r["client_updates"]) <= cut][-window:]
    if len(early) < window:
        return None
    return statistics.fmean(float(r[key]) for r in rows[-window:]) - statistics.fmean(
        float(r[key]) for r in early
    )


def up_to(history: Sequence[Mapping[str, Any]], budget: int) -> list[Mapping[str, Any]]:
    """The evaluation rows of a run as if its budget had been ``budget`` client updates: a run's rules do
    not depend on its budget (no schedule looks ahead), so a longer run holds every shorter one."""
    return [r for r in history if float(r["client_updates"]) <= budget]


def plateau_budget(rises: Mapping[int, float | None]) -> int | None:
    """The plateau rule's budget: the smallest budget at which the late rise (:func:`late_rise` of the run
    cut there) is under :data:`PLATEAU_RISE` and is so again at the next budget measured: a single flat
    stretch followed by more rise does not count, and neither does the largest budget alone. None if no
    budget qualifies.

    Example:
        >>> plateau_budget({300: 0.021, 600: 0.003, 900: 0.007, 1200: 0.004, 1500: -0.002})
        1200
        >>> plateau_budget({300: 0.021, 600: 0.009, 900: 0.001}) is None
        True
    """
    ordered = sorted(rises.items())
    levelled = [rise is not None and rise < PLATEAU_RISE for _, rise in ordered]
    return next((b for i, (b, _) in enumerate(ordered[:-1]) if levelled[i] and levelled[i + 1]), None)


def accuracy_at(history: Sequence[Mapping[str, Any]], sim_time: float) -> float | None:
    """Test accuracy of the last evaluation at or before ``sim_time`` (None before the first)."""
    value = None
    for row in history:
        if float(row["sim_time"]) <= sim_time + 1e-9:
            value = float(row["test_accuracy"])
    return value


def mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None, int]:
    """Mean and sample standard deviation of the values that are not None, and how many there were."""
    present = [float(v) for v in values if v is not None]
    if not present:
        return None, None, 0
    std = statistics.stdev(present) if len(present) > 1 else 0.0
    return statistics.fmean(present), std, len(present)


#: The confidence level of every interval in the tables.
LEVEL = 0.95


def interval(values: Sequence[float | None], level: float = LEVEL) -> tuple[float | None, float | None, int]:
    """The mean of the values that are not None, the half-width of its Student's t interval at ``level``
    (n − 1 degrees of freedom: the seeds are few and their spread unknown; None for fewer than two), and
    how many values there were.

    Example:
        >>> mean, half, n = interval([0.80, 0.84, 0.82])
        >>> round(mean, 3), round(half, 4), n
        (0.82, 0.0497, 3)
    """
    from scipy.stats import t

    mean, std, n = mean_std(values)
    if mean is None or n < 2 or std is None:
        return mean, None, n
    return mean, float(t.ppf(0.5 + level / 2, n - 1)) * std / n**0.5, n


def paired(
    arm: Mapping[int, float], other: Mapping[int, float], level: float = LEVEL
) -> dict[str, Any] | None:
    """``arm − other`` seed by seed over the seeds both ran (same seed: same partition, speeds and
    clock), with the t interval of its mean: ``{mean, half, n, diffs}`` (``half`` None for one seed).
    Pairing removes what the seed does to both arms, so the interval is narrower than the difference
    of two unpaired means' intervals. None when no seed is shared.

    Example:
        >>> d = paired({0: 0.85, 1: 0.80, 2: 0.90}, {0: 0.82, 1: 0.78, 2: 0.86})
        >>> round(d["mean"], 3), [round(x, 2) for x in d["diffs"]], d["half"] < 0.03
        (0.03, [0.03, 0.02, 0.04], True)
    """
    seeds = sorted(set(arm) & set(other))
    if not seeds:
        return None
    diffs = [float(arm[s]) - float(other[s]) for s in seeds]
    mean, half, n = interval(diffs, level)
    return {"mean": mean, "half": half, "n": n, "diffs": diffs, "seeds": seeds}


def verdict(difference: Mapping[str, Any] | None) -> str:
    """``above``/``below`` where the interval of a paired difference excludes 0, ``tie`` where it holds
    0, ``—`` with fewer than two seeds (no interval) or nothing to compare.

    Example:
        >>> verdict({"mean": 0.03, "half": 0.01}), verdict({"mean": -0.03, "half": 0.05})
        ('above', 'tie')
    """
    if difference is None or difference.get("half") is None:
        return "—"
    low, high = difference["mean"] - difference["half"], difference["mean"] + difference["half"]
    return "above" if low > 0 else "below" if high < 0 else "tie"


FAILED = "FAILED"  # written in the run folder, with the error, when a started run raises


def load_run(output_dir: str | Path) -> tuple[dict[str, Any], list[dict[str, str]], Any]:
    """Read a finished run's ``summary.json``, ``metrics.csv`` rows and ``config.yaml``."""
    from omegaconf import OmegaConf

    out = Path(output_dir)
    if (out / FAILED).is_file():
        raise FileNotFoundError(f"{out} is a failed run: {(out / FAILED).read_text().strip()}")
    missing = [f for f in ("summary.json", "metrics.csv", "config.yaml") if not (out / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{out} is not a finished run folder (missing {', '.join(missing)})")
    with (out / "metrics.csv").open() as f:
        history = list(csv.DictReader(f))
    return json.loads((out / "summary.json").read_text()), history, OmegaConf.load(out / "config.yaml")


#: What a finished comparison or sweep keeps under version control (``--keep``): every file but these
#: (models, checkpoints, W&B's folders and the figures, which the tables and the runs' rows redraw).
HEAVY = ("final_model.pt", "checkpoint.pt", "dashboard.json", "*.png", "*.pdf", "*.svg")


def keep(source: str | Path, dest: str | Path) -> list[Path]:
    """Copy a comparison's or sweep's folder to ``dest`` without its heavy files (:data:`HEAVY`, W&B's
    ``wandb/`` folders): ``summary.json``, ``metrics.csv``, ``updates.csv``, ``config.yaml``,
    ``partition.json`` per finished run and the tables. ``afl-compare --from DEST`` and ``afl-sweep NAME
    --results --out DEST`` read a finished one back, and running the comparison or sweep into ``DEST``
    continues it: a comparison stopped part-way (its ``plan.json``, no table yet) is kept too, without the
    runs that had not finished (they run again). A run's ``output_dir`` (in its ``summary.json`` and
    ``config.yaml``) is rewritten to where its copy is. Files already in ``dest`` are replaced. Returns the
    files written.

    Raises:
        FileNotFoundError: ``source`` holds no comparison.json, sweep.json or plan.json.
    """
    import fnmatch
    import shutil

    source, dest = Path(source), Path(dest)
    if not any((source / f).is_file() for f in ("comparison.json", "sweep.json", "plan.json")):
        raise FileNotFoundError(
            f"{source} is not a comparison or sweep (no comparison.json, sweep.json or plan.json)"
        )
    written = []
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        if not path.is_file() or "wandb" in relative.parts:
            continue
        if any(fnmatch.fnmatch(path.name, pattern) for pattern in HEAVY):
            continue
        if (path.parent / "config.yaml").is_file() and not (path.parent / "summary.json").is_file():
            continue  # a run that had not finished: it runs again when the comparison continues
        target = dest / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
        written.append(target)
    for summary in (p for p in written if p.name == "summary.json"):  # output_dir: where the copy is
        ran = str(json.loads(summary.read_text())["output_dir"])
        for kept in (summary, summary.with_name("config.yaml")):
            if kept.is_file():
                kept.write_text(kept.read_text().replace(ran, str(summary.parent)))
    return written
