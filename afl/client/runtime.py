"""The job function any executor runs: a client's data, batches and training turned from a plain
:class:`~afl.messages.ClientJob` into a plain :class:`~afl.messages.ClientResult`."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from afl.client import OPTIMIZERS
from afl.client.compiled import CompiledSteps
from afl.client.device import Placement, is_out_of_memory, out_of_memory
from afl.client.module import ClientModule
from afl.client.trainer import client_fit, make_client_trainer, thread_trainer
from afl.messages import ClientJob, ClientResult, InjectedFault, inject_result_fault

if TYPE_CHECKING:
    from afl.client.callbacks import CallbackSpec


def shuffles(n: int, generator: torch.Generator, epochs: int) -> torch.Tensor:
    """``epochs`` shuffles of ``range(n)`` as torch's ``RandomSampler`` draws them from ``generator``
    (each pass draws a second permutation and keeps none of it), stacked: ``[epochs, n]``."""
    orders = []
    for _ in range(epochs):
        orders.append(torch.randperm(n, generator=generator))
        torch.randperm(n, generator=generator)  # RandomSampler's second draw per pass
    return torch.stack(orders) if orders else torch.empty(0, n, dtype=torch.int64)


class batch_loader:  # noqa: N801 - called like the function it replaced
    """Shuffled mini-batches of ``(x, y)``, gathered where ``x`` lives; every epoch's shuffle comes from
    ``seed`` alone.

    The shuffles of the first ``epochs`` epochs are drawn at once on the CPU and moved to ``x``'s device
    in one copy: no batch crosses the bus, nor any per-batch index. They are the permutations torch's
    ``RandomSampler`` draws with a generator seeded with ``seed`` (each pass draws a second permutation
    and keeps none of it; drawn here too, so the batches are those of earlier releases). Iterating more
    than ``epochs`` times draws the next shuffles then.

    Example:
        >>> batches = batch_loader(torch.arange(5.0), torch.arange(5), batch_size=2, seed=0)
        >>> len(batches), [len(y) for _, y in batches]
        (3, [2, 2, 1])
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int, epochs: int = 1) -> None:
        self.x, self.y, self.batch_size = x, y, batch_size
        self._generator = torch.Generator().manual_seed(seed)
        self._orders = self._draw(epochs).to(x.device)
        self._epoch = 0

    def _draw(self, epochs: int) -> torch.Tensor:
        return shuffles(len(self.y), self._generator, epochs)

    def __len__(self) -> int:
        return -(-len(self.y) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self._epoch >= len(self._orders):
            self._orders = torch.cat([self._orders, self._draw(1).to(self.x.device)])
        order = self._orders[self._epoch]
        self._epoch += 1
        for start in range(0, len(order), self.batch_size):
            index = order[start : start + self.batch_size]
            yield self.x[index], self.y[index]


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

    def to(self, device: torch.device) -> ClientShards:
        """The same shards with the data and the index array on ``device`` (one copy each; none if there)."""
        placed = copy.copy(self)
        placed.x, placed.y, placed.order = self.x.to(device), self.y.to(device), self.order.to(device)
        return placed

    def __getitem__(self, client_id: int) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        if not 0 <= client_id < len(self):
            raise IndexError(f"client {client_id} of {len(self)}")
        index = self.order[self.offsets[client_id] : self.offsets[client_id + 1]]
        return self.x[index], self.y[index]


class ClientRuntime:
    """Runs client jobs: holds every client's training tensors and how to build the model.

    Thread-safe: each call builds its own model (with ``compile_mode``: loads its thread's own), module
    and callbacks, and trains with its thread's own Trainer.

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
        placement: where jobs train (``trainer.*``, :mod:`afl.client.device`); the client data and the
            models are expected there (:meth:`on_device` puts them there).
        compile_mode: ``none`` (default): each job trains a new copy of the model, eagerly; else
            ``torch.compile``'s mode (``trainer.compile``): each worker thread trains its jobs on one model
            of its own whose training step is compiled once (:mod:`afl.client.compiled`).
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
        placement: Placement | None = None,
        compile_mode: str = "none",
    ) -> None:
        self.client_data = client_data
        self.placement = placement or Placement()
        self.reuse_trainer = reuse_trainer
        self.model_factory = model_factory
        self.num_classes = num_classes
        self.local_epochs = local_epochs
        self.batch_size = batch_size
        # resolved here, in the driver: a worker process (Ray) need not have the plug-in that registered it
        self.optimizer = OPTIMIZERS.get(optimizer, "client.optimizer")
        self.optimizer_name = optimizer
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.optimizer_reset = optimizer_reset
        self.callbacks = tuple(callbacks)
        self.compile_mode = compile_mode
        self.compiled = self._compiled_steps()

    def _compiled_steps(self, backend: str | None = None) -> CompiledSteps | None:
        """Per thread, a model of :attr:`model_factory`'s with its compiled training step (None:
        ``compile_mode`` none)."""
        if self.compile_mode == "none":
            return None
        return CompiledSteps(self.model_factory, self.compile_mode, self.batch_size, backend)

    def on_device(self) -> ClientRuntime:
        """This runtime with its client data and its models on :attr:`placement`'s device: the data moved
        once (a :class:`ClientShards` or anything with a ``to(device)``), the model moved once and copied
        on the device for every job. Where they are already, nothing is copied."""
        device = self.placement.device
        placed = copy.copy(self)
        data = self.client_data
        placed.client_data = data.to(device) if hasattr(data, "to") else data
        placed.model_factory = _ModelCopies(self.model_factory, device)
        # (the backend this runtime was built with: a Ray worker places the runtime in its own process)
        placed.compiled = placed._compiled_steps(self.compiled.backend if self.compiled else None)
        return placed

    def num_samples(self, client_id: int) -> int:
        return len(self.client_data[client_id][1])

    def __call__(self, job: ClientJob) -> ClientResult:
        if job.fault == "raise":
            raise InjectedFault.of(job)
        try:
            with self.placement.stream():
                return self._train(job)
        except Exception as err:
            if is_out_of_memory(err):
                hint = (
                    "lower client.batch_size or federation.workers (jobs training at once), use a smaller "
                    "model, or trainer.precision=bf16-mixed"
                )
                raise out_of_memory(err, job.job_id, job.client_id, self.placement.device, hint) from err
            raise

    def _train(self, job: ClientJob) -> ClientResult:
        x, y = self.client_data[job.client_id]
        step = None
        if self.compiled is None:
            model = self.model_factory()
            model.load_state_dict(job.state)
        else:  # this thread's own model, compiled once, holding the job's weights
            model, step = self.compiled(job.state)
        module = ClientModule(
            model,
            num_classes=self.num_classes,
            lr=job.lr,
            optimizer=self.optimizer,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            epoch_lrs=job.epoch_lrs,
            optimizer_reset=self.optimizer_reset,
            train_step=step,
        )
        callbacks = [spec.make(job) for spec in self.callbacks]
        with client_fit():
            make = thread_trainer if self.reuse_trainer else make_client_trainer
            trainer = make(self.local_epochs, callbacks, self.placement)
            trainer.fit(module, batch_loader(x, y, self.batch_size, job.seed, self.local_epochs))
        state = self.placement.hand_over({k: v.detach().clone() for k, v in model.state_dict().items()})
        inject_result_fault(job, state)
        return ClientResult(
            job_id=job.job_id,
            client_id=job.client_id,
            state=state,
            num_samples=len(y),
            steps=trainer.global_step,
            train_loss=module.mean_train_loss(),
            train_accuracy=float(module.train_accuracy.compute()),
            metrics={k: v for spec, cb in zip(self.callbacks, callbacks) for k, v in spec.report(cb).items()},
        )


class _ModelCopies:
    """Fresh models on ``device``: one from ``factory``, moved there once, when the runtime is placed (not
    in a job); then copies of it made on the device (the factory's models are copies of one untrained
    model: no random draws)."""

    def __init__(self, factory: Callable[[], nn.Module], device: torch.device) -> None:
        self._model = factory().to(device)

    def __call__(self) -> nn.Module:
        return copy.deepcopy(self._model)
