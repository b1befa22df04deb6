"""Server aggregators: how arriving client updates change the global model (DESIGN §4).

One interface, :class:`Aggregator`; the rule of each algorithm is a few lines of tensor arithmetic on
plain state dicts. Every rule applies to floating-point parameters and buffers alike; integer buffers
(BatchNorm's ``num_batches_tracked``) are never averaged as floats: the global one becomes the largest
value seen (global or client), since they are counters.

Add an aggregator by subclassing :class:`Aggregator` and decorating it with
``@AGGREGATORS.register("name")``; its keyword-only constructor arguments become its config options.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch

from afl.registry import Registry, require
from afl.server.staleness import STALENESS, Inverse, Polynomial, StalenessFunction

State = dict[str, torch.Tensor]

AGGREGATORS: Registry[Aggregator] = Registry("aggregator", nested={"staleness": STALENESS})


@dataclass
class ClientUpdate:
    """One arrival at the server.

    Attributes:
        client_id: who trained.
        num_samples: the client's number of training samples ``n_c``.
        staleness: ``τ`` = global version at arrival minus the version dispatched.
        state: the client's model after local training, ``θ_c``.
        dispatched: the global model the client was handed, ``θ_dispatched``.
        delta: ``θ_c - θ_dispatched`` for floating-point entries (integer entries are absent); computed
            on first use, so rules that only need ``state`` do not pay for it.
    """

    client_id: int
    num_samples: int
    staleness: int
    state: State
    dispatched: State = field(repr=False)

    @cached_property
    def delta(self) -> State:
        return {k: v - self.dispatched[k] for k, v in self.state.items() if v.is_floating_point()}


def is_float(t: torch.Tensor) -> bool:
    return t.is_floating_point()


def max_int_entries(target: State, source: State) -> None:
    """Integer entries of ``target`` become the elementwise max of target and source."""
    for k, v in source.items():
        if not is_float(v):
            torch.maximum(target[k], v, out=target[k])


class Aggregator(ABC):
    """Turns arrivals into global-model changes.

    The loop calls :meth:`setup` once, :meth:`on_arrival` for every accepted update (in simulated-time
    order) and :meth:`flush` at a synchronous barrier and at the end of the run. Both return whether the
    global state (changed in place) moved to a new version.
    """

    def setup(self, *, concurrency: int) -> None:  # noqa: B027 - optional hook
        """Learn the run's concurrency J before the first arrival."""

    @abstractmethod
    def on_arrival(self, update: ClientUpdate, global_state: State) -> bool: ...

    def flush(self, global_state: State) -> bool:
        """Apply whatever is buffered (no client work is silently lost)."""
        return False

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


