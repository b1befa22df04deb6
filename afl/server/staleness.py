"""Staleness functions ``s(τ)``: how much an update that is ``τ`` versions old counts.

Pure, tiny and registered by short name in :data:`STALENESS`; aggregators take one as their
``staleness`` option, e.g. ``server.aggregator.staleness.name=hinge server.aggregator.staleness.b=4``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

from afl.registry import Registry, require

STALENESS: Registry[StalenessFunction] = Registry("staleness function")


class StalenessFunction(ABC):
    """Maps a staleness ``τ ≥ 0`` to a weight in ``(0, 1]``; ``s(0) = 1``."""

    @abstractmethod
    def __call__(self, tau: int) -> float: ...


@STALENESS.register("constant")
@dataclass(frozen=True)
class Constant(StalenessFunction):
    """``s(τ) = 1``: staleness is ignored.

    Example:
        >>> Constant()(7)
        1.0
    """

    def __call__(self, tau: int) -> float:
        return 1.0


@STALENESS.register("inverse")
@dataclass(frozen=True)
class Inverse(StalenessFunction):
    """``s(τ) = 1 / (1 + a τ)``, ``a = 0.2`` unless set: the AFL default (``server.aggregator.name=afl``
    without a ``staleness`` node is this, as is ``staleness.name=inverse`` without ``a``).

    Example:
        >>> Inverse(a=0.5)(2)
        0.5
    """

    a: float = 0.2

    def __post_init__(self) -> None:
        require(self.a >= 0, "a", f"must be >= 0, got {self.a}")

    def __call__(self, tau: int) -> float:
        return 1.0 / (1.0 + self.a * tau)


@STALENESS.register("polynomial")
@dataclass(frozen=True)
class Polynomial(StalenessFunction):
    """``s(τ) = (τ + 1)^(-a)`` (FedAsync); ``a = 0.5`` gives FedBuff's ``1 / sqrt(1 + τ)``.

    Example:
        >>> Polynomial(a=0.5)(3)
        0.5
    """

    a: float = 0.5

    def __post_init__(self) -> None:
        require(self.a >= 0, "a", f"must be >= 0, got {self.a}")

    def __call__(self, tau: int) -> float:
        return math.pow(tau + 1.0, -self.a)


@STALENESS.register("hinge")
@dataclass(frozen=True)
class Hinge(StalenessFunction):
    """``s(τ) = 1`` if ``τ ≤ b`` else ``1 / (a (τ - b) + 1)`` (FedAsync).

    Example:
        >>> Hinge(a=10.0, b=4)(5)
        0.09090909090909091
    """

    a: float = 10.0
    b: int = 4

    def __post_init__(self) -> None:
        require(self.a >= 0, "a", f"must be >= 0, got {self.a}")
        require(self.b >= 0, "b", f"must be >= 0, got {self.b}")

    def __call__(self, tau: int) -> float:
        return 1.0 if tau <= self.b else 1.0 / (self.a * (tau - self.b) + 1.0)
