"""What a comparison or a sweep will cost, before paying it (``--dry-run``): its runs, their client steps
(local mini-batch steps, the unit the work scales with) and a time estimate for this machine, from one
short calibration run of the first config."""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig


@dataclass
class Calibration:
    """A short run of a config on this machine: seconds per client step of its loop, the seconds a run
    spends besides (data, model, evaluation setup, outputs), and its data: training samples in all."""

    updates: int
    steps: int
    seconds_per_step: float
    setup_s: float
    train_samples: int
    val_fraction: float


def calibrate(cfg: DictConfig, updates: int | None = None) -> Calibration:
    """Run ``cfg`` for a few client updates (2 J, at least 10, at most its budget) in a temporary folder,
    without W&B or checkpoints, and time it."""
    from afl.experiments.run import run

    short = cfg.copy()
    n = updates or min(cfg.federation.max_updates, max(2 * cfg.federation.concurrency, 10))
    with tempfile.TemporaryDirectory() as tmp:
        short.federation.max_updates = n
        short.output_dir = str(Path(tmp) / "calibration")
        short.logging.wandb.mode = "disabled"
        short.logging.progress = False
        short.checkpoint.every = 0
        start = time.perf_counter()
        result = run(short)
        wall = time.perf_counter() - start
        samples = sum(json.loads((result.output_dir / "partition.json").read_text())["samples"])
    steps = max(1, sum(int(u.get("steps") or 0) for u in result.updates))
    loop = float(result.summary["wall_time_s"])
    return Calibration(n, steps, loop / steps, max(0.0, wall - loop), samples, cfg.dataset.val_fraction)


def client_steps(cfg: DictConfig, calibration: Calibration) -> int:
    """About how many local mini-batch steps a run of ``cfg`` trains: its updates × its local epochs ×
    the batches of a client of mean size (the calibration's training data, re-split as ``cfg`` says)."""
    total = calibration.train_samples / (1 - calibration.val_fraction) * (1 - cfg.dataset.val_fraction)
    per_client = total / cfg.partition.num_clients
    return (
        cfg.federation.max_updates * cfg.client.local_epochs * math.ceil(per_client / cfg.client.batch_size)
    )


def describe(groups: dict[str, Sequence[DictConfig]], calibration: Calibration, jobs: int = 1) -> str:
    """The dry run's lines: runs and client steps per group (e.g. selection, comparison), the calibration,
    the estimate."""
    runs = sum(len(c) for c in groups.values())
    steps = {name: sum(client_steps(c, calibration) for c in cfgs) for name, cfgs in groups.items()}
    seconds = sum(steps.values()) * calibration.seconds_per_step + runs * calibration.setup_s
    parts = ", ".join(f"{len(c)} of the {name}" for name, c in groups.items() if c)
    lines = [
        f"dry run: {runs} runs ({parts}); about {sum(steps.values()):,} client steps "
        "(local mini-batch steps)",
        f"calibration: a {calibration.updates}-update run of the first config here: "
        f"{calibration.seconds_per_step * 1e3:.2f} ms per client step, {calibration.setup_s:.1f} s per run "
        "besides",
        f"estimate: about {_duration(seconds)} with --jobs 1 on this machine"
        + (f" (--jobs {jobs}: up to {jobs}× sooner where the cores allow)" if jobs > 1 else "")
        + "; nothing was run or written besides the calibration",
    ]
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
