"""Client-side training: a LightningModule around any model, a cheap Trainer (one per worker thread, made
ready for each job), and the job function that turns a plain job description into a plain result (so any
executor can run it)."""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import lightning as L
import numpy as np
import torch
import torchmetrics
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler

# declared there (light) so the config lists names without torch
from afl.components import OPTIMIZER_RESETS, OPTIMIZERS

try:  # the loops of a fit, to give a reused Trainer fresh ones (private: without them, a Trainer per job)
    from lightning.pytorch.loops.fit_loop import _FitLoop
    from lightning.pytorch.loops.training_epoch_loop import _TrainingEpochLoop
    from lightning.pytorch.trainer.states import TrainerState

    _REUSABLE = True
except ImportError:  # pragma: no cover - another Lightning release
    _REUSABLE = False

if TYPE_CHECKING:
    from afl.client_callbacks import CallbackSpec

State = dict[str, torch.Tensor]


@OPTIMIZERS.register("adam")
def _adam(
    params: Iterable[nn.Parameter], *, lr: float, momentum: float, weight_decay: float
) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)  # momentum: Adam's own betas


@OPTIMIZERS.register("sgd")
def _sgd(
    params: Iterable[nn.Parameter], *, lr: float, momentum: float, weight_decay: float
) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


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


class ClientModule(L.LightningModule):
    """Local training of one client: cross-entropy, Adam (default) or SGD at the LR the server handed
    out, with torchmetrics tracking the loss and accuracy over the whole job.

    Two rules of the code released with the paper (``Ali-Forootani/AFL_non_convex_non_iid``,
    ``src/async_fdl_fashion_mnist_delay_track_lr_non_iid.py`` lines 247-248, commit d9a5d21, which builds
    a new Adam at ``γ0 / (sqrt(e + 1) (1 + α τ))`` at the start of every local epoch ``e``):

    * ``epoch_lrs``: the rate of each local epoch, set on the optimizer when the epoch starts (None:
      ``lr`` throughout);
    * ``optimizer_reset="epoch"``: the optimizer's state (Adam's moments and step count, SGD's momentum)
      is cleared when every epoch after the first starts: the same steps as a new optimizer per epoch.
      ``"job"`` (default): one optimizer for the whole job.

    Example:
        >>> from afl.models import PaperCNN
        >>> module = ClientModule(PaperCNN(1, 10), num_classes=10, lr=1e-3)
        >>> module.lr
        0.001
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        num_classes: int,
        lr: float,
        optimizer: str = "adam",
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        epoch_lrs: Sequence[float] | None = None,
        optimizer_reset: str = "job",
    ) -> None:
        super().__init__()
        if optimizer_reset not in OPTIMIZER_RESETS:
            allowed = ", ".join(OPTIMIZER_RESETS)
            raise ValueError(f"optimizer_reset must be one of {allowed}, got {optimizer_reset!r}")
        self.make_optimizer = OPTIMIZERS.get(optimizer, "client.optimizer")
        self.model = model
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.epoch_lrs = None if epoch_lrs is None else list(epoch_lrs)
        self.optimizer_reset = optimizer_reset
        self.train_loss = torchmetrics.MeanMetric()
        self.train_accuracy = torchmetrics.classification.MulticlassAccuracy(num_classes, average="micro")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self.model(x)
        loss = nn.functional.cross_entropy(logits, y)
        self.train_loss.update(loss.detach(), weight=len(y))
        self.train_accuracy.update(logits.detach(), y)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.make_optimizer(
            self.model.parameters(), lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay
        )

    def on_train_epoch_start(self) -> None:
        epoch = self.current_epoch
        for optimizer in self.trainer.optimizers:
            if self.optimizer_reset == "epoch" and epoch > 0:
                optimizer.state.clear()  # a new optimizer: its state is created again at the next step
            if self.epoch_lrs is not None:
                for group in optimizer.param_groups:
                    group["lr"] = self.epoch_lrs[epoch]  # one rate per local epoch


def thread_trainer(max_epochs: int, callbacks: Sequence[L.Callback] = ()) -> L.Trainer:
    """This thread's client Trainer, made ready for a new fit with ``callbacks``: what
    :func:`make_client_trainer` would build, without building it again.

    Building a Trainer costs about 5 ms (a third of it scanning installed packages for Lightning plug-in
    callbacks), a tenth of a small client job. A finished Trainer gets, for the next job, what a new one
    would have: new fit and epoch loops (progress counters, the data), the job's callbacks and a new
    state; the rest (``should_stop``, connectors, logged results, strategy, optimizers) ``fit`` sets up
    again itself. A Trainer whose own callback list is not empty (plug-ins found in installed packages, which
    a new Trainer would create anew) is never reused, nor any if this Lightning release lacks the loops.
    """
    trainers: dict[int, L.Trainer] = _job.__dict__.setdefault("trainers", {})
    trainer = trainers.get(max_epochs)
    if trainer is None or not _REUSABLE:
        trainer = make_client_trainer(max_epochs, callbacks)
        own = [cb for cb in trainer.callbacks if all(cb is not c for c in callbacks)]  # type: ignore[attr-defined]
        if _REUSABLE and not own:
            trainers[max_epochs] = trainer
        return trainer
    trainer.fit_loop = _FitLoop(trainer, min_epochs=None, max_epochs=max_epochs)
    trainer.fit_loop.epoch_loop = _TrainingEpochLoop(trainer, min_steps=None, max_steps=-1)
    trainer.callbacks = list(callbacks)  # type: ignore[attr-defined]
    trainer.state = TrainerState()  # (fit sets it, and clears should_stop, itself)
    return trainer


def make_client_trainer(max_epochs: int, callbacks: Sequence[L.Callback] = ()) -> L.Trainer:
    """A Trainer that only trains: no logger, checkpoints, progress bar, model summary or sanity check;
    ``callbacks`` are the job's own (``client.callbacks``, see :mod:`afl.client_callbacks`)."""
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=max_epochs,
        callbacks=list(callbacks),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,
    )