class _Buffer:
    """A running weighted sum of tensors, the integer maxima and the count: a buffer that stores no
    per-client copies."""

    def __init__(self) -> None:
        self.sum: State = {}
        self.int_max: State = {}
        self.weight = 0.0
        self.count = 0

    def add(self, tensors: State, weight: float, ints: State) -> None:
        for k, v in tensors.items():
            if not is_float(v):
                continue
            if k in self.sum:
                self.sum[k].add_(v, alpha=weight)
            else:
                self.sum[k] = v.mul(weight)
        for k, v in ints.items():
            if not is_float(v):
                self.int_max[k] = torch.maximum(self.int_max[k], v) if k in self.int_max else v.clone()
        self.weight += weight
        self.count += 1

    def clear(self) -> None:
        self.sum, self.int_max, self.weight, self.count = {}, {}, 0.0, 0

    def state_dict(self) -> dict[str, Any]:
        return {
            "sum": {k: v.clone() for k, v in self.sum.items()},
            "int_max": {k: v.clone() for k, v in self.int_max.items()},
            "weight": self.weight,
            "count": self.count,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sum = {k: v.clone() for k, v in state["sum"].items()}
        self.int_max = {k: v.clone() for k, v in state["int_max"].items()}
        self.weight, self.count = float(state["weight"]), int(state["count"])


class _Buffered(Aggregator):
    """An aggregator that sums weighted entries over a buffer and applies them when it is full.

    Subclasses say what an arrival adds (:meth:`_entry`) and how a full buffer changes the model
    (:meth:`_apply`); buffering, flushing, integer buffers and ``state_dict`` are shared.
    """

    buffer_size: int | None

    def __init__(self) -> None:
        self._buffer = _Buffer()

    def _entry(self, update: ClientUpdate) -> tuple[State, float]:
        raise NotImplementedError

    def _apply(self, buf: _Buffer, global_state: State) -> None:
        raise NotImplementedError

    def on_arrival(self, update: ClientUpdate, global_state: State) -> bool:
        tensors, weight = self._entry(update)
        self._buffer.add(tensors, weight, update.state)
        return self._buffer.count >= (self.buffer_size or 1) and self.flush(global_state)

    def flush(self, global_state: State) -> bool:
        buf = self._buffer
        if buf.count == 0:
            return False
        self._apply(buf, global_state)
        max_int_entries(global_state, buf.int_max)
        buf.clear()
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"buffer_size": self.buffer_size, "buffer": self._buffer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.buffer_size = state["buffer_size"]
        self._buffer.load_state_dict(state["buffer"])


@AGGREGATORS.register("fedavg")
class FedAvg(_Buffered):
    """Synchronous FedAvg: ``θ ← Σ_c (n_c / Σ n) θ_c`` over the clients of a round.

    Args:
        buffer_size: arrivals per aggregation; ``None`` means the concurrency J (one round).
    """

    def __init__(self, *, buffer_size: int | None = None) -> None:
        require(buffer_size is None or buffer_size >= 1, "buffer_size", f"must be >= 1, got {buffer_size}")
        super().__init__()
        self.buffer_size = buffer_size

    def setup(self, *, concurrency: int) -> None:
        if self.buffer_size is None:
            self.buffer_size = concurrency

    def _entry(self, update: ClientUpdate) -> tuple[State, float]:
        return update.state, float(update.num_samples)

    def _apply(self, buf: _Buffer, global_state: State) -> None:
        for k, s in buf.sum.items():
            global_state[k].copy_(s / buf.weight)


@AGGREGATORS.register("afl")
class AFL(_Buffered):
    """The paper's staleness-aware rule: ``θ ← θ + η_g Σ_c w_c Δ_c`` with ``w_c ∝ n_c s(τ_c)``
    normalised over a buffer of ``buffer_size`` arrivals (1 by default: every arrival moves the model).

    With a buffer of one, the weights normalise to 1 and staleness acts through the client learning
    rate (the ``paper`` LR schedule) alone.

    Args:
        server_lr: ``η_g``.
        buffer_size: arrivals per aggregation ``M``.
        staleness: ``s(τ)``; default ``inverse`` with ``a = 0.5``, i.e. ``1 / (1 + 0.5 τ)``.
    """

    def __init__(
        self, *, server_lr: float = 1.0, buffer_size: int = 1, staleness: StalenessFunction | None = None
    ) -> None:
        require(server_lr > 0, "server_lr", f"must be > 0, got {server_lr}")
        require(buffer_size >= 1, "buffer_size", f"must be >= 1, got {buffer_size}")
        super().__init__()
        self.server_lr = server_lr
        self.buffer_size = buffer_size
        self.staleness = staleness if staleness is not None else Inverse(a=0.5)

    def _entry(self, update: ClientUpdate) -> tuple[State, float]:
        return update.delta, update.num_samples * self.staleness(update.staleness)

    def _apply(self, buf: _Buffer, global_state: State) -> None:
        scale = self.server_lr / buf.weight if buf.weight > 0 else 0.0
        for k, s in buf.sum.items():
            global_state[k].add_(s, alpha=scale)


@AGGREGATORS.register("fedasync")
class FedAsync(Aggregator):
    """FedAsync (Xie et al. 2019): ``θ ← (1 - α_t) θ + α_t θ_c`` with ``α_t = α s(τ)`` per update.

    Args:
        alpha: the mixing weight ``α`` in (0, 1].
        staleness: ``s(τ)``; default ``polynomial`` with ``a = 0.5``.
    """

    def __init__(self, *, alpha: float = 0.6, staleness: StalenessFunction | None = None) -> None:
        require(0 < alpha <= 1, "alpha", f"must be in (0, 1], got {alpha}")
        self.alpha = alpha
        self.staleness = staleness if staleness is not None else Polynomial(a=0.5)

    def on_arrival(self, update: ClientUpdate, global_state: State) -> bool:
        alpha_t = self.alpha * self.staleness(update.staleness)
        for k, v in update.state.items():
            if is_float(v):
                global_state[k].lerp_(v, alpha_t)
        max_int_entries(global_state, update.state)
        return True


@AGGREGATORS.register("fedbuff")
class FedBuff(_Buffered):
    """FedBuff (Nguyen et al. 2022): accumulate ``s(τ) Δ_c``; after ``K`` arrivals
    ``θ ← θ + η_g (Σ s Δ) / K`` and clear. A partly filled buffer at the end is applied with its size.

    Args:
        buffer_size: ``K``.
        server_lr: ``η_g``.
        staleness: ``s(τ)``; default ``polynomial`` with ``a = 0.5``, i.e. ``1 / sqrt(1 + τ)``.
    """

    def __init__(
        self, *, buffer_size: int = 10, server_lr: float = 1.0, staleness: StalenessFunction | None = None
    ) -> None:
        require(buffer_size >= 1, "buffer_size", f"must be >= 1, got {buffer_size}")
        require(server_lr > 0, "server_lr", f"must be > 0, got {server_lr}")
        super().__init__()
        self.buffer_size = buffer_size
        self.server_lr = server_lr
        self.staleness = staleness if staleness is not None else Polynomial(a=0.5)

    def _entry(self, update: ClientUpdate) -> tuple[State, float]:
        return update.delta, self.staleness(update.staleness)

    def _apply(self, buf: _Buffer, global_state: State) -> None:
        for k, s in buf.sum.items():
            global_state[k].add_(s, alpha=self.server_lr / buf.count)
