"""Image classification data sets, loaded whole into memory as normalised tensors: the common core.

Every data set is returned as a :class:`DatasetSplits` holding two :class:`ArrayData` (train and test) with
``x`` float32 ``N×C×H×W`` normalised by fixed per-dataset constants and ``y`` int64 labels. Nothing is
computed from the data at run time, so the same files always give the same tensors.

The sources live beside this module, one file per kind, and register their loaders in
:data:`DATASET_LOADERS`: :mod:`afl.data.torchvision_sets` (MNIST, Fashion-MNIST, CIFAR-10: files in
torchvision's layouts, found on disk or downloaded by torchvision) and :mod:`afl.data.builtin` (scikit-learn's
digits, synthetic images). Adding a data set is one loader function registered there.

torchvision and scikit-learn are imported inside the loaders that need them: importing torchvision costs
seconds, which the synthetic dataset and configuration errors should not pay.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from afl.data import DATASET_LOADERS
from afl.errors import ConfigError


@dataclass(frozen=True, eq=False)
class ArrayData:
    """A labelled set of images held in memory.

    Attributes:
        x: float32 images, ``N×C×H×W``, normalised, contiguous.
        y: int64 labels, ``N``.
    """

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if self.x.dtype != torch.float32 or self.x.dim() != 4:
            raise ValueError(f"x must be float32 N×C×H×W, got {self.x.dtype} {tuple(self.x.shape)}")
        if self.y.dtype != torch.int64 or self.y.dim() != 1:
            raise ValueError(f"y must be int64 of shape N, got {self.y.dtype} {tuple(self.y.shape)}")
        if len(self.x) != len(self.y):
            raise ValueError(f"x has {len(self.x)} samples but y has {len(self.y)}")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """The shape ``(C, H, W)`` of one image."""
        c, h, w = self.x.shape[1:]
        return int(c), int(h), int(w)

    def subset(self, indices: np.ndarray | torch.Tensor) -> ArrayData:
        """Return the samples at ``indices`` (a copy, contiguous)."""
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return ArrayData(self.x[idx].contiguous(), self.y[idx].contiguous())


@dataclass(frozen=True, eq=False)
class DatasetSplits:
    """The train and test sets of one dataset.

    Attributes:
        train: training samples.
        test: test samples.
        num_classes: number of classes; labels are ``0 .. num_classes - 1``.
        name: the registry name the data was loaded under.
        pixel_stats: per channel, the ``(mean, std)`` that pixels in [0, 1] were normalised with
            (``(p - mean) / std``); None for data that are not pixels (``synthetic``).
    """

    train: ArrayData
    test: ArrayData
    num_classes: int
    name: str
    pixel_stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None


#: A loader gets the data root and the download flag, then its options as keyword arguments: the keys of
#: ``dataset.options`` (checked against its signature like any component's; a plug-in declares them as
#: keyword arguments with defaults), or for ``synthetic`` those of ``dataset.synthetic``.
Loader = Callable[..., DatasetSplits]

# Loaders by data set name (DATASET_LOADERS): register a Loader with ``@DATASET_LOADERS.register("name")``.


def load_dataset(
    name: str,
    *,
    root: str | os.PathLike[str],
    download: bool = False,
    train_subset: int | None = None,
    test_subset: int | None = None,
    synthetic: Mapping[str, Any] | None = None,
    normalize: str = "mean_std",
    options: Mapping[str, Any] | None = None,
) -> DatasetSplits:
    """Load a dataset by registry name.

    Args:
        name: one of :data:`DATASET_LOADERS` (``mnist``, ``fashion_mnist``, ``cifar10``, ``digits``,
            ``synthetic``).
        root: folder holding (or receiving) the data files. Relative paths are relative to the working
            directory.
        download: let torchvision download files that are not found locally.
        train_subset: keep only this many training samples (a fixed subset, see :func:`fixed_subset`).
        test_subset: keep only this many test samples.
        synthetic: options of the ``synthetic`` dataset (keys of :data:`SYNTHETIC_DEFAULTS`); ignored by
            the other datasets.
        normalize: ``mean_std`` (each data set's own per-channel mean and std, as its loader gives it)
            or ``half``: ``(p - 0.5) / 0.5`` on pixels ``p`` in [0, 1], the code released with the paper's
            ``Normalize((0.5,), (0.5,))`` (see :func:`renormalize`).
        options: the loader's own options (``dataset.options``), as keyword arguments.

    Returns:
        The train and test sets.

    Raises:
        ConfigError: unknown name, data files missing or unreadable, failed download, bad subset size, bad
            synthetic option.
    """
    loader = DATASET_LOADERS.get(name, "dataset.name")
    own = (synthetic or {}) if name == "synthetic" else {}
    splits = loader(Path(root).expanduser(), bool(download), **own, **(options or {}))
    train = fixed_subset(splits.train, train_subset, "dataset.train_subset")
    test = fixed_subset(splits.test, test_subset, "dataset.test_subset")
    if normalize == "half":
        if splits.pixel_stats is None:
            raise ConfigError("dataset.normalize", f"half needs images of pixels in [0, 1]; {name} has none")
        train, test = (renormalize(d, *splits.pixel_stats) for d in (train, test))
    return DatasetSplits(train, test, splits.num_classes, name, splits.pixel_stats)


def renormalize(data: ArrayData, mean: tuple[float, ...], std: tuple[float, ...]) -> ArrayData:
    """Images normalised as ``(p - mean) / std`` per channel, normalised instead as ``(p - 0.5) / 0.5``:
    ``x' = 2 std x + 2 mean - 1`` (the released code's ``Normalize((0.5,), (0.5,))``, on every data set).

    Example:
        >>> pixels = torch.tensor([0.0, 0.25, 1.0]).view(3, 1, 1, 1)
        >>> x = ArrayData((pixels - 0.2) / 0.4, torch.zeros(3, dtype=torch.int64))
        >>> renormalize(x, (0.2,), (0.4,)).x.flatten().tolist()
        [-1.0, -0.5, 1.0]
    """
    shape = (1, -1, 1, 1)
    scale = 2 * torch.tensor(std, dtype=torch.float32).view(shape)
    shift = 2 * torch.tensor(mean, dtype=torch.float32).view(shape) - 1
    return ArrayData((data.x * scale + shift).contiguous(), data.y)


def fixed_subset(data: ArrayData, size: int | None, key: str) -> ArrayData:
    """Keep ``size`` samples: the first ``size`` of a permutation drawn from ``default_rng(0)``.

    The subset does not depend on any run seed, and being a uniform random draw it keeps the class balance
    roughly. The kept samples stay in their original order.

    Args:
        data: the full set.
        size: how many samples to keep; ``None`` keeps everything.
        key: config key named in errors.

    Returns:
        The subset (``data`` itself when ``size`` is ``None``).

    Raises:
        ConfigError: ``size`` is not an integer in ``1 .. len(data)``.
    """
    if size is None:
        return data
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise ConfigError(key, f"must be an integer or null, got {size!r}")
    if not 1 <= size <= len(data):
        raise ConfigError(key, f"must be between 1 and {len(data)} (the size of the set), got {size}")
    keep = np.sort(np.random.default_rng(0).permutation(len(data))[:size])
    return data.subset(keep)
