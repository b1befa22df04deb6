"""A run's folder and files (docs/outputs.md): the folder claimed, ``config.yaml``, ``partition.json``,
``metrics.csv`` as it goes, then ``summary.json``, ``updates.csv`` and ``final_model.pt``; and its W&B run.
:func:`~afl.experiments.metrics.load_run` reads a finished folder back."""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from afl import checkpoint
from afl.config import to_dict, to_yaml
from afl.data.partition import class_counts
from afl.errors import ConfigError
from afl.experiments.build import Setup
from afl.experiments.metrics import FAILED
from afl.sim.faults import REJECT_REASONS
from afl.sim.loop import LoopState
from afl.tracking import WandbTracker

METRIC_COLUMNS = (
    "client_updates",
    "version",
    "round",
    "sim_time",
    "wall_time",
    "test_loss",
    "test_accuracy",
    "val_loss",
    "val_accuracy",
    "mean_staleness",
    "max_staleness",
    "train_loss",
    "train_accuracy",
    "dropped_updates",
    "lost_updates",
    "rejected_updates",
    *(f"rejected_{reason}" for reason in REJECT_REASONS),
    "grad_norm_sq",
    "heterogeneity",
    "mean_drift",
    "max_drift",
    "server_lr",
)
# metrics.csv column -> W&B key (W&B groups charts by the prefix before "/")
WANDB_KEYS = {
    "test_loss": "test/loss",
    "test_accuracy": "test/accuracy",
    "val_loss": "val/loss",
    "val_accuracy": "val/accuracy",
    "mean_staleness": "staleness/mean",
    "max_staleness": "staleness/max",
    "train_loss": "train/loss",
    "train_accuracy": "train/accuracy",
    "staleness": "staleness/histogram",
    "grad_norm_sq": "theory/grad_norm_sq",
    "heterogeneity": "theory/heterogeneity",
    "mean_drift": "theory/mean_drift",
    "max_drift": "theory/max_drift",
    "server_lr": "server/lr",
    "version": "progress/version",
    "round": "progress/round",
    "wall_time": "progress/wall_time",
    "dropped_updates": "updates/dropped",
    "lost_updates": "updates/lost",
    "rejected_updates": "updates/rejected",
    **{f"rejected_{reason}": f"updates/rejected_{reason}" for reason in REJECT_REASONS},
}
#: summary.json keys that differ between two runs of one config (where and when it ran, its W&B run)
VOLATILE_SUMMARY_KEYS = ("wall_time_s", "output_dir", "wandb_run_id", "wandb_group")


def algorithm_name(cfg: DictConfig) -> str:
    """A run's aggregator, e.g. ``afl`` or ``fedavg`` (its arm, :mod:`afl.arms`, is what names the run)."""
    return str(cfg.server.aggregator.name)


def wandb_row(row: dict[str, Any]) -> dict[str, Any]:
    """An evaluation row as W&B keys (:data:`WANDB_KEYS`), its missing values (NaN) left out."""
    return {WANDB_KEYS.get(k, k): v for k, v in row.items() if finite(v)}


def csv_row(row: dict[str, Any]) -> dict[str, Any]:
    """An evaluation row for metrics.csv: a missing value (NaN: no update in the window yet) empty."""
    return {k: "" if not finite(v) else v for k, v in row.items()}


