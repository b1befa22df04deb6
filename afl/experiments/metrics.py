"""Finished runs read back (:func:`load_run`), and what a comparison reads off their evaluation rows: the
time to a target accuracy, the accuracy at a given time, and the mean and standard deviation over seeds.
Plain Python, no torch."""

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
    """The first ``key`` (sim_time or client_updates) at which test accuracy reached ``target``."""
    for row in history:
        if float(row["test_accuracy"]) >= target:
            return float(row[key])
    return None


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
