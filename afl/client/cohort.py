"""Cohort training: many client jobs trained together, as one vectorized model, in one Lightning Trainer.

The jobs' models are stacked along a leading client axis and run with ``torch.func`` (``functional_call``
under ``vmap``); one optimizer step over the stacked tensors is J independent optimizers, because Adam
and SGD act element by element (:class:`StackedOptimizer` keeps a learning rate, a step count and a
state per client). Each job sees exactly what it would see alone (:func:`cohort_schedule`):

* its own batches, in its own shuffle order (the job's seed);
* its own learning rate, changed at its own epoch starts (``epoch_lrs``), its optimizer state cleared
  at its own epoch starts (``optimizer_reset="epoch"``);
* its own number of steps: a client whose batches are used up sits out the remaining steps, and nothing
  of it moves (parameters, running statistics, Adam's moments and step count);
* no padding: at a step, the clients whose batches have the same size are one vectorized group (the
  last partial batches form groups of their own), so nothing foreign enters a loss or BatchNorm's
  statistics.

The results equal a thread executor's within float rounding (a vectorized convolution is a grouped one,
summed in another order): ``tests/unit/client/test_cohort.py`` holds each job as close to the same job
computed in float64 as the thread executor's (docs/cohort.md).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import lightning as L
import torch
from torch import nn
from torch.func import functional_call, vmap

from afl.client import COHORT_OPTIMIZERS
from afl.client.device import Placement, is_out_of_memory, out_of_memory
from afl.client.runtime import shuffles
from afl.client.trainer import client_fit, thread_trainer
from afl.messages import ClientJob, ClientResult, InjectedFault, inject_result_fault

if TYPE_CHECKING:
    from afl.client.runtime import ClientRuntime


@dataclass
class Group:
    """The clients of one step whose batches have one size: trained as one vectorized call.

    Attributes:
        clients: their places in the cohort, ``[G]`` (None: every client of the cohort, in order).
        members: the same places as Python ints (for the host's bookkeeping).
        index: ``[G, b]``, each client's batch as rows of the cohort's data.
    """

    clients: torch.Tensor | None
    members: list[int]
    index: torch.Tensor


@dataclass
class Step:
    """One optimizer step of the cohort: its groups, and the clients that start a local epoch with it
    (``epoch_starts``: ``(place, epoch)``, for the epoch's LR and the optimizer's reset)."""

    groups: list[Group]
    epoch_starts: list[tuple[int, int]]
    idle: torch.Tensor | None  # the places of the clients that sit the step out (None: none)


def cohort_schedule(
    sizes: Sequence[int], seeds: Sequence[int], batch_size: int, epochs: int
) -> tuple[list[list[tuple[list[int], torch.Tensor]]], list[list[tuple[int, int]]]]:
    """Every step of a cohort, on the host: per step, its groups ``(places, rows [G, b])`` and its epoch
    starts. Client ``i`` (``sizes[i]`` samples, rows ``offset_i .. offset_i + sizes[i]`` of the cohort's
    data) takes its batches in the order a :class:`~afl.client.runtime.batch_loader` seeded with
    ``seeds[i]`` gives them, one per step until its ``epochs`` passes are done.

    Example:
        >>> steps, starts = cohort_schedule([3, 2], [0, 1], batch_size=2, epochs=1)
        >>> [[(places, rows.shape[1]) for places, rows in groups] for groups in steps]
        [[([0, 1], 2)], [([0], 1)]]
        >>> starts
        [[(0, 0), (1, 0)], []]
    """
    offsets = [0]
    for n in sizes:
        offsets.append(offsets[-1] + n)
    batches = [math.ceil(n / batch_size) for n in sizes]
    orders = [shuffles(n, torch.Generator().manual_seed(seed), epochs) for n, seed in zip(sizes, seeds)]
    total = max((b * epochs for b in batches), default=0)
    steps: list[list[tuple[list[int], torch.Tensor]]] = []
    starts: list[list[tuple[int, int]]] = []
    for k in range(total):
        by_size: dict[int, list[tuple[int, torch.Tensor]]] = {}
        begin: list[tuple[int, int]] = []
        for place, b in enumerate(batches):
            if k >= b * epochs:
                continue
            epoch, i = divmod(k, b)
            if i == 0:
                begin.append((place, epoch))
            rows = orders[place][epoch, i * batch_size : (i + 1) * batch_size] + offsets[place]
            by_size.setdefault(len(rows), []).append((place, rows))
        groups = [
            ([place for place, _ in members], torch.stack([rows for _, rows in members]))
            for _, members in sorted(by_size.items(), key=lambda item: -item[0])
        ]
        steps.append(groups)
        starts.append(begin)
    return steps, starts


class StackedOptimizer(torch.optim.Optimizer):
    """Adam or SGD over parameters stacked along a leading client axis: J independent optimizers.

    Each client has its own learning rate (``lr``, a ``[J]`` tensor), step count and state; at a step,
    the clients in ``idle`` (their places, a tensor; None: none) do not move: their parameters and state
    stay as they are, bit for bit. :meth:`reset` gives some clients a new optimizer (their state
    cleared). The update of each client is torch's own ``Adam`` / ``SGD`` (``maximize``, ``amsgrad``,
    ``nesterov``, dampening and decoupled weight decay not supported: the client optimizers do not use
    them).
    """

    def __init__(
        self,
        params: Sequence[nn.Parameter],
        kind: str,
        lr: torch.Tensor,
        *,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        if kind not in COHORT_OPTIMIZERS:
            raise ValueError(f"kind must be one of {', '.join(COHORT_OPTIMIZERS)}, got {kind!r}")
        super().__init__(params, {"lr": 0.0})
        self.kind, self.momentum, self.weight_decay, self.betas, self.eps = (
            kind,
            momentum,
            weight_decay,
            betas,
            eps,
        )
        self.lr = lr.to(torch.float64)
        self.idle: torch.Tensor | None = None
        self.steps = torch.zeros_like(self.lr)  # per client, since its last reset

    def reset(self, places: Sequence[int]) -> None:
        """New optimizers for these clients: step count 0, moments (momentum buffers) 0."""
        index = torch.tensor(list(places), device=self.steps.device)
        self.steps[index] = 0
        for state in self.state.values():
            for value in state.values():
                value[index] = 0

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        if closure is not None:  # (Lightning's manual optimization passes one that does nothing)
            with torch.enable_grad():
                closure()
        idle = self.idle
        self.steps += 1
        if idle is not None:
            self.steps[idle] -= 1
        t = self.steps.clamp(min=1)  # (an idle client at 0 steps: its update is undone below)
        for p in self.param_groups[0]["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if not state:  # torch's initial state: zeros (a first SGD buffer 0·m + g is g itself)
                names = {
                    "adam": ("exp_avg", "exp_avg_sq"),
                    "sgd": ("momentum_buffer",) if self.momentum else (),
                }
                state.update({name: torch.zeros_like(p) for name in names[self.kind]})
            kept = None if idle is None else [x[idle].clone() for x in (p, *state.values())]
            self._update(p, state, t.view((-1,) + (1,) * (p.dim() - 1)))
            if kept is not None:  # the idle clients' rows, as they were: not a bit moved
                for tensor, rows in zip((p, *state.values()), kept):
                    tensor[idle] = rows

    def _update(self, p: torch.Tensor, state: dict[str, torch.Tensor], t: torch.Tensor) -> None:
        """torch's Adam or SGD step on ``p`` (in place; ``t``: each client's step count, broadcastable)."""
        assert p.grad is not None
        grad = p.grad if self.weight_decay == 0 else p.grad.add(p, alpha=self.weight_decay)
        lr = self.lr.view(t.shape)
        if self.kind == "adam":
            beta1, beta2 = self.betas
            m, v = state["exp_avg"], state["exp_avg_sq"]
            m.lerp_(grad, 1 - beta1)
            v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            step_size = (lr / (1 - beta1**t)).to(p.dtype)
            bc2_sqrt = ((1 - beta2**t) ** 0.5).to(p.dtype)
            denom = v.sqrt().div_(bc2_sqrt).add_(self.eps).div_(step_size)
            p.addcdiv_(m, denom, value=-1)
        else:
            if self.momentum != 0:
                grad = state["momentum_buffer"].mul_(self.momentum).add_(grad)
            p.addcmul_(grad, lr.to(p.dtype), value=-1)


# a cohort's parameter gradients are views of one flat gradient on purpose (CohortModule)
warnings.filterwarnings("ignore", message=".*do not obey the gradient layout contract.*")


class _Flat:
    """Entries of J models, each ``[J, *shape]``, kept in one ``[J, N]`` tensor (``flat``); :meth:`views`
    gives the entries as views of such a tensor, so that one operation on the flat tensor (a gather of
    some clients, an optimizer step) acts on every entry."""

    def __init__(self, named: Sequence[tuple[str, torch.Tensor]]) -> None:
        self.layout: list[tuple[str, int, int, torch.Size]] = []  # name, start, end, shape
        start = 0
        for name, value in named:
            self.layout.append((name, start, start + value[0].numel(), value.shape[1:]))
            start += value[0].numel()
        self.flat = torch.cat([value.reshape(len(value), -1) for _, value in named], 1)

    def views(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each entry as a view of ``flat`` (this flat tensor, rows of it, or one like it)."""
        return {name: flat[:, start:end].view(len(flat), *shape) for name, start, end, shape in self.layout}


