"""Splitting sample indices among clients."""

from __future__ import annotations

import numpy as np
import pytest

from afl.data import SCHEMES
from afl.data.partition import class_counts, partition, stratified_split
from afl.errors import ConfigError

LABELS = np.arange(2000) % 10  # 200 of each of 10 classes


def assert_exact_cover(parts: list[np.ndarray], n: int) -> None:
    """Every index 0..n-1 appears in exactly one part; parts are sorted int64."""
    for part in parts:
        assert part.dtype == np.int64
        assert np.all(np.diff(part) > 0)
    joined = np.concatenate(parts)
    assert len(joined) == n
    assert np.array_equal(np.sort(joined), np.arange(n))


def mean_class_entropy(labels: np.ndarray, parts: list[np.ndarray], num_classes: int) -> float:
    """Mean over clients of the entropy of the client's label distribution, as a fraction of log(C)."""
    counts = np.array(class_counts(labels, parts, num_classes), dtype=float)
    p = counts / counts.sum(1, keepdims=True)
    terms = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return float(-terms.sum(1).mean() / np.log(num_classes))


@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.5, 1.0, 10.0, 1000.0])
@pytest.mark.parametrize("num_clients", [1, 7, 50])
def test_dirichlet_assigns_every_sample_once(alpha: float, num_clients: int) -> None:
    parts = partition(
        LABELS, num_clients, "dirichlet", rng=np.random.default_rng(3), alpha=alpha, min_samples=0
    )
    assert len(parts) == num_clients
    assert_exact_cover(parts, len(LABELS))


def test_dirichlet_imbalanced_labels_cover() -> None:
    labels = np.random.default_rng(0).choice(5, size=777, p=[0.5, 0.3, 0.1, 0.07, 0.03])
    parts = partition(labels, 13, "dirichlet", rng=np.random.default_rng(1), alpha=0.3)
    assert_exact_cover(parts, 777)
    assert min(len(p) for p in parts) >= 1


def test_dirichlet_shuffles_within_a_class() -> None:
    # A client's share of a class is a random sample of it, not a contiguous run of the data order.
    labels = np.zeros(400, dtype=np.int64)
    parts = partition(labels, 4, "dirichlet", rng=np.random.default_rng(0), alpha=5.0)
    assert_exact_cover(parts, 400)
    assert all(p[-1] - p[0] + 1 > len(p) for p in parts if len(p) > 1)


def test_smaller_alpha_is_more_skewed() -> None:
    def entropy(alpha: float) -> float:
        parts = partition(LABELS, 20, "dirichlet", rng=np.random.default_rng(0), alpha=alpha, min_samples=1)
        return mean_class_entropy(LABELS, parts, 10)

    skewed, mild, uniform = entropy(0.1), entropy(1.0), entropy(100.0)
    assert skewed < mild < uniform
    assert skewed < 0.6  # most clients see a few classes
    assert uniform > 0.97  # every client sees nearly all classes equally


def test_min_samples_is_enforced() -> None:
    labels = LABELS[:1000]
    rng_seed = 5
    unconstrained = partition(
        labels, 40, "dirichlet", rng=np.random.default_rng(rng_seed), alpha=0.5, min_samples=0
    )
    assert min(len(p) for p in unconstrained) < 10  # so the constraint below has something to do
    parts = partition(labels, 40, "dirichlet", rng=np.random.default_rng(rng_seed), alpha=0.5, min_samples=10)
    assert min(len(p) for p in parts) >= 10
    assert_exact_cover(parts, 1000)


def test_impossible_min_samples_raises() -> None:
    # Exactly n / num_clients for every client: a Dirichlet draw essentially never does that.
    with pytest.raises(ConfigError) as info:
        partition(
            LABELS[:200],
            20,
            "dirichlet",
            rng=np.random.default_rng(0),
            alpha=0.01,
            min_samples=10,
            max_redraws=5,
        )
    assert (info.value.key, info.value.message) == (
        "partition.min_samples",
        "min_samples=10 could not be met by scheme 'dirichlet' with alpha=0.01 num_clients=20 after 5 draws; "
        "lower partition.min_samples or raise partition.alpha",
    )
    # Shards of 2, 2, 2, 2, 1 and 1 samples, two per client: these two draws both give a client the two 1s.
    with pytest.raises(ConfigError) as info:
        partition(LABELS[:10], 3, "shards", rng=np.random.default_rng(0), min_samples=3, max_redraws=2)
    assert info.value.message == (  # no alpha: the shards scheme has none
        "min_samples=3 could not be met by scheme 'shards' with num_clients=3 after 2 draws; "
        "lower partition.min_samples"
    )
    # More than the data can give at all is refused before drawing.
    with pytest.raises(ConfigError) as info:
        partition(LABELS[:200], 20, "iid", rng=np.random.default_rng(0), min_samples=11)
    assert (info.value.key, info.value.message) == (
        "partition.min_samples",
        "min_samples=11 for each of num_clients=20 clients needs 220 samples but there are only 200; "
        "lower partition.min_samples",
    )
    with pytest.raises(ConfigError) as info:
        partition(LABELS, 1000, "shards", rng=np.random.default_rng(0), shards_per_client=3)
    assert info.value.message == "num_clients * shards_per_client = 3000 shards exceed 2000 samples"


