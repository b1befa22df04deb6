"""The registries of the components that need torch to be defined: models, client optimizers, data sets
and partition schemes.

They are declared here, in a module that imports nothing heavy, so the config lists and checks their names
without importing torch or Lightning (seconds each). The built-in entries are lazy (``"module:attr"``):
their module is imported on first use, and registers them there with the usual decorator. The modules that
define them re-export their registry (``afl.models.MODELS`` is :data:`MODELS`), and a plug-in registers
with ``@MODELS.register("name")`` as before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from afl.registry import Registry

if TYPE_CHECKING:
    import numpy as np
    import torch

    from afl.data.datasets import DatasetSplits

#: Models by name (``model.name``): classes taking ``in_channels``, ``num_classes``, ``image_size``.
MODELS: Registry[torch.nn.Module] = Registry(
    "model",
    lazy={
        "cnn": "afl.models:PaperCNN",
        "lenet": "afl.models:LeNet5",
        "resnet20": "afl.models:ResNet20",
        "resnet14": "afl.models:ResNet14",
    },
)

#: Client optimizers by name (``client.optimizer``): ``(parameters, lr=, momentum=, weight_decay=)``.
OPTIMIZERS: Registry[torch.optim.Optimizer] = Registry(
    "optimizer", lazy={"adam": "afl.client:_adam", "sgd": "afl.client:_sgd"}
)

#: ``client.optimizer_reset``: one client optimizer per job, or its state cleared every local epoch.
OPTIMIZER_RESETS = ("job", "epoch")

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
