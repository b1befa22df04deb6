"""Data sets that need no files: scikit-learn's bundled digits (offline) and synthetic images."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from afl.data import DATASET_LOADERS
from afl.data.datasets import ArrayData, DatasetSplits
from afl.errors import ConfigError

# Mean and std of all 1797 images of sklearn's digits after scaling to [0, 1] (x / 16), computed once with
# ``x = load_digits().images / 16; x.mean(), x.std()`` -> 0.305260..., 0.376049... and hard-coded here.
DIGITS_MEAN, DIGITS_STD = 0.30526, 0.37605
DIGITS_TEST_SIZE = 297

SYNTHETIC_DEFAULTS: dict[str, int | float] = {
    "train_size": 2000,
    "test_size": 500,
    "num_classes": 10,
    "image_size": 8,
    "channels": 1,
    "noise": 1.0,
    "seed": 0,
}


# ------------------------------------------------------------------------------------------------ digits


@DATASET_LOADERS.register("digits")
def _load_digits(root: Path, download: bool) -> DatasetSplits:
    """sklearn's bundled 8×8 digits: 1797 images, a fixed 1500 / 297 train/test split."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(((bunch.images / 16.0 - DIGITS_MEAN) / DIGITS_STD).astype(np.float32)).unsqueeze(1)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    data = ArrayData(x.contiguous(), y)
    order = np.random.default_rng(0).permutation(len(data))  # fixed split, independent of any run seed
    train = data.subset(np.sort(order[:-DIGITS_TEST_SIZE]))
    test = data.subset(np.sort(order[-DIGITS_TEST_SIZE:]))
    return DatasetSplits(train, test, 10, "digits", ((DIGITS_MEAN,), (DIGITS_STD,)))


# --------------------------------------------------------------------------------------------- synthetic


def _synthetic_options(options: Mapping[str, Any]) -> dict[str, Any]:
    options = {k: v for k, v in options.items() if v is not None}  # None: the default (as in the config)
    unknown = sorted(set(options) - set(SYNTHETIC_DEFAULTS))
    if unknown:
        raise ConfigError(
            f"dataset.synthetic.{unknown[0]}", f"unknown option; allowed: {', '.join(SYNTHETIC_DEFAULTS)}"
        )
    merged: dict[str, Any] = {**SYNTHETIC_DEFAULTS, **options}
    minimum = {"train_size": 1, "test_size": 1, "num_classes": 2, "image_size": 1, "channels": 1, "seed": 0}
    for key, low in minimum.items():
        value = merged[key]
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ConfigError(f"dataset.synthetic.{key}", f"must be an integer >= {low}, got {value!r}")
    noise = merged["noise"]
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not 0 <= noise < float("inf"):
        raise ConfigError("dataset.synthetic.noise", f"must be a finite number >= 0, got {noise!r}")
    return merged


@DATASET_LOADERS.register("synthetic")
def _load_synthetic(root: Path, download: bool, **options: Any) -> DatasetSplits:
    """Class-conditional Gaussian images: ``template[class] + noise * N(0, 1)`` per pixel.

    Templates are standard normal images drawn from ``default_rng(seed)``; labels are balanced (``i mod
    num_classes``, shuffled). Two templates differ by about ``sqrt(2 * C * H * W)`` in Euclidean distance, so
    with the defaults a nearest-class-mean (linear) classifier is almost perfect; raise ``noise`` to make it
    harder.
    """
    opts = _synthetic_options(options)
    rng = np.random.default_rng(opts["seed"])
    c, s, k = opts["channels"], opts["image_size"], opts["num_classes"]
    templates = rng.standard_normal((k, c, s, s)).astype(np.float32)

    def draw(n: int) -> ArrayData:
        labels = rng.permutation(np.arange(n) % k)
        x = templates[labels] + np.float32(opts["noise"]) * rng.standard_normal(
            (n, c, s, s), dtype=np.float32
        )
        return ArrayData(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(labels.astype(np.int64)))

    train = draw(opts["train_size"])
    test = draw(opts["test_size"])
    return DatasetSplits(train, test, k, "synthetic")