def test_smallest_valid_arguments() -> None:
    """One shard per client, one draw, and exactly n / num_clients samples each are all allowed."""
    parts = partition(LABELS, 10, "shards", rng=np.random.default_rng(0), shards_per_client=1)
    assert sorted(len(np.unique(LABELS[p])) for p in parts) == [1] * 10  # one label-sorted shard each
    assert_exact_cover(parts, len(LABELS))
    parts = partition(LABELS, 10, "iid", rng=np.random.default_rng(0), min_samples=200, max_redraws=1)
    assert [len(p) for p in parts] == [200] * 10


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
def test_same_seed_same_partition(scheme: str) -> None:
    np.random.seed(1)  # the global RNG must play no part
    a = partition(LABELS, 10, scheme, rng=np.random.default_rng(42))
    np.random.seed(2)
    b = partition(LABELS, 10, scheme, rng=np.random.default_rng(42))
    c = partition(LABELS, 10, scheme, rng=np.random.default_rng(43))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_iid_sizes_differ_by_at_most_one() -> None:
    labels = np.arange(1003) % 10
    parts = partition(labels, 10, "iid", rng=np.random.default_rng(0))
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == 1003
    assert_exact_cover(parts, 1003)
    # A random split, not contiguous blocks: each client sees every class.
    assert all(min(row) > 0 for row in class_counts(labels, parts, 10))


def test_shards_give_few_classes() -> None:
    labels = np.arange(1000) % 10  # sorted by label, 100 shards of 10 each fall inside one class
    parts = partition(labels, 50, "shards", rng=np.random.default_rng(0), shards_per_client=2)
    assert_exact_cover(parts, 1000)
    assert all(len(p) == 20 for p in parts)
    assert all(len(set(labels[p].tolist())) <= 2 for p in parts)
    assert any(len(set(labels[p].tolist())) == 2 for p in parts)

    # Unbalanced classes: a shard may straddle two classes, so at most 2 * shards_per_client per client.
    uneven = np.random.default_rng(1).choice(10, size=3001)
    parts = partition(uneven, 30, "shards", rng=np.random.default_rng(0), shards_per_client=3)
    assert_exact_cover(parts, 3001)
    assert all(len(set(uneven[p].tolist())) <= 6 for p in parts)
    assert np.mean([len(set(uneven[p].tolist())) for p in parts]) < 5


def test_class_counts_sum_up() -> None:
    parts = partition(LABELS, 9, "dirichlet", rng=np.random.default_rng(0), alpha=0.5)
    counts = class_counts(LABELS, parts, 10)
    assert len(counts) == 9 and all(len(row) == 10 for row in counts)
    assert all(isinstance(v, int) for row in counts for v in row)
    assert [sum(row) for row in counts] == [len(p) for p in parts]
    assert np.array(counts).sum(0).tolist() == np.bincount(LABELS).tolist()
    # A class absent from the data still gets a column.
    assert class_counts(np.array([0, 0, 1]), [np.array([0, 2]), np.array([1])], 4) == [
        [1, 1, 0, 0],
        [1, 0, 0, 0],
    ]


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"scheme": "pathological"}, "partition.scheme"),
        ({"alpha": 0.0}, "partition.alpha"),
        ({"alpha": -1.0}, "partition.alpha"),
        ({"alpha": float("inf")}, "partition.alpha"),  # infinite concentration: not a Dirichlet draw
        ({"alpha": float("nan")}, "partition.alpha"),
        ({"alpha": True}, "partition.alpha"),  # a bool is not a concentration, though Python counts it an int
        ({"alpha": "0.5"}, "partition.alpha"),
        ({"shards_per_client": 0}, "partition.shards_per_client"),
        ({"max_redraws": 0}, "partition.max_redraws"),
        ({"num_clients": 0}, "partition.num_clients"),
        ({"num_clients": 2001}, "partition.num_clients"),
        ({"min_samples": -1}, "partition.min_samples"),
        ({"scheme": "shards", "num_clients": 1000, "shards_per_client": 3}, "partition.shards_per_client"),
    ],
)
def test_invalid_arguments(kwargs: dict, key: str) -> None:
    arguments = {"num_clients": 10, "scheme": "dirichlet", **kwargs}
    with pytest.raises(ConfigError) as info:
        partition(LABELS, rng=np.random.default_rng(0), **arguments)
    assert info.value.key == key
    if key == "partition.scheme":
        assert all(name in info.value.message for name in ("dirichlet", "iid", "shards"))
    if key == "partition.alpha":
        assert info.value.message == f"must be a finite number > 0, got {kwargs['alpha']!r}"