class CohortModule(L.LightningModule):
    """The LightningModule of a cohort: the jobs' models stacked along a client axis around one model of
    the architecture, trained with manual optimization: per step, each group's loss per client
    (cross-entropy, the mean over its batch), their sum backward, one :class:`StackedOptimizer` step.
    Tracks each client's loss (weighted by batch size) and accuracy over its job, as a client's
    :class:`~afl.client.module.ClientModule` does.

    The parameters live in one ``[J, P]`` parameter (``flat``), its gradient in one ``[J, P]`` tensor: the
    optimizer's step is a handful of operations on the whole cohort, whatever the number of layers, and a
    group of some clients is one gather of the parameters. The
    parameters the model sees are views of ``flat`` made autograd leaves whose gradients are views of the
    flat gradient (backward accumulates into them in place)."""

    def __init__(
        self,
        model: nn.Module,
        states: Sequence[dict[str, torch.Tensor]],
        *,
        optimizer: str,
        lrs: Sequence[float],
        epoch_lrs: Sequence[Sequence[float] | None],
        optimizer_reset: str = "job",
        momentum: float = 0.0,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.model = model
        dtypes = {k: p.dtype for k, p in model.named_parameters()}
        if len(set(dtypes.values())) != 1:
            raise ValueError("a cohort trains models whose parameters share one dtype")
        self.param_names = list(dtypes)
        self.buffer_names = [k for k, _ in model.named_buffers()]
        stack = lambda k: torch.stack([s[k] for s in states])  # noqa: E731
        self._stacked_params = _Flat([(k, stack(k).to(dtypes[k])) for k in self.param_names])
        self.flat = nn.Parameter(self._stacked_params.flat)
        # buffers one tensor each: a batch-norm under vmap updates its running statistics through a reshape
        # of them, which must be a view (of a contiguous tensor), not a copy
        self._stacked_buffers = {k: stack(k) for k in self.buffer_names}
        self.kind, self.momentum, self.weight_decay = optimizer, momentum, weight_decay
        self.lrs, self.epoch_lrs, self.optimizer_reset = list(lrs), list(epoch_lrs), optimizer_reset
        self.loss_sum = torch.zeros(len(states), dtype=torch.float64, device=self.flat.device)
        self.correct = torch.zeros(len(states), dtype=torch.int64, device=self.flat.device)
        self.cohort_data = (torch.empty(0), torch.empty(0))  # the cohort's rows (x, y), set before a fit
        self._everyone: tuple[dict[str, torch.Tensor], torch.Tensor] | None = None

        def loss(
            params: dict[str, torch.Tensor],
            buffers: dict[str, torch.Tensor],
            x: torch.Tensor,
            y: torch.Tensor,
        ):
            logits = functional_call(self.model, (params, buffers), (x,))
            return nn.functional.cross_entropy(logits, y), (logits.argmax(-1) == y).sum()

        self._loss = vmap(loss)

    def _leaves(self, flat: torch.Tensor, grad: torch.Tensor) -> dict[str, torch.Tensor]:
        """The parameters as views of ``flat``, autograd leaves whose gradients are views of ``grad``."""
        leaves = self._stacked_params.views(flat.detach())
        for leaf, into in zip(leaves.values(), self._stacked_params.views(grad).values()):
            leaf.requires_grad_()
            leaf.grad = into
        return leaves

    def configure_optimizers(self) -> StackedOptimizer:
        lr = torch.tensor(self.lrs, dtype=torch.float64, device=self.flat.device)
        return StackedOptimizer(
            [self.flat], self.kind, lr, momentum=self.momentum, weight_decay=self.weight_decay
        )

    def training_step(self, step: Step, batch_idx: int) -> None:  # type: ignore[override]
        optimizer = self.optimizers()
        assert not isinstance(optimizer, list)
        inner: StackedOptimizer = optimizer.optimizer  # type: ignore[union-attr,assignment]
        for place, epoch in step.epoch_starts:
            if epoch > 0 and self.optimizer_reset == "epoch":
                inner.reset([place])
            rates = self.epoch_lrs[place]
            if rates is not None:
                inner.lr[place] = rates[epoch]
        if self._everyone is None:  # the whole cohort's leaves, and the flat gradient they fill
            grad = torch.zeros_like(self.flat)
            self._everyone = (self._leaves(self.flat, grad), grad)
            self.flat.grad = grad
        (params, grad), buffers = self._everyone, self._stacked_buffers
        grad.zero_()
        x, y = self.cohort_data
        total, scatter = None, []
        for group in step.groups:
            if group.clients is None:
                group_params, group_buffers = params, buffers
            else:  # the group's rows: one gather of the parameters, one per buffer
                group_buffers = {k: b[group.clients] for k, b in buffers.items()}
                group_grad = torch.zeros(
                    len(group.members), self.flat.shape[1], dtype=grad.dtype, device=grad.device
                )
                group_params = self._leaves(self.flat[group.clients], group_grad)
            losses, correct = self._loss(group_params, group_buffers, x[group.index], y[group.index])
            weighted = losses.detach().double() * group.index.shape[1]  # the loss summed over the batch
            if group.clients is not None:
                for k, b in buffers.items():  # the running statistics the forward updated
                    b[group.clients] = group_buffers[k]
                scatter.append((group.clients, group_grad))
                self.loss_sum.index_add_(0, group.clients, weighted)
                self.correct.index_add_(0, group.clients, correct)
            else:
                self.loss_sum += weighted
                self.correct += correct
            total = losses.sum() if total is None else total + losses.sum()
        assert total is not None
        self.manual_backward(total)
        for clients, group_grad in scatter:
            grad.index_add_(0, clients, group_grad)
        inner.idle = step.idle
        optimizer.step()

    def client_state(self, place: int, keys: Sequence[str]) -> dict[str, torch.Tensor]:
        """Client ``place``'s model as a state dict (copies), its entries in ``keys``' order."""
        tensors = self._stacked_params.views(self.flat.detach()) | self._stacked_buffers
        return {k: tensors[k][place].clone() for k in keys}


class _Steps:
    """The cohort's steps as Lightning's training data: the schedule's row indices moved to the device in
    one copy, then handed out as views, step by step."""

    def __init__(
        self,
        steps: list[list[tuple[list[int], torch.Tensor]]],
        starts: list[list[tuple[int, int]]],
        cohort: int,
        device: torch.device,
    ) -> None:
        flat = [rows.reshape(-1) for groups in steps for _, rows in groups]
        rows_all = torch.cat(flat).to(device) if flat else torch.empty(0, dtype=torch.int64, device=device)
        self.steps: list[Step] = []
        cursor = 0
        place_cache: dict[tuple[int, ...], torch.Tensor] = {}
        for groups, begin in zip(steps, starts):
            out = []
            members_all: list[int] = []
            for members, rows in groups:
                g, b = rows.shape
                index = rows_all[cursor : cursor + g * b].view(g, b)
                cursor += g * b
                clients = None
                if members != list(range(cohort)):
                    key = tuple(members)
                    if key not in place_cache:
                        place_cache[key] = torch.tensor(members, device=device)
                    clients = place_cache[key]
                out.append(Group(clients, members, index))
                members_all += members
            idle = None
            if len(members_all) < cohort:
                out_of_it = tuple(sorted(set(range(cohort)) - set(members_all)))
                if out_of_it not in place_cache:
                    place_cache[out_of_it] = torch.tensor(out_of_it, device=device)
                idle = place_cache[out_of_it]
            self.steps.append(Step(out, begin, idle))

    def __len__(self) -> int:
        return len(self.steps)

    def __iter__(self) -> Iterator[Step]:
        return iter(self.steps)


def train_cohort(runtime: ClientRuntime, jobs: Sequence[ClientJob]) -> list[ClientResult | Exception]:
    """Train ``jobs`` as one cohort with ``runtime``'s settings; per job, its result, or the exception
    the job raised (an injected ``raise`` fault: that job does not train)."""
    out: list[ClientResult | Exception | None] = [None] * len(jobs)
    trained = []
    for i, job in enumerate(jobs):
        if job.fault == "raise":
            out[i] = InjectedFault.of(job)
        else:
            trained.append(i)
    if trained:
        cohort = [jobs[i] for i in trained]
        try:
            with runtime.placement.stream():
                results = _train(runtime, cohort)
        except Exception as err:  # out of memory: the run's settings do not fit the machine (exit 3)
            if is_out_of_memory(err):
                hint = (
                    f"a cohort of {len(cohort)} jobs; lower cohort.max_clients (jobs trained at once) or "
                    "client.batch_size, use a smaller model, or trainer.precision=bf16-mixed"
                )
                first = cohort[0]
                raise out_of_memory(
                    err, first.job_id, first.client_id, runtime.placement.device, hint
                ) from err
            raise
        for i, result in zip(trained, results):
            out[i] = result
    return out  # type: ignore[return-value]


def _cohort_data(
    client_data: Any, client_ids: Sequence[int], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """The cohort's training rows, client after client (their tensors concatenated): ``(x, y, sizes)``."""
    parts = [client_data[c] for c in client_ids]
    sizes = [len(y) for _, y in parts]
    x = torch.cat([x for x, _ in parts]).to(device)
    y = torch.cat([y for _, y in parts]).to(device)
    return x, y, sizes


def _train(runtime: ClientRuntime, jobs: Sequence[ClientJob]) -> list[ClientResult]:
    placement: Placement = runtime.placement
    device = placement.device
    model = runtime.model_factory()
    keys = list(model.state_dict())
    x, y, sizes = _cohort_data(runtime.client_data, [job.client_id for job in jobs], device)
    steps, starts = cohort_schedule(
        sizes, [job.seed for job in jobs], runtime.batch_size, runtime.local_epochs
    )
    module = CohortModule(
        model,
        [{k: v.to(device) for k, v in job.state.items()} for job in jobs],
        optimizer=runtime.optimizer_name,
        lrs=[job.lr for job in jobs],
        epoch_lrs=[job.epoch_lrs for job in jobs],
        optimizer_reset=runtime.optimizer_reset,
        momentum=runtime.momentum,
        weight_decay=runtime.weight_decay,
    )
    module.cohort_data = (x, y)
    with client_fit():
        trainer = thread_trainer(1, (), placement)
        trainer.fit(module, _Steps(steps, starts, len(jobs), device))
    loss = module.loss_sum.cpu()
    correct = module.correct.cpu()
    batches = [math.ceil(n / runtime.batch_size) for n in sizes]
    results = []
    for place, job in enumerate(jobs):
        seen = sizes[place] * runtime.local_epochs
        state = module.client_state(place, keys)
        metrics = {
            k: v
            for spec in runtime.callbacks
            for k, v in spec.cohort_report(job, state, module.param_names).items()
        }
        state = placement.hand_over(state)
        inject_result_fault(job, state)
        results.append(
            ClientResult(
                job_id=job.job_id,
                client_id=job.client_id,
                state=state,
                num_samples=sizes[place],
                steps=batches[place] * runtime.local_epochs,
                train_loss=float(loss[place]) / seen if seen else float("nan"),
                train_accuracy=int(correct[place]) / seen if seen else 0.0,
                metrics=metrics,
            )
        )
    return results
