"""Client learning-rate schedules: pure functions of (base LR, round, staleness), registered by name.

The server calls the schedule when it dispatches a job; the client trains at the returned rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from afl.registry import Registry, require

LR_SCHEDULES: Registry[LRSchedule] = Registry("LR schedule")


class LRSchedule:
    """``lr = schedule(base_lr, round, staleness)``.

    ``round`` is the communication round at dispatch (client updates so far // concurrency) and
    ``staleness`` the staleness of the client's previous update (0 before its first).
    """

    def __call__(self, base_lr: float, round: int, staleness: int) -> float:
        raise NotImplementedError


@LR_SCHEDULES.register("constant")
@dataclass(frozen=True)
class ConstantLR(LRSchedule):
    """The base learning rate, always.

    Example:
        >>> ConstantLR()(1e-3, round=50, staleness=9)
        0.001
    """

    def __call__(self, base_lr: float, round: int, staleness: int) -> float:
        return base_lr


@LR_SCHEDULES.register("paper")
@dataclass(frozen=True)
class PaperLR(LRSchedule):
    """The paper's delay-aware rate ``γ = γ0 / (sqrt(r + 1) (1 + α τ))``.

    The paper's summary prints ``* (1 + α τ)`` but requires a higher delay to reduce the step, and the
    authors' code divides; so do we.

    Example:
        >>> PaperLR(alpha=0.5)(1e-3, round=3, staleness=2)
        0.00025
    """

    alpha: float = 0.1

    def __post_init__(self) -> None:
        require(self.alpha >= 0, "alpha", f"must be >= 0, got {self.alpha}")

    def __call__(self, base_lr: float, round: int, staleness: int) -> float:
        return base_lr / (math.sqrt(round + 1.0) * (1.0 + self.alpha * staleness))