def claim_output_dir(cfg: DictConfig) -> Path:
    """The run's folder, created: ``output_dir`` (new or empty), or a fresh auto-named one claimed
    atomically (two runs started in the same second never share it)."""
    if cfg.output_dir is not None:
        out = Path(cfg.output_dir)
        blocking = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None)
        if blocking is not None:
            raise ConfigError("output_dir", f"{blocking} is a file, not a folder: choose another output_dir")
        if out.exists() and any(out.iterdir()):
            hint = (
                f"; to continue the run in it: resume={out}" if (out / checkpoint.CHECKPOINT).exists() else ""
            )
            raise ConfigError(
                "output_dir",
                f"{out} already exists and is not empty; runs are never "
                f"overwritten: choose another folder (or leave output_dir unset){hint}",
            )
        _mkdir(out, exist_ok=True)
        return out
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / cfg.experiment / f"{cfg.arm}-seed{cfg.seed}-{stamp}"
    for n in range(1, 10_000):
        out = base if n == 1 else base.with_name(f"{base.name}-{n}")
        try:
            _mkdir(out, exist_ok=False)  # the claim: mkdir fails if another run made it first
            return out
        except FileExistsError:
            continue
    raise ConfigError("output_dir", f"no free folder name next to {base}")


def _mkdir(out: Path, exist_ok: bool) -> None:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.mkdir(exist_ok=exist_ok)
    except FileExistsError:
        raise
    except OSError as err:
        raise ConfigError("output_dir", f"cannot create {out}: {err.strerror or err}") from None


def finite(value: Any) -> bool:
    return not (isinstance(value, float) and math.isnan(value))


def run_summary(
    setup: Setup, state: LoopState, history: list[dict[str, Any]], wall_time_s: float, out: Path
) -> dict[str, Any]:
    """summary.json of a finished run."""
    from afl.experiments.metrics import final_mean, time_to_accuracy, val_selected

    cfg, final = setup.cfg, history[-1]
    target = cfg.logging.target_accuracy
    window = cfg.logging.final_window
    mean, first, last = final_mean(history, window)
    chosen = val_selected(history)
    return {
        "experiment": cfg.experiment,
        "arm": cfg.arm,
        "algorithm": algorithm_name(cfg),
        "mode": cfg.federation.mode,
        "seed": cfg.seed,
        "dataset": cfg.dataset.name,
        "model": cfg.model.name,
        "num_classes": setup.data.num_classes,
        "num_parameters": setup.num_parameters,
        # the headline: the mean over the last logging.final_window evaluations (docs/outputs.md)
        "final_mean_test_accuracy": mean,
        "final_window": {"evaluations": window, "from_update": first, "to_update": last},
        "final_test_accuracy": final["test_accuracy"],  # the last evaluation alone
        "final_test_loss": final["test_loss"],
        # the test accuracy of the evaluation with the best validation accuracy (with a validation split)
        "val_selected_test_accuracy": None if chosen is None else chosen[0],
        "val_selected_update": None if chosen is None else chosen[1],
        "best_test_accuracy": max(r["test_accuracy"] for r in history),
        "final_val_accuracy": final.get("val_accuracy"),
        "best_val_accuracy": max(r["val_accuracy"] for r in history) if setup.val is not None else None,
        "val_samples": 0 if setup.val is None else len(setup.val),
        "client_updates": state.client_updates,
        "version": state.version,
        "rounds": final["round"],
        "sim_time": state.clock,
        "mean_staleness": sum(a["staleness"] for a in state.arrivals) / max(len(state.arrivals), 1),
        "dropped_updates": state.dropped_updates,
        "lost_updates": state.lost_updates,
        "stale_updates": state.stale_updates,
        "rejected_updates": sum(state.rejected.values()),
        "rejected_by_reason": dict(state.rejected),
        "target_accuracy": target,  # logging.target_accuracy; the first evaluation that reached it:
        "time_to_target": None if target is None else time_to_accuracy(history, target),
        "updates_to_target": None if target is None else time_to_accuracy(history, target, "client_updates"),
        "wall_time_s": wall_time_s,
        "output_dir": str(out),
    }


