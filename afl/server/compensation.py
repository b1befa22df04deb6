"""Staleness compensation beyond a discount (the paper's open question): CA2FL's cached update calibration,
FADAS's adaptive server step with a delay-adaptive rate, and DC-ASGD's delay compensation.

Each is an :class:`~afl.server.aggregators.Aggregator` like the others: ``on_arrival`` / ``flush`` and a
``state_dict`` holding everything it keeps (caches, moments, buffers), so a run resumes bit for bit. As in
:mod:`afl.server.aggregators`, the rules move the parameters; the running statistics of normalisation
layers are mixed convexly toward the arrived clients' (never delta-added), and integer counters take the
largest value seen. Deltas are ``Δ = θ_c − θ_dispatched`` (times the paper LR's arrival factor, if set).
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import Any

from afl.errors import ConfigError
from afl.messages import ClientUpdate, State, is_parameter
from afl.registry import require
from afl.server.aggregators import AGGREGATORS, Aggregator, UpdateBuffer, add_scaled, max_int_entries, mix


def _copy(state: State) -> State:
    return {k: v.clone() for k, v in state.items()}


class _Buffered(Aggregator):
    """What CA2FL and FADAS share: a buffer of ``M`` arrivals (None: J) holding the sum of their parameter
    deltas, their running statistics and integer counters, the count, the largest staleness and the
    round; a full buffer is applied by :meth:`_step`, and a partly filled one at the end of the run."""

    buffer_size: int | None

    def __init__(self, buffer_size: int | None) -> None:
        require(buffer_size is None or buffer_size >= 1, "buffer_size", f"must be >= 1, got {buffer_size}")
        self.buffer_size = buffer_size
        self._deltas: State = {}  # Σ Δ_i over the buffer
        self._stats = UpdateBuffer()  # running statistics (weight 1 each) and integer counters
        self._max_staleness = 0

    def setup(self, *, concurrency: int) -> None:
        if self.buffer_size is None:
            self.buffer_size = concurrency

    def on_arrival(self, update: ClientUpdate, global_state: State) -> bool:
        assert self.buffer_size is not None, "setup() sets the default buffer_size"
        for k, d in update.delta.items():
            if k in self._deltas:
                self._deltas[k].add_(d)
            else:
                self._deltas[k] = d.clone()
        self._stats.add({}, update.stats, update.state, 1.0, update.num_samples)
        self._stats.round = update.round
        self._max_staleness = max(self._max_staleness, update.staleness)
        self._arrived(update)
        return self._stats.count >= self.buffer_size and self.flush(global_state)

    def _arrived(self, update: ClientUpdate) -> None:
        """A rule's own bookkeeping of an arrival (none by default)."""

    def flush(self, global_state: State) -> bool:
        buf = self._stats
        if buf.count == 0:
            return False
        mean = {k: v / buf.count for k, v in self._deltas.items()}
        self._step(global_state, mean, buf.count)
        if buf.stats:  # the buffer's mean statistics, taken whole: these rules' steps have no mixing scale
            mix(global_state, {k: v / buf.weight for k, v in buf.stats.items()}, 1.0)
        max_int_entries(global_state, buf.int_max)
        buf.clear()
        self._deltas, self._max_staleness = {}, 0
        return True

    @abstractmethod
    def _step(self, global_state: State, mean_delta: State, count: int) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {
            "buffer_size": self.buffer_size,
            "deltas": _copy(self._deltas),
            "stats": self._stats.state_dict(),
            "max_staleness": self._max_staleness,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.buffer_size = state["buffer_size"]
        self._deltas = _copy(state["deltas"])
        self._stats.load_state_dict(state["stats"])
        self._max_staleness = int(state["max_staleness"])


@AGGREGATORS.register("ca2fl")
class CA2FL(_Buffered):
    """CA2FL (Wang et al., ICLR 2024, "Tackling the data heterogeneity in asynchronous federated learning
    with cached update calibration", Algorithm 1): the server caches every client's latest delta ``h_i``
    (zero until it first arrives) and their mean over all ``N`` clients ``h̄ = (1/N) Σ_i h_i``. For a
    buffer ``S`` of ``M`` arrivals it steps along the calibrated direction

        ``v = h̄ + (1/M) Σ_{i∈S} (Δ_i − h_i)``,   ``θ ← θ + η_g v``,

    ``h_i`` and ``h̄`` as they were before the buffer; then ``h_i ← Δ_i`` for the arrived clients (a client
    arriving twice in one buffer: its latest) and ``h̄`` follows.

    Memory: one parameter-sized delta for every client that has ever arrived, at most ``N`` of them; a run
    whose ``N`` caches would exceed ``max_cache_mib`` is refused before it starts (:meth:`prepare`).

    Args:
        server_lr: ``η_g``.
        buffer_size: ``M``; None: J.
        max_cache_mib: the most memory the caches may take.
    """

    def __init__(
        self, *, server_lr: float = 1.0, buffer_size: int | None = None, max_cache_mib: float = 4096.0
    ):
        require(server_lr > 0, "server_lr", f"must be > 0, got {server_lr}")
        require(max_cache_mib > 0, "max_cache_mib", f"must be > 0, got {max_cache_mib}")
        super().__init__(buffer_size)
        self.server_lr = server_lr
        self.max_cache_mib = max_cache_mib
        self.num_clients: int | None = None
        self._cache: dict[int, State] = {}  # client -> h_i
        self._cache_sum: State = {}  # Σ_i h_i
        self._calibration: State = {}  # Σ_{i∈S} h_i (the caches the buffer's deltas are calibrated by)
        self._latest: dict[int, State] = {}  # client -> its latest delta in this buffer

    def prepare(self, *, num_clients: int, global_state: State) -> None:
        need = num_clients * sum(
            v.numel() * v.element_size() for k, v in global_state.items() if is_parameter(k, v)
        )
        if need / 2**20 > self.max_cache_mib:
            raise ConfigError(
                "server.aggregator.max_cache_mib",
                f"ca2fl caches one delta per client: {num_clients} clients need {need / 2**20:.0f} MiB, "
                f"more than {self.max_cache_mib:g}: raise it, or use fewer clients",
            )
        self.num_clients = num_clients

    def server_lr_at(self, round: int) -> float:
        return self.server_lr

    def _arrived(self, update: ClientUpdate) -> None:
        cached = self._cache.get(update.client_id)
        if cached is not None:
            for k, h in cached.items():
                if k in self._calibration:
                    self._calibration[k].add_(h)
                else:
                    self._calibration[k] = h.clone()
        self._latest[update.client_id] = _copy(update.delta)

    def _step(self, global_state: State, mean_delta: State, count: int) -> None:
        assert self.num_clients is not None, "prepare() tells the rule how many clients there are"
        n = self.num_clients
        for k, d in mean_delta.items():  # v = h̄ + mean Δ − mean h  (mean over the buffer)
            v = d.clone()
            if k in self._cache_sum:
                v.add_(self._cache_sum[k], alpha=1.0 / n)
            if k in self._calibration:
                v.sub_(self._calibration[k], alpha=1.0 / count)
            global_state[k].add_(v, alpha=self.server_lr)
        for client, delta in self._latest.items():  # h_i ← Δ_i, and Σ h_i with it
            old = self._cache.get(client)
            for k, d in delta.items():
                if k in self._cache_sum:
                    self._cache_sum[k].add_(d)
                    if old is not None:
                        self._cache_sum[k].sub_(old[k])
                else:
                    self._cache_sum[k] = d.clone()
            self._cache[client] = delta
        self._calibration, self._latest = {}, {}

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "num_clients": self.num_clients,
            "cache": {c: _copy(h) for c, h in self._cache.items()},
            "cache_sum": _copy(self._cache_sum),
            "calibration": _copy(self._calibration),
            "latest": {c: _copy(d) for c, d in self._latest.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.num_clients = state["num_clients"]
        self._cache = {int(c): _copy(h) for c, h in state["cache"].items()}
        self._cache_sum = _copy(state["cache_sum"])
        self._calibration = _copy(state["calibration"])
        self._latest = {int(c): _copy(d) for c, d in state["latest"].items()}


@AGGREGATORS.register("fadas")
class FADAS(_Buffered):
    """FADAS (Wang, Wang, Lu, Chen, ICML 2024, "FADAS: towards federated adaptive asynchronous
    optimization", arXiv 2407.18365): an AMSGrad step of the server on the buffer's mean delta, as the
    authors' code takes it (``yujiaw98/FADAS``, commit 34daad8: ``update.py``, ``update_model_inplace``,
    branch ``fedams``; ``g_delay_adaptive.py``, the delay-adaptive rate).

    For the ``t``-th buffer (``t`` = 1, 2, …) of ``M`` arrivals, ``Δ_t = (1/M) Σ Δ_i`` and

        ``m_t = β1 m_{t−1} + (1 − β1) Δ_t``,  ``v_t = β2 v_{t−1} + (1 − β2) Δ_t²``,
        ``v̂_t = max(v̂_{t−1}, v_t)``,
        ``θ ← θ + η_t / (1 − β1^t) · m_t / (sqrt(v̂_t) / sqrt(1 − β2^t) + ε)``,

    ``m``, ``v``, ``v̂`` starting at 0. ``bias_correction=False`` drops the two ``1 − β^t`` factors (the
    algorithm as the paper's text is summarised; we could not read the paper itself here). The
    delay-adaptive rate of the authors' code: ``η_t = η / τ_max`` when the buffer's largest staleness
    ``τ_max`` exceeds ``τ_c`` (``delay_threshold``; the code's default 1), else ``η``;
    ``delay_threshold=None``: ``η`` always (FADAS without the adjustment). The running statistics become
    the buffer's mean (the code loads the plain average of the arrived models' buffers).

    Args:
        server_lr: ``η``.
        buffer_size: ``M``; None: J.
        beta1, beta2, eps: the moments' decays and the denominator's guard (the code's 0.9, 0.99, 1e-8).
        delay_threshold: ``τ_c``; None: no delay adaptation.
        bias_correction: divide by ``1 − β^t`` as the authors' code does.

    Example:
        >>> FADAS(server_lr=0.5, delay_threshold=3).rate(3), FADAS(server_lr=0.5, delay_threshold=3).rate(4)
        (0.5, 0.125)
    """

    def __init__(
        self,
        *,
        server_lr: float = 0.001,
        buffer_size: int | None = None,
        beta1: float = 0.9,
        beta2: float = 0.99,
        eps: float = 1e-8,
        delay_threshold: int | None = None,
        bias_correction: bool = True,
    ) -> None:
        require(server_lr > 0, "server_lr", f"must be > 0, got {server_lr}")
        require(0 <= beta1 < 1, "beta1", f"must be in [0, 1), got {beta1}")
        require(0 <= beta2 < 1, "beta2", f"must be in [0, 1), got {beta2}")
        require(eps > 0, "eps", f"must be > 0, got {eps}")
        require(
            delay_threshold is None or delay_threshold >= 0,
            "delay_threshold",
            f"must be >= 0, got {delay_threshold}",
        )
        super().__init__(buffer_size)
        self.server_lr, self.beta1, self.beta2, self.eps = server_lr, beta1, beta2, eps
        self.delay_threshold = delay_threshold
        self.bias_correction = bias_correction
        self._steps = 0
        self._m: State = {}
        self._v: State = {}
        self._v_max: State = {}

    def server_lr_at(self, round: int) -> float:
        return self.server_lr

    def rate(self, max_staleness: int) -> float:
        """``η_t`` for a buffer whose stalest update has staleness ``max_staleness``."""
        if self.delay_threshold is None or max_staleness <= self.delay_threshold:
            return self.server_lr
        return self.server_lr / max_staleness

    def _step(self, global_state: State, mean_delta: State, count: int) -> None:
        self._steps += 1
        t = self._steps
        first, second = (1 - self.beta1**t, 1 - self.beta2**t) if self.bias_correction else (1.0, 1.0)
        step = self.rate(self._max_staleness) / first
        for k, d in mean_delta.items():
            if k not in self._m:
                self._m[k], self._v[k], self._v_max[k] = d.mul(0), d.mul(0), d.mul(0)
            m, v, v_max = self._m[k], self._v[k], self._v_max[k]
            m.mul_(self.beta1).add_(d, alpha=1 - self.beta1)
            v.mul_(self.beta2).addcmul_(d, d, value=1 - self.beta2)
            v_max.copy_(v_max.maximum(v))
            global_state[k].addcdiv_(m, v_max.sqrt().div_(math.sqrt(second)).add_(self.eps), value=step)

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "steps": self._steps,
            "m": _copy(self._m),
            "v": _copy(self._v),
            "v_max": _copy(self._v_max),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._steps = int(state["steps"])
        self._m, self._v, self._v_max = _copy(state["m"]), _copy(state["v"]), _copy(state["v_max"])


@AGGREGATORS.register("dc")
class DelayCompensation(Aggregator):
    """Delay compensation after DC-ASGD (Zheng et al., ICML 2017, "Asynchronous stochastic gradient
    descent with delay compensation"), applied per arrival to the pseudo-gradient ``g = −Δ``: with the
    model the client was handed ``θ_v`` and the current one ``θ_t``,

        ``g̃ = g + λ g ⊙ g ⊙ (θ_t − θ_v)``,   ``θ ← θ − η_g g̃``,

    the first-order Taylor correction of ``g`` from ``θ_v`` to ``θ_t``, with ``λ g ⊙ g`` standing in for the
    Hessian. ``adaptive=True`` is the paper's DC-ASGD-a: ``λ_t = λ / sqrt(MS_t + ε)`` per entry, with the
    mean square ``MS_t = d MS_{t−1} + (1 − d) g ⊙ g`` (``d``: ``mean_square_decay``). λ = 0 is plain
    asynchronous SGD on pseudo-gradients (θ ← θ + η_g Δ). The server keeps one mean square (Multiverso's
    updater keeps one per worker).

    The defaults: λ = 0.04 (constant; MXNet's ``DCASGD`` optimizer, ``lamda``), λ0 = 2 and d = 0.95 for
    DC-ASGD-a (the adaptive implementations' defaults: TensorFlow contrib's ``variance_parameter``,
    Multiverso's updater); we could not check them against the paper's text here. They were chosen there
    for gradients; a pseudo-gradient (a whole job's displacement) has another scale, so λ is a knob to
    tune with the step size.

    Args:
        server_lr: ``η_g``; None: ``1 / J``.
        lam: ``λ`` (DC-ASGD-a: ``λ0``); None: 0.04 (constant) or 2 (adaptive).
        adaptive: DC-ASGD-a's per-entry λ.
        mean_square_decay, eps: DC-ASGD-a's ``d`` and guard.
    """

    def __init__(
        self,
        *,
        server_lr: float | None = None,
        lam: float | None = None,
        adaptive: bool = False,
        mean_square_decay: float = 0.95,
        eps: float = 1e-7,
    ) -> None:
        require(server_lr is None or server_lr > 0, "server_lr", f"must be > 0, got {server_lr}")
        require(lam is None or (lam >= 0 and math.isfinite(lam)), "lam", f"must be >= 0, got {lam}")
        require(
            0 <= mean_square_decay < 1, "mean_square_decay", f"must be in [0, 1), got {mean_square_decay}"
        )
        require(eps > 0, "eps", f"must be > 0, got {eps}")
        self.server_lr = server_lr
        if lam is None:  # the defaults of MXNet's DCASGD (constant) and of DC-ASGD-a's implementations
            lam = 2.0 if adaptive else 0.04
        self.lam, self.adaptive, self.mean_square_decay, self.eps = lam, adaptive, mean_square_decay, eps
        self._mean_square: State = {}

    def setup(self, *, concurrency: int) -> None:
        if self.server_lr is None:
            self.server_lr = 1.0 / concurrency

    def server_lr_at(self, round: int) -> float:
        assert self.server_lr is not None, "setup() sets the default server_lr"
        return self.server_lr

    def on_arrival(self, update: ClientUpdate, global_state: State) -> bool:
        eta = self.server_lr_at(update.round)
        for k, d in update.delta.items():
            g = d.neg()
            square = g * g
            correction = square.mul_(global_state[k] - update.dispatched[k])  # g ⊙ g ⊙ (θ_t − θ_v)
            if self.adaptive:  # λ_t = λ0 / sqrt(MS_t + ε), per entry
                ms = self._mean_square.setdefault(k, correction.mul(0))
                ms.mul_(self.mean_square_decay).addcmul_(g, g, value=1 - self.mean_square_decay)
                correction.div_(ms.add(self.eps).sqrt())
            g.add_(correction, alpha=self.lam)
            global_state[k].sub_(g, alpha=eta)
        mix(global_state, update.stats, eta)
        max_int_entries(global_state, update.state)
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"server_lr": self.server_lr, "mean_square": _copy(self._mean_square)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.server_lr = state["server_lr"]
        self._mean_square = _copy(state["mean_square"])


__all__ = ["CA2FL", "FADAS", "DelayCompensation", "add_scaled"]
