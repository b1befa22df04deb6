"""Datasets held in memory as tensors, and their split among federated clients."""

from afl.data.datasets import DATASET_LOADERS, ArrayData, DatasetSplits, load_dataset
from afl.data.partition import SCHEMES, class_counts, partition

__all__ = [
    "DATASET_LOADERS",
    "SCHEMES",
    "ArrayData",
    "DatasetSplits",
    "class_counts",
    "load_dataset",
    "partition",
]
