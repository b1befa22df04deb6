"""Server aggregators: how arriving client updates change the global model (docs/design.md).

One interface, :class:`Aggregator`; the rule of each algorithm is a few lines over the small pure
functions below (weighted sums, delta steps, convex mixes, integer maxima). A state dict has three kinds
of entries, treated apart:

* parameters (every floating-point entry that is not a running statistic): moved by the rule;
* running statistics of normalisation layers (``running_mean``, ``running_var``): never delta-added from
  a stale base (that drives variances negative); they are mixed convexly toward the arriving client's
  values with the update's effective weight, clipped to [0, 1];
* integer buffers (BatchNorm's ``num_batches_tracked``): counters, never averaged; the global one becomes
  the largest value seen.

Add an aggregator by subclassing :class:`Aggregator` and decorating it with
``@AGGREGATORS.register("name")``; its keyword-only constructor arguments become its config options.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

from afl.messages import ClientUpdate, State
from afl.registry import Registry, require
from afl.server.lr_schedules import DECAYS
from afl.server.staleness import STALENESS, Inverse, Polynomial, StalenessFunction

if TYPE_CHECKING:  # tensors come in and out, but this module needs no torch import: the config builds
    pass  # (and so checks) aggregators without importing it


AGGREGATORS: Registry[Aggregator] = Registry(
    "aggregator",
    nested={"staleness": STALENESS},
    lazy={  # the staleness compensations beyond a discount (afl.server.compensation)
        "ca2fl": "afl.server.compensation:CA2FL",
        "fadas": "afl.server.compensation:FADAS",
        "dc": "afl.server.compensation:DelayCompensation",
    },
)


# ----------------------------------------------------------------------------- aggregation arithmetic
def add_scaled(target: State, tensors: State, alpha: float) -> None:
    """``target[k] += alpha · tensors[k]`` for every entry of ``tensors`` (in place)."""
    for k, v in tensors.items():
        target[k].add_(v, alpha=alpha)


def mix(target: State, source: State, weight: float) -> None:
    """``target[k] ← (1 − w) target[k] + w source[k]`` with ``w`` clipped to [0, 1]: a convex mix."""
    w = min(max(weight, 0.0), 1.0)
    for k, v in source.items():
        target[k].lerp_(v, w)


def max_int_entries(target: State, source: State) -> None:
    """Integer entries of ``target`` become the elementwise max of target and source."""
    for k, v in source.items():
        if not v.is_floating_point():
            target[k].copy_(target[k].maximum(v))


class Aggregator(ABC):
    """Turns arrivals into global-model changes.

    The loop calls :meth:`setup` once, :meth:`on_arrival` for every accepted update (in simulated-time
    order) and :meth:`flush` at a synchronous barrier and at the end of the run. Both return whether the
    global state (changed in place) moved to a new version.

    Attributes:
        modes: the ``federation.mode`` values the rule is meant for.
    """

    modes: ClassVar[tuple[str, ...]] = ("async",)

    def setup(self, *, concurrency: int) -> None:  # noqa: B027 - optional hook
        """Learn the run's concurrency J before the first arrival."""

    def prepare(self, *, num_clients: int, global_state: State) -> None:  # noqa: B027 - optional hook
        """Learn the run's number of clients and its model before the run starts (a rule with per-client
        state checks here that it fits, raising :class:`~afl.errors.ConfigError`)."""

    @abstractmethod
    def on_arrival(self, update: ClientUpdate, global_state: State) -> bool: ...

    def flush(self, global_state: State) -> bool:
        """Apply whatever is buffered (no client work is silently lost)."""
        return False

    def server_lr_at(self, round: int) -> float | None:
        """The server step ``η_g`` of a step taken in ``round`` (``updates.csv``'s ``server_lr``), or None
        for a rule without one."""
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