class _TensorBatches(Dataset):
    """Whole batches sliced out of in-memory tensors: one gather per batch, no per-sample collation."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices)
        return self.x[idx], self.y[idx]


def batch_loader(x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int) -> DataLoader:
    """Shuffled mini-batches of ``(x, y)``; the shuffle of every epoch comes from ``seed`` alone.

    The loader gets a generator of its own too: without one, every new iterator draws its base seed from
    torch's global generator (shared by every thread of the process).
    """
    generator = torch.Generator().manual_seed(seed)
    sampler = BatchSampler(RandomSampler(range(len(y)), generator=generator), batch_size, drop_last=False)
    own = torch.Generator().manual_seed(seed)
    return DataLoader(_TensorBatches(x, y), sampler=sampler, batch_size=None, generator=own)


class ClientShards(Sequence[tuple[torch.Tensor, torch.Tensor]]):
    """Every client's training tensors, ``shards[c] == (x[parts[c]], y[parts[c]])``, gathered when asked
    for from the one copy of the training data.

    Nothing per client but its place in one index array: a tensor pair per client would cost a second
    copy of the data and about 1 KiB per client more (together 200 MiB at 100,000 clients of 4 samples).
    A job gathers its client's samples once (a copy of its shard, as before), then its batches from them.

    Example:
        >>> shards = ClientShards(torch.arange(5.0), torch.arange(5), [np.array([3, 4]), np.array([0])])
        >>> len(shards), shards[0], shards[1][1]
        (2, (tensor([3., 4.]), tensor([3, 4])), tensor([0]))
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, parts: Sequence[np.ndarray]) -> None:
        self.x, self.y = x, y
        order = np.concatenate(parts) if len(parts) else np.empty(0, dtype=np.int64)
        self.order = torch.as_tensor(order.astype(np.int64, copy=False))
        self.offsets = np.concatenate([[0], np.cumsum([len(p) for p in parts], dtype=np.int64)]).tolist()

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, client_id: int) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        if not 0 <= client_id < len(self):
            raise IndexError(f"client {client_id} of {len(self)}")
        index = self.order[self.offsets[client_id] : self.offsets[client_id + 1]]
        return self.x[index], self.y[index]