class RunWriter:
    """Owns a run folder's files. On entry: the folder, ``config.yaml``, ``partition.json`` and the header
    of ``metrics.csv`` (one row per evaluation, flushed as it comes); :meth:`finish` adds
    ``summary.json``, ``updates.csv`` and ``final_model.pt`` and removes the checkpoint. If the run
    raises, the folder gets a ``FAILED`` file with the error and no ``summary.json``.

    Resuming (``history`` = the checkpoint's evaluation rows): ``config.yaml`` and ``partition.json`` stay
    as the run wrote them, ``FAILED`` goes, and ``metrics.csv`` is rewritten with the checkpoint's rows
    (rows written after the checkpoint, before the crash, are dropped: the run computes them again).
    """

    def __init__(
        self, out: Path, cfg: DictConfig, setup: Setup, history: Sequence[dict[str, Any]] = ()
    ) -> None:
        self.out, self.cfg, self.setup, self.history = out, cfg, setup, history
        self._csv: Any = None
        self._rows: csv.DictWriter[str] | None = None

    def __enter__(self) -> RunWriter:
        out, setup, p = self.out, self.setup, self.cfg.partition  # out: claimed by claim_output_dir
        if self.cfg.resume is None:
            (out / "config.yaml").write_text(to_yaml(self.cfg))
            labels = setup.train.y.numpy()
            (out / "partition.json").write_text(
                json.dumps(
                    {
                        "scheme": p.scheme,
                        "num_clients": p.num_clients,
                        "alpha": p.alpha,
                        "samples": [int(len(ix)) for ix in setup.parts],
                        "class_counts": class_counts(labels, setup.parts, setup.data.num_classes),
                    },
                    indent=1,
                )
            )
        (out / FAILED).unlink(missing_ok=True)
        self._csv = (out / "metrics.csv").open("w", newline="")
        self._rows = csv.DictWriter(self._csv, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
        self._rows.writeheader()
        self._rows.writerows(csv_row(r) for r in self.history)
        self._csv.flush()
        return self

    def write_row(self, row: dict[str, Any]) -> None:
        assert self._rows is not None, "use RunWriter as a context manager"
        self._rows.writerow(csv_row(row))
        self._csv.flush()

    def finish(self, summary: dict[str, Any], state: LoopState) -> None:
        with (self.out / "updates.csv").open("w", newline="") as f:
            # every key of any row: a rejected update has no callback metrics (its cells stay empty)
            updates = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for a in state.arrivals for k in a)))
            updates.writeheader()
            updates.writerows(state.arrivals)
        torch.save(state.global_state, self.out / "final_model.pt")
        (self.out / "summary.json").write_text(json.dumps(summary, indent=1))  # last: marks the run complete
        for name in (checkpoint.CHECKPOINT, checkpoint.CHECKPOINT + ".tmp"):  # nothing left to resume
            (self.out / name).unlink(missing_ok=True)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if self._csv is not None:
            self._csv.close()
        if exc is not None:  # a run that raised is marked failed, never looking complete
            (self.out / "summary.json").unlink(missing_ok=True)
            (self.out / FAILED).write_text(f"{type(exc).__name__}: {exc}\n")


def wandb_group(cfg: DictConfig) -> str:
    """A run's W&B group: ``logging.wandb.group`` (a comparison's or sweep's own), else the experiment."""
    return str(cfg.logging.wandb.group or cfg.experiment)


def run_tags(cfg: DictConfig) -> list[str]:
    """A run's W&B tags: the config's, the experiment, and the reading of the paper's AFL it runs."""
    from afl.arms import tags

    return list(dict.fromkeys([*cfg.logging.wandb.tags, f"experiment:{cfg.experiment}", *tags(cfg.arm)]))


def tracker(cfg: DictConfig, out: Path, run_id: str | None = None) -> WandbTracker:
    """The W&B run of a training run: job type = its arm, name = ``ARM-seedS``."""
    return WandbTracker(
        mode=cfg.logging.wandb.mode,
        project=cfg.logging.wandb.project,
        entity=cfg.logging.wandb.entity,
        group=wandb_group(cfg),
        job_type=str(cfg.arm),
        name=f"{cfg.arm}-seed{cfg.seed}",
        config=to_dict(cfg),
        dir=out,
        tags=run_tags(cfg),
        run_id=run_id,
    )
