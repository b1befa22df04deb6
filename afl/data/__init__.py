"""Data sets held in memory as tensors (:mod:`afl.data.datasets`), and their split among federated clients
(:mod:`afl.data.partition`).

This module imports nothing heavy: it declares the registries of data set loaders and partition schemes,
whose built-in entries are lazy (``"module:attr"``, imported on first use), so the config lists and checks
their names without importing torch. A plug-in registers with ``@DATASET_LOADERS.register("name")``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from afl.registry import Registry

if TYPE_CHECKING:
    import numpy as np

    from afl.data.datasets import DatasetSplits


#: ``dataset.normalize``: each data set's own mean and std, or the released code's ``(p - 0.5) / 0.5``.
NORMALIZATIONS = ("mean_std", "half")


#: Data set loaders by name (``dataset.name``), see :mod:`afl.data.datasets`.
DATASET_LOADERS: Registry[DatasetSplits] = Registry(
    "dataset",
    lazy={
        "mnist": "afl.data.torchvision_sets:_load_mnist",
        "fashion_mnist": "afl.data.torchvision_sets:_load_fashion_mnist",
        "cifar10": "afl.data.torchvision_sets:_load_cifar10",
        "digits": "afl.data.builtin:_load_digits",
        "synthetic": "afl.data.builtin:_load_synthetic",
    },
)


#: Partition schemes by name (``partition.scheme``), see :mod:`afl.data.partition`.
SCHEMES: Registry[list[np.ndarray]] = Registry(
    "partition scheme",
    lazy={
        "dirichlet": "afl.data.partition:_dirichlet",
        "iid": "afl.data.partition:_iid",
        "shards": "afl.data.partition:_shards",
    },
)
