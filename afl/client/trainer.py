"""The client's Trainer: one per worker thread, made ready for each job instead of built again; and the
quieting of Lightning while client jobs run."""

from __future__ import annotations

import contextlib
import logging
import threading
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import lightning as L
import torch

from afl.client.device import Placement

try:  # the loops of a fit, to give a reused Trainer fresh ones (private: without them, a Trainer per job)
    from lightning.pytorch.loops.fit_loop import _FitLoop
    from lightning.pytorch.loops.training_epoch_loop import _TrainingEpochLoop
    from lightning.pytorch.trainer.states import TrainerState

    _REUSABLE = True
except ImportError:  # pragma: no cover - another Lightning release
    _REUSABLE = False


_job = threading.local()


class _QuietClientTrainers(logging.Filter):
    """Drops Lightning's INFO lines ("GPU available: ...") logged while a client job runs, and only then:
    a user's own Trainers in the same process still say everything."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not getattr(_job, "active", False)


for _name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
    logging.getLogger(_name).addFilter(_QuietClientTrainers())
# Warnings that are noise for short client jobs fed from in-memory tensors (narrowly matched).
warnings.filterwarnings("ignore", message=".*does not have many workers.*")
warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
warnings.filterwarnings("ignore", message=".*isinstance.treespec, LeafSpec.*")  # Lightning vs newer torch


@contextlib.contextmanager
def client_fit() -> Iterator[None]:
    """Around a client Trainer's fit: Lightning's INFO lines quieted (:class:`_QuietClientTrainers`), and
    grad enabled, then the caller's grad mode restored (Lightning's fit leaves grad enabled in its thread,
    which would leak into the server's thread under the serial executor)."""
    _job.active = True
    try:
        with torch.enable_grad():
            yield
    finally:
        _job.active = False


def thread_trainer(
    max_epochs: int, callbacks: Sequence[L.Callback] = (), placement: Placement | None = None
) -> L.Trainer:
    """This thread's client Trainer for ``placement``, made ready for a new fit with ``callbacks``: what
    :func:`make_client_trainer` would build, without building it again.

    Building a Trainer costs about 5 ms (a third of it scanning installed packages for Lightning plug-in
    callbacks), a tenth of a small client job. A finished Trainer gets, for the next job, what a new one
    would have: new fit and epoch loops (progress counters, the data), the job's callbacks and a new
    state, and under ``16-mixed`` a new gradient scaler (a reused one would start from the loss scale the
    thread's last job left); the rest (``should_stop``, connectors, logged results, strategy, optimizers)
    ``fit`` sets up again itself. A Trainer whose own callback list is not empty (plug-ins found in
    installed packages, which a new Trainer would create anew) is never reused, nor any if this Lightning
    release lacks the loops.
    """
    placement = placement or Placement()
    trainers: dict[tuple[int, Placement], L.Trainer] = _job.__dict__.setdefault("trainers", {})
    trainer = trainers.get((max_epochs, placement))
    if trainer is None or not _REUSABLE:
        trainer = make_client_trainer(max_epochs, callbacks, placement)
        own = [cb for cb in trainer.callbacks if all(cb is not c for c in callbacks)]  # type: ignore[attr-defined]
        if _REUSABLE and not own:
            trainers[max_epochs, placement] = trainer
        return trainer
    trainer.fit_loop = _FitLoop(trainer, min_epochs=None, max_epochs=max_epochs)
    trainer.fit_loop.epoch_loop = _TrainingEpochLoop(trainer, min_steps=None, max_steps=-1)
    trainer.callbacks = list(callbacks)  # type: ignore[attr-defined]
    trainer.state = TrainerState()  # (fit sets it, and clears should_stop, itself)
    precision: Any = trainer.strategy.precision_plugin
    if getattr(precision, "scaler", None) is not None:  # 16-mixed: a new loss scale, not the last job's
        precision.scaler = torch.amp.GradScaler(device=placement.device.type)
    return trainer


def make_client_trainer(
    max_epochs: int, callbacks: Sequence[L.Callback] = (), placement: Placement | None = None
) -> L.Trainer:
    """A Trainer that only trains, on ``placement`` (default: the CPU, 32-bit): no logger, checkpoints,
    progress bar, model summary or sanity check; ``callbacks`` are the job's own (``client.callbacks``,
    see :mod:`afl.client.callbacks`)."""
    return L.Trainer(
        **(placement or Placement()).trainer_kwargs(),
        max_epochs=max_epochs,
        callbacks=list(callbacks),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
    )
