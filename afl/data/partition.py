"""Split a labelled training set among federated clients.

:func:`partition` returns one sorted int64 index array per client; every sample goes to exactly one client.
Schemes are registered by short name in :data:`SCHEMES`: ``dirichlet`` (label skew controlled by
``alpha``), ``iid`` and ``shards`` (each client gets a few label-sorted shards). All randomness comes from
the generator passed in, so the same seed gives the same partition.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from afl.data import SCHEMES
from afl.errors import ConfigError


@dataclass(frozen=True)
class PartitionOptions:
    """Scheme parameters, validated by :func:`partition`.

    Attributes:
        alpha: Dirichlet concentration (``dirichlet``).
        shards_per_client: shards each client receives (``shards``).
    """

    alpha: float
    shards_per_client: int


#: A scheme draws one partition: (labels, num_clients, rng, options) -> per-client index arrays.
Scheme = Callable[[np.ndarray, int, np.random.Generator, PartitionOptions], list[np.ndarray]]

# Partition schemes by name (SCHEMES): register a Scheme with ``@SCHEMES.register("name")``.


def partition(
    labels: np.ndarray,
    num_clients: int,
    scheme: str,
    *,
    rng: np.random.Generator,
    alpha: float = 0.5,
    min_samples: int = 1,
    shards_per_client: int = 2,
    max_redraws: int = 100,
) -> list[np.ndarray]:
    """Split sample indices among clients.

    Args:
        labels: integer class label of each sample (1-D, values >= 0).
        num_clients: number of clients, ``1 .. len(labels)``.
        scheme: one of :data:`SCHEMES` (``dirichlet``, ``iid``, ``shards``).
        rng: the only source of randomness.
        alpha: Dirichlet concentration (``dirichlet`` only); smaller means more label skew.
        min_samples: every client must get at least this many samples; the whole partition is re-drawn
            until it does.
        shards_per_client: shards per client (``shards`` only).
        max_redraws: how many partitions to draw at most while trying to meet ``min_samples``.

    Returns:
        For each client, a sorted int64 array of sample indices. Together they cover ``0 .. len(labels)-1``
        exactly once.

    Raises:
        ConfigError: unknown scheme, invalid parameter, or ``min_samples`` not met within ``max_redraws``
            draws.
    """
    draw = SCHEMES.get(scheme, "partition.scheme")
    labels = _checked_labels(labels)
    _check_options(len(labels), num_clients, scheme, alpha, min_samples, shards_per_client, max_redraws)

    options = PartitionOptions(alpha=float(alpha), shards_per_client=int(shards_per_client))
    for _ in range(max_redraws):
        parts = draw(labels, int(num_clients), rng, options)
        if min(len(p) for p in parts) >= min_samples:
            return [np.sort(p).astype(np.int64, copy=False) for p in parts]
    with_alpha = f"alpha={alpha} " if scheme == "dirichlet" else ""
    raise ConfigError(
        "partition.min_samples",
        f"min_samples={min_samples} could not be met by scheme {scheme!r} with {with_alpha}"
        f"num_clients={num_clients} after {max_redraws} draws; lower partition.min_samples"
        + (" or raise partition.alpha" if scheme == "dirichlet" else ""),
    )


def _checked_labels(labels: np.ndarray) -> np.ndarray:
    """``labels`` as an array; a ValueError unless it is 1-D, of integers (or empty), none negative."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or not (np.issubdtype(labels.dtype, np.integer) or labels.size == 0):
        raise ValueError(f"labels must be a 1-D integer array, got {labels.dtype} of shape {labels.shape}")
    if labels.size and labels.min() < 0:
        raise ValueError("labels must be >= 0")
    return labels


def _check_options(
    n: int,
    num_clients: int,
    scheme: str,
    alpha: float,
    min_samples: int,
    shards_per_client: int,
    max_redraws: int,
) -> None:
    """:func:`partition`'s parameters, checked for ``n`` samples (a :class:`ConfigError` names the first
    one that is wrong): each in its range, and enough samples for the clients, shards and ``min_samples``."""
    _check_int("partition.num_clients", num_clients, 1)
    if num_clients > n:
        raise ConfigError(
            "partition.num_clients", f"must be at most the number of samples ({n}), got {num_clients}"
        )
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < float("inf"):
        raise ConfigError("partition.alpha", f"must be a finite number > 0, got {alpha!r}")
    _check_int("partition.min_samples", min_samples, 0)
    _check_int("partition.shards_per_client", shards_per_client, 1)
    _check_int("partition.max_redraws", max_redraws, 1)
    if scheme == "shards" and num_clients * shards_per_client > n:
        raise ConfigError(
            "partition.shards_per_client",
            f"num_clients * shards_per_client = {num_clients * shards_per_client} shards exceed {n} samples",
        )
    if min_samples * num_clients > n:
        raise ConfigError(
            "partition.min_samples",
            f"min_samples={min_samples} for each of num_clients={num_clients} clients needs "
            f"{min_samples * num_clients} samples but there are only {n}; lower partition.min_samples",
        )


