"""Derived random streams: every draw comes from ``(seed, purpose, *keys)``, never from global state.

So the same seed gives the same run whatever order threads finish in, and adding a new draw for one
purpose never shifts the draws of another.
"""

from __future__ import annotations

import zlib

import numpy as np


def _entropy(seed: int, purpose: str, keys: tuple[int, ...]) -> list[int]:
    if seed < 0 or any(k < 0 for k in keys):
        raise ValueError(f"seed and keys must be >= 0, got {seed}, {keys}")
    return [seed, zlib.crc32(purpose.encode()), *keys]


def derive_rng(seed: int, purpose: str, *keys: int) -> np.random.Generator:
    """A NumPy generator for one purpose, e.g. ``derive_rng(seed, "comm", client_id, dispatch_index)``.

    Example:
        >>> float(derive_rng(0, "x", 1).random()) == float(derive_rng(0, "x", 1).random())
        True
    """
    return np.random.default_rng(np.random.SeedSequence(_entropy(seed, purpose, keys)))


def derive_seed(seed: int, purpose: str, *keys: int) -> int:
    """A 63-bit integer seed (for ``torch.Generator.manual_seed``) for one purpose."""
    state = np.random.SeedSequence(_entropy(seed, purpose, keys)).generate_state(1, dtype=np.uint64)
    return int(state[0] >> np.uint64(1))
