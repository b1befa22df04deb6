"""Delay models of the simulated clock (DESIGN §3).

A job's duration is decided at dispatch: ``samples_trained * time_per_sample / speed[c]`` of compute,
plus a communication delay drawn per job. Speeds are drawn once per client. Both are small components
registered by short name: add a distribution by registering a class with a ``sample(rng) -> float``
method in :data:`SPEEDS` or :data:`COMM_DELAYS`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from afl.registry import Registry, require
from afl.rng import derive_rng

SPEEDS: Registry[Distribution] = Registry("speed distribution")
COMM_DELAYS: Registry[Distribution] = Registry("communication delay")


class Distribution:
    """A one-dimensional distribution: ``sample(rng)`` returns one draw."""

    def sample(self, rng: np.random.Generator) -> float:
        raise NotImplementedError


@SPEEDS.register("constant")
@COMM_DELAYS.register("constant")
@dataclass(frozen=True)
class Constant(Distribution):
    """Always ``value`` (speed 1 = every client equally fast; delay 0 = no communication delay)."""

    value: float = 1.0

    def __post_init__(self) -> None:
        require(self.value >= 0, "value", f"must be >= 0, got {self.value}")

    def sample(self, rng: np.random.Generator) -> float:
        return self.value


@SPEEDS.register("uniform")
@dataclass(frozen=True)
class UniformSpeed(Distribution):
    """Speed factor uniform in ``[low, high]``."""

    low: float = 0.2
    high: float = 1.0

    def __post_init__(self) -> None:
        require(0 < self.low <= self.high, "low", f"need 0 < low <= high, got {self.low}, {self.high}")

    def sample(self, rng: np.random.Generator) -> float:
        return float(rng.uniform(self.low, self.high))


@SPEEDS.register("lognormal")
@dataclass(frozen=True)
class LogNormalSpeed(Distribution):
    """Speed factor ``exp(N(0, sigma²))``: median 1, a long tail of stragglers and of fast clients."""

    sigma: float = 1.0

    def __post_init__(self) -> None:
        require(self.sigma >= 0, "sigma", f"must be >= 0, got {self.sigma}")

    def sample(self, rng: np.random.Generator) -> float:
        return float(np.exp(rng.normal(0.0, self.sigma)))


@COMM_DELAYS.register("uniform")
@dataclass(frozen=True)
class UniformDelay(Distribution):
    """Communication delay uniform in ``[0, max]``, as in the paper."""

    max: float = 1.0

    def __post_init__(self) -> None:
        require(self.max >= 0, "max", f"must be >= 0, got {self.max}")

    def sample(self, rng: np.random.Generator) -> float:
        return float(rng.uniform(0.0, self.max))


@COMM_DELAYS.register("exponential")
@dataclass(frozen=True)
class ExponentialDelay(Distribution):
    """Unbounded communication delay, exponential with the given mean."""

    mean: float = 1.0

    def __post_init__(self) -> None:
        require(self.mean > 0, "mean", f"must be > 0, got {self.mean}")

    def sample(self, rng: np.random.Generator) -> float:
        return float(rng.exponential(self.mean))


class DelayModel:
    """Durations of client jobs in simulated seconds.

    Args:
        speed: per-client speed distribution, drawn once per client from ``(seed, "speed", client)``.
        comm: per-job communication delay, drawn from ``(seed, "comm", client, dispatch_index)``.
        time_per_sample: simulated seconds to train on one sample at speed 1.
        num_clients: C.
        seed: the run's master seed.
    """

    def __init__(
        self, *, speed: Distribution, comm: Distribution, time_per_sample: float, num_clients: int, seed: int
    ) -> None:
        self.time_per_sample = time_per_sample
        self.comm = comm
        self.seed = seed
        self.speeds = [max(speed.sample(derive_rng(seed, "speed", c)), 1e-12) for c in range(num_clients)]

    def duration(self, client_id: int, samples_trained: int, dispatch_index: int) -> float:
        compute = samples_trained * self.time_per_sample / self.speeds[client_id]
        return compute + self.comm.sample(derive_rng(self.seed, "comm", client_id, dispatch_index))