def stratified_split(
    labels: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Hold out ``fraction`` of every class: ``(kept, held_out)`` sorted index arrays.

    Each class gives ``round(fraction · n_class)`` of its samples, drawn by ``rng``; used for the
    validation split, taken from the training data before partitioning.

    Example:
        >>> kept, held = stratified_split(np.array([0, 0, 0, 0, 1, 1]), 0.5, np.random.default_rng(0))
        >>> len(kept), len(held), sorted(np.array([0, 0, 0, 0, 1, 1])[held].tolist())
        (3, 3, [0, 0, 1])
    """
    if not 0 <= fraction < 1:
        raise ConfigError("dataset.val_fraction", f"must be in [0, 1), got {fraction}")
    held = [g[: int(round(fraction * len(g)))] for g in _grouped_by_class(np.asarray(labels), rng)]
    held_out = np.sort(np.concatenate(held)) if held else np.empty(0, dtype=np.int64)
    kept = np.setdiff1d(np.arange(len(labels)), held_out, assume_unique=True)
    return kept.astype(np.int64), held_out.astype(np.int64)


def class_counts(labels: np.ndarray, parts: Sequence[np.ndarray], num_classes: int) -> list[list[int]]:
    """Count each client's samples per class (plain ints, ready to save with a run).

    Args:
        labels: label of every sample.
        parts: per-client index arrays, as returned by :func:`partition`.
        num_classes: number of classes; labels must lie in ``0 .. num_classes - 1``.

    Returns:
        ``counts[client][class]``.
    """
    labels = np.asarray(labels)
    counts = []
    for part in parts:
        client_labels = labels[np.asarray(part, dtype=np.int64)]
        if client_labels.size and (client_labels.min() < 0 or client_labels.max() >= num_classes):
            raise ValueError(f"labels must lie in 0..{num_classes - 1}")
        counts.append(np.bincount(client_labels, minlength=num_classes).tolist())
    return counts


def _check_int(key: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ConfigError(key, f"must be an integer >= {low}, got {value!r}")


def _grouped_by_class(labels: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """Indices of each present class, each group shuffled."""
    order = np.argsort(labels, kind="stable")
    boundaries = np.flatnonzero(np.diff(labels[order])) + 1
    groups = np.split(order, boundaries)
    for group in groups:
        rng.shuffle(group)
    return groups


@SCHEMES.register("dirichlet")
def _dirichlet(
    labels: np.ndarray, num_clients: int, rng: np.random.Generator, options: PartitionOptions
) -> list[np.ndarray]:
    """For each class, split its shuffled indices by cut points at the cumulative ``Dir(alpha)`` shares.

    Cut points are ``floor(cumsum(p)[:-1] * n_class)``, so the last client takes the remainder and no
    sample is dropped.
    """
    pieces: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for group in _grouped_by_class(labels, rng):
        shares = rng.dirichlet(np.full(num_clients, options.alpha))
        if not np.all(np.isfinite(shares)):  # extremely small alpha: numpy may underflow to nan
            shares = np.zeros(num_clients)
            shares[rng.integers(num_clients)] = 1.0
        cuts = np.floor(np.cumsum(shares)[:-1] * len(group)).astype(np.int64)
        cuts = np.clip(cuts, 0, len(group))
        for client, chunk in enumerate(np.split(group, cuts)):
            pieces[client].append(chunk)
    return [np.concatenate(p) if p else np.empty(0, dtype=np.int64) for p in pieces]


@SCHEMES.register("iid")
def _iid(
    labels: np.ndarray, num_clients: int, rng: np.random.Generator, options: PartitionOptions
) -> list[np.ndarray]:
    """A random permutation cut into ``num_clients`` parts whose sizes differ by at most one."""
    return list(np.array_split(rng.permutation(len(labels)), num_clients))


@SCHEMES.register("shards")
def _shards(
    labels: np.ndarray, num_clients: int, rng: np.random.Generator, options: PartitionOptions
) -> list[np.ndarray]:
    """Sort by label (stable), cut into ``num_clients * shards_per_client`` near-equal shards, deal out."""
    spc = options.shards_per_client
    shards = np.array_split(np.argsort(labels, kind="stable"), num_clients * spc)
    dealt = rng.permutation(len(shards))
    return [np.concatenate([shards[j] for j in dealt[c * spc : (c + 1) * spc]]) for c in range(num_clients)]
