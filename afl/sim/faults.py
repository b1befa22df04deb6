"""Injected client faults (``faults.*``), for testing that a run survives misbehaving clients.

Each job draws its fault, if any, from ``(seed, "fault", dispatch_index)``: the same seed gives the same
faults whatever the executor. Kinds: ``raise`` (the client job raises), ``nonfinite`` (it returns NaN
weights) and ``slow`` (it takes ``slow_factor`` times its simulated duration, so ``client.timeout_s`` can
catch it). The loop rejects such updates and counts them by reason; see :mod:`afl.sim.loop`.
"""

from __future__ import annotations

from dataclasses import dataclass

from afl.rng import derive_rng

FAULT_KINDS = ("raise", "nonfinite", "slow")
REJECT_REASONS = ("error", "nonfinite", "timeout", "norm")


@dataclass(frozen=True)
class FaultModel:
    """Which jobs misbehave, and how.

    Args:
        rate: the share of jobs with a fault, in [0, 1].
        kinds: the kinds drawn from, uniformly.
        slow_factor: how many times longer a ``slow`` job takes.
        seed: the run's master seed.

    Example:
        >>> faults = FaultModel(rate=1.0, kinds=("slow",), seed=0)
        >>> faults.draw(7), FaultModel(rate=0.0).draw(7)
        ('slow', None)
    """

    rate: float = 0.0
    kinds: tuple[str, ...] = FAULT_KINDS
    slow_factor: float = 10.0
    seed: int = 0

    def draw(self, job_id: int) -> str | None:
        """The fault of job ``job_id`` (its dispatch index), or None."""
        if self.rate <= 0:
            return None
        rng = derive_rng(self.seed, "fault", job_id)
        if rng.random() >= self.rate:
            return None
        return self.kinds[int(rng.integers(len(self.kinds)))]