class UpdateBuffer:
    """Running sums over buffered arrivals, storing no per-client copies: ``params`` (Σ a_c x_c over
    parameter entries), ``stats`` (Σ a_c stat_c), the raw weights Σ a_c, the samples Σ n_c, the count
    and the integer maxima."""

    def __init__(self) -> None:
        self.params: State = {}
        self.stats: State = {}
        self.int_max: State = {}
        self.weight = 0.0
        self.samples = 0
        self.count = 0
        self.round = 0  # the round of the last arrival added (a decaying server step counts it)

    def add(self, params: State, stats: State, ints: State, weight: float, samples: int) -> None:
        for total, tensors in ((self.params, params), (self.stats, stats)):
            for k, v in tensors.items():
                if k in total:
                    total[k].add_(v, alpha=weight)
                else:
                    total[k] = v.mul(weight)
        for k, v in ints.items():
            if not v.is_floating_point():
                self.int_max[k] = self.int_max[k].maximum(v) if k in self.int_max else v.clone()
        self.weight += weight
        self.samples += samples
        self.count += 1

    def clear(self) -> None:
        self.params, self.stats, self.int_max = {}, {}, {}
        self.weight, self.samples, self.count, self.round = 0.0, 0, 0, 0

    def state_dict(self) -> dict[str, Any]:
        return {
            "params": {k: v.clone() for k, v in self.params.items()},
            "stats": {k: v.clone() for k, v in self.stats.items()},
            "int_max": {k: v.clone() for k, v in self.int_max.items()},
            "weight": self.weight,
            "samples": self.samples,
            "count": self.count,
            "round": self.round,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.params = {k: v.clone() for k, v in state["params"].items()}
        self.stats = {k: v.clone() for k, v in state["stats"].items()}
        self.int_max = {k: v.clone() for k, v in state["int_max"].items()}
        self.weight, self.samples, self.count = (
            float(state["weight"]),
            int(state["samples"]),
            int(state["count"]),
        )
        self.round = int(state.get("round", 0))  # absent from checkpoints written before it existed


class _DeltaBuffered(Aggregator):
    """Buffered delta rules (``afl``, ``fedbuff``): an arrival adds ``a_c Δ_c`` to the buffer (raw weight
    ``a_c`` from :meth:`_weight`); a full buffer moves ``θ ← θ + f · Σ a_c Δ_c`` with the factor
    ``f`` from :meth:`_factor`, mixes each running statistic toward the clients' with weights ``f a_c``
    (total clipped to 1), then clears. A partly filled buffer at the end of the run is applied as it is.

    Both have a server step ``η_g``, constant or (``server_lr_decay="sqrt"``) decaying as
    ``η_g / sqrt(r + 1)``, ``r`` the round of the arrival that fills the buffer: the authors' later code
    (``Ali-Forootani/Robust-Asynchronous-Federated-Learning``,
    ``src/async_fdl_fashion_mnist_delay_track_lr_non_iid.py`` lines 537-543 and 578-589, commit a20905b:
    ``zeta_t = zeta_0 / sqrt(t + 1)``, ``gamma_t = zeta_t / (eta * I)``, ``w ← w + gamma_t · mean Δ``, t
    the global round). A ``buffer_size`` of None means J (one round of arrivals per step).
    """

    buffer_size: int | None
    server_lr: float | None
    server_lr_decay: str

    def __init__(self, buffer_size: int | None, server_lr_decay: str) -> None:
        require(buffer_size is None or buffer_size >= 1, "buffer_size", f"must be >= 1, got {buffer_size}")
        require(
            server_lr_decay in DECAYS,
            "server_lr_decay",
            f"got {server_lr_decay!r}; allowed: {', '.join(DECAYS)}",
        )
        self._buffer = UpdateBuffer()
        self.buffer_size = buffer_size
        self.server_lr_decay = server_lr_decay

    def setup(self, *, concurrency: int) -> None:
        if self.buffer_size is None:
            self.buffer_size = concurrency

    @abstractmethod
    def _weight(self, update: ClientUpdate) -> float: ...

    @abstractmethod
    def _factor(self, buf: UpdateBuffer) -> float: ...

    def server_lr_at(self, round: int) -> float:
        assert self.server_lr is not None, "setup() sets the default server_lr"
        return self.server_lr / math.sqrt(round + 1.0) if self.server_lr_decay == "sqrt" else self.server_lr

    def on_arrival(self, update: ClientUpdate, global_state: State) -> bool:
        assert self.buffer_size is not None, "setup() sets the default buffer_size"
        self._buffer.add(update.delta, update.stats, update.state, self._weight(update), update.num_samples)
        self._buffer.round = update.round
        return self._buffer.count >= self.buffer_size and self.flush(global_state)

    def flush(self, global_state: State) -> bool:
        buf = self._buffer
        if buf.count == 0:
            return False
        factor = self._factor(buf)
        add_scaled(global_state, buf.params, factor)
        if buf.stats and buf.weight > 0:
            # Σ f a_c (stat_c − stat) = W (mean_a stat_c − stat): a convex mix toward the buffer's weighted
            # mean of client statistics with total weight W = f Σ a_c, clipped to [0, 1]
            mean = {k: v / buf.weight for k, v in buf.stats.items()}
            mix(global_state, mean, factor * buf.weight)
        max_int_entries(global_state, buf.int_max)
        buf.clear()
        return True

    def state_dict(self) -> dict[str, Any]:
        return {
            "buffer_size": self.buffer_size,
            "server_lr": self.server_lr,
            "buffer": self._buffer.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.buffer_size = state["buffer_size"]
        self.server_lr = state.get("server_lr", self.server_lr)
        self._buffer.load_state_dict(state["buffer"])


@AGGREGATORS.register("fedavg")
class FedAvg(Aggregator):
    """Synchronous FedAvg, the barrier rule: ``θ ← Σ_c (n_c / Σ n) θ_c`` over the J clients of a round,
    applied at the barrier (:meth:`flush`). Running statistics are averaged the same way. Meant for
    ``federation.mode=sync`` only; there is no buffer size (a round is J clients).
    """

    modes = ("sync",)

    def __init__(self) -> None:
        self._buffer = UpdateBuffer()

    def on_arrival(self, update: ClientUpdate, global_state: State) -> bool:
        self._buffer.add(update.parameters, update.stats, update.state, float(update.num_samples), 0)
        return False

    def flush(self, global_state: State) -> bool:
        buf = self._buffer
        if buf.count == 0:
            return False
        for total in (buf.params, buf.stats):
            for k, v in total.items():
                global_state[k].copy_(v / buf.weight)
        max_int_entries(global_state, buf.int_max)
        buf.clear()
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"buffer": self._buffer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._buffer.load_state_dict(state["buffer"])


@AGGREGATORS.register("afl")
class AFL(_DeltaBuffered):
    """The paper's staleness-aware rule (docs/design.md): on each buffer ``B`` of ``M`` arrivals,
    ``θ ← θ + η_g Σ_{c∈B} (n_c / Σ_B n) · s(τ_c) · Δ_c``.

    ``s(τ)`` is an absolute discount, not renormalised over the buffer: with ``M = 1`` a stale update
    moves the model by ``η_g s(τ) Δ``. ``η_g`` defaults to ``M / J``, so J arrivals move the model about
    as far as one FedAvg round (the mean of J deltas). With ``M = J``, ``η_g = 1`` and ``s ≡ 1`` a step
    is ``θ + Σ (n_c / Σn) Δ_c``: the sample-weighted FedAvg of the J arrived models only when every one
    of them started from the current model (τ = 0); a stale arrival's delta is added to the current model,
    not averaged in as the model it trained, so the two differ once updates are stale. That step
    is our application of the server rule of the code released with the paper
    (``Ali-Forootani/AFL_non_convex_non_iid``, ``src/async_fdl_fashion_mnist_delay_track_lr_non_iid.py``
    lines 359-365, commit d9a5d21), which has no staleness weight and no server step.

    Args:
        server_lr: ``η_g``; ``None`` means ``buffer_size / J``.
        buffer_size: arrivals per aggregation ``M``; ``None`` means J.
        staleness: ``s(τ)``; default ``inverse`` with ``a = 0.2``, i.e. ``1 / (1 + 0.2 τ)``.
        server_lr_decay: ``none``, or ``sqrt``: the step is ``η_g / sqrt(r + 1)`` in round ``r``.

    Example:
        >>> agg = AFL(buffer_size=1)
        >>> agg.setup(concurrency=4)
        >>> agg.server_lr, agg.staleness(5)
        (0.25, 0.5)
        >>> from afl.server.staleness import Constant
        >>> released = AFL(buffer_size=None, staleness=Constant())
        >>> released.setup(concurrency=5)
        >>> released.buffer_size, released.server_lr
        (5, 1.0)
    """

    def __init__(
        self,
        *,
        server_lr: float | None = None,
        buffer_size: int | None = 1,
        staleness: StalenessFunction | None = None,
        server_lr_decay: str = "none",
    ) -> None:
        require(server_lr is None or server_lr > 0, "server_lr", f"must be > 0, got {server_lr}")
        super().__init__(buffer_size, server_lr_decay)
        self.server_lr = server_lr
        self.staleness = staleness if staleness is not None else Inverse()

    def setup(self, *, concurrency: int) -> None:
        super().setup(concurrency=concurrency)
        if self.server_lr is None:
            assert self.buffer_size is not None
            self.server_lr = self.buffer_size / concurrency

    def _weight(self, update: ClientUpdate) -> float:
        return update.num_samples * self.staleness(update.staleness)

    def _factor(self, buf: UpdateBuffer) -> float:
        return self.server_lr_at(buf.round) / buf.samples


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
        self.staleness = staleness if staleness is not None else Polynomial()

    def on_arrival(self, update: ClientUpdate, global_state: State) -> bool:
        alpha_t = self.alpha * self.staleness(update.staleness)
        mix(global_state, update.parameters, alpha_t)
        mix(global_state, update.stats, alpha_t)
        max_int_entries(global_state, update.state)
        return True


@AGGREGATORS.register("fedbuff")
class FedBuff(_DeltaBuffered):
    """FedBuff (Nguyen et al. 2022): accumulate ``s(τ) Δ_c``; after ``K`` arrivals
    ``θ ← θ + η_g (Σ s Δ) / K`` and clear. A partly filled buffer at the end is applied with its size.

    With ``K = J``, ``s ≡ 1`` and ``server_lr_decay="sqrt"`` this is the AFL mode of the authors' later
    code: ``w ← w + γ_t Σ_j (1/J) (w_j − w_{t−τ_j})`` with ``γ_t = γ_0 / sqrt(t + 1)``
    (``Ali-Forootani/Robust-Asynchronous-Federated-Learning``,
    ``src/async_fdl_fashion_mnist_delay_track_lr_non_iid.py`` lines 295-304, 537-543 and 578-589, commit
    a20905b; its staleness weights are all 1/J in AFL mode, lines 650-658).

    Args:
        buffer_size: ``K``; ``None`` means J.
        server_lr: ``η_g``.
        staleness: ``s(τ)``; default ``polynomial`` with ``a = 0.5``, i.e. ``1 / sqrt(1 + τ)``.
        server_lr_decay: ``none``, or ``sqrt``: the step is ``η_g / sqrt(r + 1)`` in round ``r``.

    Example:
        >>> later = FedBuff(buffer_size=None, server_lr=1 / 3, server_lr_decay="sqrt")
        >>> later.setup(concurrency=5)
        >>> later.buffer_size, later.server_lr_at(0), later.server_lr_at(3)
        (5, 0.3333333333333333, 0.16666666666666666)
    """

    def __init__(
        self,
        *,
        buffer_size: int | None = 10,
        server_lr: float = 1.0,
        staleness: StalenessFunction | None = None,
        server_lr_decay: str = "none",
    ) -> None:
        require(server_lr > 0, "server_lr", f"must be > 0, got {server_lr}")
        super().__init__(buffer_size, server_lr_decay)
        self.server_lr = server_lr
        self.staleness = staleness if staleness is not None else Polynomial()

    def _weight(self, update: ClientUpdate) -> float:
        return self.staleness(update.staleness)

    def _factor(self, buf: UpdateBuffer) -> float:
        return self.server_lr_at(buf.round) / buf.count
