"""The job function any executor runs: a client's data, batches and training turned from a plain
:class:`~afl.messages.ClientJob` into a plain :class:`~afl.messages.ClientResult`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler

from afl.client import OPTIMIZERS
from afl.client.module import ClientModule
from afl.client.trainer import _job, make_client_trainer, thread_trainer
from afl.messages import ClientJob, ClientResult, InjectedFault

if TYPE_CHECKING:
    from afl.client.callbacks import CallbackSpec


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
        # resolved here, in the driver: a worker process (Ray) need not have the plug-in that registered it
        self.optimizer = OPTIMIZERS.get(optimizer, "client.optimizer")
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.optimizer_reset = optimizer_reset
        self.callbacks = tuple(callbacks)

    def num_samples(self, client_id: int) -> int:
        return len(self.client_data[client_id][1])

    def __call__(self, job: ClientJob) -> ClientResult:
        if job.fault == "raise":
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
