"""Two runs' outputs compared: what must be identical between them, wall times aside."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import torch

from afl.experiments.outputs import VOLATILE_SUMMARY_KEYS


def summary(folder: Path) -> dict[str, Any]:
    """A run's summary.json without the keys that differ between identical runs (wall time, folder)."""
    saved = json.loads((Path(folder) / "summary.json").read_text())
    return {k: v for k, v in saved.items() if k not in VOLATILE_SUMMARY_KEYS}


def metrics(folder: Path) -> list[dict[str, str]]:
    """A run's metrics.csv rows without their wall time."""
    with (Path(folder) / "metrics.csv").open() as f:
        return [{k: v for k, v in row.items() if k != "wall_time"} for row in csv.DictReader(f)]


def updates(folder: Path) -> list[dict[str, str]]:
    """A run's updates.csv rows (one per arrival)."""
    with (Path(folder) / "updates.csv").open() as f:
        return list(csv.DictReader(f))


def assert_same_outputs(got: Path, want: Path, model: bool = True) -> None:
    """Two run folders hold the same results: metrics and updates (wall times aside), the summary and,
    with ``model``, the final model to the bit."""
    assert metrics(got) == metrics(want)
    assert (Path(got) / "updates.csv").read_text() == (Path(want) / "updates.csv").read_text()
    assert summary(got) == summary(want)
    if model:
        a = torch.load(Path(got) / "final_model.pt", weights_only=True)
        b = torch.load(Path(want) / "final_model.pt", weights_only=True)
        assert a.keys() == b.keys()
        for key, value in b.items():
            assert torch.equal(a[key], value), key
