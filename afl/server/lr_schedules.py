"""Client learning-rate schedules: pure functions of (base LR, round, staleness), registered by name.

A schedule has two halves, because the staleness τ of an update is known only when it arrives:

* :meth:`LRSchedule.at_dispatch` — the client LR handed out with a job, from the base LR ``γ0``, the
  round ``r`` (client updates so far // J; the barrier round in sync mode) and the staleness of that
  client's previous update (0 before its first);
* :meth:`LRSchedule.at_arrival` — a factor on the arriving update's delta, from its own staleness τ (for
  small steps the same as having trained at that rate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from afl.registry import Registry, require

LR_SCHEDULES: Registry[LRSchedule] = Registry("LR schedule")

DELAY_AT = ("arrival", "dispatch")
DECAYS = ("sqrt", "none")


class LRSchedule:
    """Base class: a constant rate, no factor at arrival."""

    def at_dispatch(self, base_lr: float, round: int, previous_staleness: int) -> float:
        """The LR of a job dispatched in ``round`` to a client whose last update was ``previous_staleness``
        versions stale."""
        return base_lr

    def at_arrival(self, staleness: int) -> float:
        """The factor on the delta of an update that arrives ``staleness`` versions stale."""
        return 1.0


@LR_SCHEDULES.register("constant")
@dataclass(frozen=True)
class ConstantLR(LRSchedule):
    """The base learning rate, always; deltas are applied as they are.

    Example:
        >>> ConstantLR().at_dispatch(1e-3, round=50, previous_staleness=9), ConstantLR().at_arrival(9)
        (0.001, 1.0)
    """


@LR_SCHEDULES.register("paper")
@dataclass(frozen=True)
class PaperLR(LRSchedule):
    """The paper's delay-aware rate ``γ = γ0 / (sqrt(r + 1) (1 + α τ))``.

    The paper's summary prints ``* (1 + α τ)`` but requires a higher delay to reduce the step, and the
    authors' code divides; so do we. ``γ0 / sqrt(r + 1)`` is the client LR at dispatch. The delay factor
    ``1 / (1 + α τ)`` uses the τ of the update it scales: with ``delay_at="arrival"`` (the default) the
    server multiplies that update's delta by it; with ``delay_at="dispatch"`` the client trains at the
    full rate computed with its *previous* τ instead. ``decay="none"`` drops the ``sqrt(r + 1)`` factor,
    so each mechanism can be ablated. The formula is :func:`callbacks.delay_aware_lr`, the one the
    :class:`callbacks.DelayAwareLR` callback sets in a client's Trainer.

    Args:
        alpha: ``α`` ≥ 0 (0 turns the delay factor off).
        delay_at: ``arrival`` or ``dispatch``.
        decay: ``sqrt`` or ``none``.

    Example:
        >>> lr = PaperLR(alpha=0.5)
        >>> lr.at_dispatch(1e-3, round=3, previous_staleness=2), lr.at_arrival(2)
        (0.0005, 0.5)
        >>> PaperLR(alpha=0.5, delay_at="dispatch").at_dispatch(1e-3, round=3, previous_staleness=2)
        0.00025
    """

    alpha: float = 0.1
    delay_at: str = "arrival"
    decay: str = "sqrt"

    def __post_init__(self) -> None:
        require(math.isfinite(self.alpha) and self.alpha >= 0, "alpha", f"must be >= 0, got {self.alpha}")
        require(
            self.delay_at in DELAY_AT, "delay_at", f"got {self.delay_at!r}; allowed: {', '.join(DELAY_AT)}"
        )
        require(self.decay in DECAYS, "decay", f"got {self.decay!r}; allowed: {', '.join(DECAYS)}")

    def at_dispatch(self, base_lr: float, round: int, previous_staleness: int) -> float:
        from callbacks.delay_lr import delay_aware_lr  # here: the callbacks import Lightning, checks need not

        alpha = self.alpha if self.delay_at == "dispatch" else 0.0  # α = 0: a factor of exactly 1
        return delay_aware_lr(base_lr, alpha, previous_staleness, round if self.decay == "sqrt" else None)

    def at_arrival(self, staleness: int) -> float:
        from callbacks.delay_lr import delay_aware_lr

        return delay_aware_lr(1.0, self.alpha, staleness) if self.delay_at == "arrival" else 1.0
