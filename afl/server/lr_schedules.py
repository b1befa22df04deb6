"""Client learning-rate schedules: pure functions of (base LR, round, staleness), registered by name.

A schedule has two halves, because the staleness τ of an update is known only when it arrives:

* :meth:`LRSchedule.at_dispatch` — the client LR handed out with a job, from the base LR ``γ0``, the
  round ``r`` (client updates so far // J; the barrier round in sync mode) and the staleness of that
  client's previous update (0 before its first);
* :meth:`LRSchedule.at_arrival` — a factor on the arriving update's delta, from its own staleness τ (for
  small steps the same as having trained at that rate).

A schedule may also change the rate *within* a job, per local epoch (:meth:`LRSchedule.epoch_lrs`): the
rates are fixed at dispatch like everything else a job needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from afl.registry import Registry, require

LR_SCHEDULES: Registry[LRSchedule] = Registry("LR schedule")

DELAY_AT = ("arrival", "dispatch")
DECAYS = ("sqrt", "none")
DECAY_OVER = ("round", "local_epoch")


class LRSchedule:
    """Base class: a constant rate, no factor at arrival."""

    def at_dispatch(self, base_lr: float, round: int, previous_staleness: int) -> float:
        """The LR of a job dispatched in ``round`` to a client whose last update was ``previous_staleness``
        versions stale."""
        return base_lr

    def at_arrival(self, staleness: int) -> float:
        """The factor on the delta of an update that arrives ``staleness`` versions stale."""
        return 1.0

    def epoch_lrs(self, lr: float, local_epochs: int) -> list[float] | None:
        """The rate of each local epoch of a job handed ``lr``, or None: ``lr`` throughout."""
        return None


@LR_SCHEDULES.register("constant")
@dataclass(frozen=True)
class ConstantLR(LRSchedule):
    """The base learning rate, always; deltas are applied as they are.

    Example:
        >>> ConstantLR().at_dispatch(1e-3, round=50, previous_staleness=9), ConstantLR().at_arrival(9)
        (0.001, 1.0)
    """


def delay_aware_lr(base_lr: float, alpha: float, delay: float, round: int | None = None) -> float:
    """The paper's rate ``γ = base_lr / (sqrt(r + 1) (1 + α τ))``; ``base_lr / (1 + α τ)`` without a round.

    A larger delay gives a smaller step (the paper's summary prints ``* (1 + α τ)``, its text and its
    authors' code divide). Computed as ``(base_lr / sqrt(r + 1)) * (1 / (1 + α τ))``, in that order.

    Example:
        >>> delay_aware_lr(1e-3, alpha=0.5, delay=2)
        0.0005
        >>> delay_aware_lr(1e-3, alpha=0.5, delay=2, round=3)
        0.00025
    """
    lr = base_lr if round is None else base_lr / math.sqrt(round + 1.0)
    return lr * (1.0 / (1.0 + alpha * delay))


@LR_SCHEDULES.register("paper")
@dataclass(frozen=True)
class PaperLR(LRSchedule):
    """The paper's delay-aware rate ``γ = γ0 / (sqrt(t + 1) (1 + α τ))``, in each reading of ``t``.

    The paper's summary prints ``* (1 + α τ)`` but requires a higher delay to reduce the step, and the
    authors' code divides; so do we. The delay factor ``1 / (1 + α τ)`` uses the τ of the update it scales:
    with ``delay_at="arrival"`` (the default) the server multiplies that update's delta by it; with
    ``delay_at="dispatch"`` the client trains at the rate computed with its *previous* τ instead.
    ``decay="none"`` drops the ``sqrt(t + 1)`` factor, so each mechanism can be ablated. The formula is
    :func:`delay_aware_lr`; the :class:`afl_callbacks.DelayAwareLR` callback sets the same rate (it
    imports nothing from ``afl``, so it states the formula itself;
    ``tests/unit/callbacks/test_callbacks.py`` holds the two equal).

    What ``t`` is, is a reading (``decay_over``):

    * ``round`` (ours, from the paper's text): ``t`` = the global round ``r`` (client updates // J) at
      dispatch; the job trains at ``γ0 / sqrt(r + 1)`` throughout.
    * ``local_epoch`` (the code released with the paper): ``t`` = the local epoch ``e`` of the job,
      restarting at every job: epoch ``e`` trains at ``γ / sqrt(e + 1)``, ``γ`` the job's rate.
      ``Ali-Forootani/AFL_non_convex_non_iid``, ``src/async_fdl_fashion_mnist_delay_track_lr_non_iid.py``
      lines 247-248 (commit d9a5d21): ``gamma_t = gamma_0 / (sqrt(epoch + 1) * (1 + alpha * delay_t))``,
      then a new Adam at that rate, inside the loop over local epochs; α = 0.01 and ``delay_t`` = 2, a
      constant, at lines 52-53 (the MNIST and CIFAR-10 scripts alike). We use the measured τ.

    (The authors' later code decays no client rate at all: its ``sqrt(t + 1)`` is on the server step,
    ``server.aggregator.server_lr_decay``.)

    Args:
        alpha: ``α`` ≥ 0 (0 turns the delay factor off).
        delay_at: ``arrival`` or ``dispatch``.
        decay: ``sqrt`` or ``none``.
        decay_over: ``round`` or ``local_epoch``.

    Example:
        >>> lr = PaperLR(alpha=0.5)
        >>> lr.at_dispatch(1e-3, round=3, previous_staleness=2), lr.at_arrival(2)
        (0.0005, 0.5)
        >>> PaperLR(alpha=0.5, delay_at="dispatch").at_dispatch(1e-3, round=3, previous_staleness=2)
        0.00025
        >>> released = PaperLR(alpha=0.5, delay_at="dispatch", decay_over="local_epoch")
        >>> released.at_dispatch(1e-3, round=3, previous_staleness=2)  # no round decay
        0.0005
        >>> released.epoch_lrs(1e-3, local_epochs=4)  # 1e-3 / sqrt(e + 1)
        [0.001, 0.0007071067811865475, 0.0005773502691896258, 0.0005]
    """

    alpha: float = 0.1
    delay_at: str = "arrival"
    decay: str = "sqrt"
    decay_over: str = "round"

    def __post_init__(self) -> None:
        require(math.isfinite(self.alpha) and self.alpha >= 0, "alpha", f"must be >= 0, got {self.alpha}")
        require(
            self.delay_at in DELAY_AT, "delay_at", f"got {self.delay_at!r}; allowed: {', '.join(DELAY_AT)}"
        )
        require(self.decay in DECAYS, "decay", f"got {self.decay!r}; allowed: {', '.join(DECAYS)}")
        require(
            self.decay_over in DECAY_OVER,
            "decay_over",
            f"got {self.decay_over!r}; allowed: {', '.join(DECAY_OVER)}",
        )

    def at_dispatch(self, base_lr: float, round: int, previous_staleness: int) -> float:
        alpha = self.alpha if self.delay_at == "dispatch" else 0.0  # α = 0: a factor of exactly 1
        by_round = self.decay == "sqrt" and self.decay_over == "round"
        return delay_aware_lr(base_lr, alpha, previous_staleness, round if by_round else None)

    def at_arrival(self, staleness: int) -> float:
        return delay_aware_lr(1.0, self.alpha, staleness) if self.delay_at == "arrival" else 1.0

    def epoch_lrs(self, lr: float, local_epochs: int) -> list[float] | None:
        if self.decay != "sqrt" or self.decay_over != "local_epoch":
            return None
        return [lr / math.sqrt(e + 1.0) for e in range(local_epochs)]