def test_stratified_split_holds_out_the_fraction_of_every_class() -> None:
    labels = np.repeat(np.arange(4), [100, 50, 10, 3])
    kept, held = stratified_split(labels, 0.2, np.random.default_rng(7))
    assert np.bincount(labels[held], minlength=4).tolist() == [20, 10, 2, 1]  # round(0.2 n) per class
    assert np.intersect1d(kept, held).size == 0
    assert np.array_equal(np.sort(np.concatenate([kept, held])), np.arange(len(labels)))
    again, _ = stratified_split(labels, 0.2, np.random.default_rng(7))
    other, _ = stratified_split(labels, 0.2, np.random.default_rng(8))
    assert np.array_equal(again, kept) and not np.array_equal(other, kept)
    everything, none = stratified_split(labels, 0.0, np.random.default_rng(7))
    assert none.size == 0 and np.array_equal(everything, np.arange(len(labels)))


def test_stratified_split_bounds_types_and_empty_input() -> None:
    labels = np.repeat(np.arange(3), 10)
    kept, held = stratified_split(labels, 0.5, np.random.default_rng(0))
    assert kept.dtype == np.int64 and held.dtype == np.int64 and len(held) == 15
    for fraction in (1.0, 1.5, -0.1):  # 1 would leave nothing to train on
        with pytest.raises(ConfigError) as info:
            stratified_split(labels, fraction, np.random.default_rng(0))
        assert (info.value.key, info.value.message) == (
            "dataset.val_fraction",
            f"must be in [0, 1), got {fraction}",
        )
    kept, held = stratified_split(np.array([], dtype=np.int64), 0.2, np.random.default_rng(0))
    assert kept.size == 0 and held.size == 0 and kept.dtype == np.int64 and held.dtype == np.int64


def test_class_counts_take_empty_parts_and_refuse_labels_out_of_range() -> None:
    labels = np.array([0, 2, 2, 1])
    assert class_counts(labels, [np.array([1, 2]), [], [0, 3]], 3) == [[0, 0, 2], [0, 0, 0], [1, 1, 0]]
    for bad, parts in ((np.array([0, 3]), [np.array([0, 1])]), (np.array([-1, 1]), [np.array([0, 1])])):
        with pytest.raises(ValueError, match=r"^labels must lie in 0\.\.2$"):
            class_counts(bad, parts, 3)


def test_partition_defaults_are_the_documented_ones() -> None:
    """alpha 0.5, min_samples 1, shards_per_client 2, max_redraws 100 when not given."""
    explicit = {"alpha": 0.5, "min_samples": 1, "shards_per_client": 2, "max_redraws": 100}
    for scheme in ("dirichlet", "shards"):
        a = partition(LABELS, 10, scheme, rng=np.random.default_rng(4))
        b = partition(LABELS, 10, scheme, rng=np.random.default_rng(4), **explicit)
        assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert [len(p) for p in partition(np.array([0, 1, 1]), 2, "iid", rng=np.random.default_rng(0))] == [2, 1]
    assert all(len(p) == 2 for p in partition(np.arange(10) % 2, 5, "shards", rng=np.random.default_rng(0)))
    with pytest.raises(ConfigError, match="after 100 draws"):
        partition(LABELS[:200], 20, "dirichlet", rng=np.random.default_rng(0), alpha=0.01, min_samples=10)


@pytest.mark.parametrize("labels", [np.zeros((4, 2), dtype=np.int64), np.array([0.0, 1.0, 1.0, 0.0])])
def test_labels_must_be_a_one_dimensional_integer_array(labels: np.ndarray) -> None:
    with pytest.raises(ValueError, match="labels must be a 1-D integer array"):
        partition(labels, 2, "iid", rng=np.random.default_rng(0))


@pytest.mark.parametrize("value", [True, 2.0, "2"])
def test_counts_must_be_integers_not_booleans_or_floats(value) -> None:
    with pytest.raises(ConfigError) as info:
        partition(LABELS, value, "iid", rng=np.random.default_rng(0))
    assert (info.value.key, info.value.message) == (
        "partition.num_clients",
        f"must be an integer >= 1, got {value!r}",
    )


def test_label_and_client_count_edges() -> None:
    assert [len(p) for p in partition(np.arange(4) % 2, 4, "iid", rng=np.random.default_rng(0))] == [1] * 4
    with pytest.raises(ConfigError) as info:
        partition(np.arange(3), 4, "iid", rng=np.random.default_rng(0))
    assert (info.value.key, info.value.message) == (
        "partition.num_clients",
        "must be at most the number of samples (3), got 4",
    )
    with pytest.raises(ValueError, match="^labels must be >= 0$"):
        partition(np.array([0, -1, 1]), 2, "iid", rng=np.random.default_rng(0))
    with pytest.raises(ConfigError) as info:  # no labels at all: any dtype, then too few samples
        partition(np.array([]), 1, "iid", rng=np.random.default_rng(0))
    assert info.value.key == "partition.num_clients"
