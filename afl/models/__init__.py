"""Client models: the paper's MNIST CNN, a LeNet-5, the paper's CIFAR ResNet-20 and the authors' later
ResNet-14 for MNIST and Fashion-MNIST.

Every model takes ``in_channels``, ``num_classes`` and ``image_size`` (the side of a square input), so the
data set decides them. Register a new model with ``@MODELS.register("name")``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from afl.registry import Registry

if TYPE_CHECKING:
    from torch import nn


#: Models by name (``model.name``): classes taking ``in_channels``, ``num_classes``, ``image_size``.
MODELS: Registry[nn.Module] = Registry(
    "model",
    lazy={
        "cnn": "afl.models.cnn:PaperCNN",
        "lenet": "afl.models.cnn:LeNet5",
        "resnet20": "afl.models.resnet:ResNet20",
        "resnet14": "afl.models.resnet:ResNet14",
    },
)


def build_model(name: str, *, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """Build a registered model by short name (see :data:`MODELS`)."""
    return MODELS.get(name, "model.name")(
        in_channels=in_channels, num_classes=num_classes, image_size=image_size
    )


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