@dataclass
class ClientJob:
    """What crosses to an executor: everything a worker needs besides the client's data.

    Attributes:
        job_id: the dispatch index (unique, increasing).
        client_id: which client trains.
        state: the global model as dispatched (a private copy).
        lr: the learning rate for this job.
        seed: seed of this job's data shuffling.
        fault: an injected fault (``raise`` or ``nonfinite``, see :mod:`afl.sim.faults`), or None.
        previous_staleness: the staleness of this client's previous update (0 before its first): the delay
            the client knows at dispatch.
        round: the round at dispatch (client updates // J; the barrier round in sync mode).
        epoch_lrs: the rate of each local epoch when the LR schedule changes it within the job
            (``server.lr_schedule.decay_over=local_epoch``), else None: ``lr`` throughout.
    """

    job_id: int
    client_id: int
    state: State
    lr: float
    seed: int
    fault: str | None = None
    previous_staleness: int = 0
    round: int = 0
    epoch_lrs: list[float] | None = None

    @property
    def last_lr(self) -> float:
        """The rate of the job's last local epoch (``lr`` unless the rate changes per epoch)."""
        return self.epoch_lrs[-1] if self.epoch_lrs else self.lr


@dataclass
class ClientResult:
    """What comes back: the local model after training, what it cost, and what the job's callbacks
    measured (``metrics``, e.g. ``drift``)."""

    job_id: int
    client_id: int
    state: State
    num_samples: int
    steps: int
    train_loss: float
    train_accuracy: float
    metrics: dict[str, float] = field(default_factory=dict)


class ClientRuntime:
    """Runs client jobs: holds every client's training tensors and how to build the model.

    Thread-safe: each call builds its own model, module and callbacks, and trains with its thread's own
    Trainer.

    Args:
        client_data: per client, ``(x, y)`` tensors in memory (e.g. :class:`ClientShards`).
        model_factory: builds a fresh model of the run's architecture.
        num_classes: for the accuracy metric.
        local_epochs, batch_size, optimizer, momentum, weight_decay: local training settings.
        optimizer_reset: ``job`` (one optimizer per job) or ``epoch`` (its state cleared every local
            epoch; see :class:`ClientModule`).
        callbacks: the configured client callbacks; each job's Trainer gets fresh ones.
        reuse_trainer: train with this thread's Trainer (:func:`thread_trainer`), not a new one per job
            (the same results).
    """

    def __init__(
        self,
        client_data: Sequence[tuple[torch.Tensor, torch.Tensor]],
        model_factory: Callable[[], nn.Module],
        *,
        num_classes: int,
        local_epochs: int,
        batch_size: int,
        optimizer: str = "adam",
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        optimizer_reset: str = "job",
        callbacks: Sequence[CallbackSpec] = (),
        reuse_trainer: bool = True,
    ) -> None:
        self.client_data = client_data
        self.reuse_trainer = reuse_trainer
        self.model_factory = model_factory
        self.num_classes = num_classes
        self.local_epochs = local_epochs
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.optimizer_reset = optimizer_reset
        self.callbacks = tuple(callbacks)

    def num_samples(self, client_id: int) -> int:
        return len(self.client_data[client_id][1])

    def __call__(self, job: ClientJob) -> ClientResult:
        if job.fault == "raise":
            from afl.sim.faults import InjectedFault

            raise InjectedFault(f"injected fault in job {job.job_id} (client {job.client_id})")
        x, y = self.client_data[job.client_id]
        model = self.model_factory()
        model.load_state_dict(job.state)
        module = ClientModule(
            model,
            num_classes=self.num_classes,
            lr=job.lr,
            optimizer=self.optimizer,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            epoch_lrs=job.epoch_lrs,
            optimizer_reset=self.optimizer_reset,
        )
        callbacks = [spec.make(job) for spec in self.callbacks]
        _job.active = True
        try:
            # enable_grad restores the caller's grad mode on exit: Lightning's fit leaves grad enabled
            # in its thread, which would leak into the server's thread under the serial executor
            with torch.enable_grad():
                trainer = (thread_trainer if self.reuse_trainer else make_client_trainer)(
                    self.local_epochs, callbacks
                )
                trainer.fit(module, batch_loader(x, y, self.batch_size, job.seed))
        finally:
            _job.active = False
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if job.fault == "nonfinite":
            next(v for v in state.values() if v.is_floating_point()).fill_(float("nan"))
        return ClientResult(
            job_id=job.job_id,
            client_id=job.client_id,
            state=state,
            num_samples=len(y),
            steps=trainer.global_step,
            train_loss=float(module.train_loss.compute()),
            train_accuracy=float(module.train_accuracy.compute()),
            metrics={k: v for spec, cb in zip(self.callbacks, callbacks) for k, v in spec.report(cb).items()},
        )
