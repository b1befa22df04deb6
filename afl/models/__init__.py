"""Client models: the paper's MNIST CNN, a LeNet-5, the paper's CIFAR ResNet-20, the authors' later
ResNet-14 for MNIST and Fashion-MNIST, and a small Vision Transformer (LayerNorm, no BatchNorm).

The data set decides a model's inputs: each model gets those of :data:`MODEL_INPUTS` that its
constructor takes (``in_channels``, ``num_classes``, ``image_size`` the side of a square input, and
``input_shape`` the whole ``(C, H, W)``); its other keyword arguments are its options, set as ``model.*``
keys beside ``model.name`` and checked like every component's. Register a new model with
``@MODELS.register("name")``; this module imports no torch, so the config lists the names without it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from afl.registry import Registry

if TYPE_CHECKING:
    from torch import nn


#: Models by name (``model.name``): classes taking what they need of :data:`MODEL_INPUTS`, and options.
MODELS: Registry[nn.Module] = Registry(
    "model",
    lazy={
        "cnn": "afl.models.cnn:PaperCNN",
        "lenet": "afl.models.cnn:LeNet5",
        "resnet20": "afl.models.resnet:ResNet20",
        "resnet14": "afl.models.resnet:ResNet14",
        "vit": "afl.models.vit:ViT",
    },
)


#: What the data set gives a model, if its constructor takes it (never a ``model.*`` option).
MODEL_INPUTS = ("in_channels", "num_classes", "image_size", "input_shape")


def build_model(
    spec: str | Mapping[str, Any],
    *,
    in_channels: int,
    num_classes: int,
    image_size: int,
    input_shape: tuple[int, int, int] | None = None,
) -> nn.Module:
    """Build a registered model: ``spec`` is its name, or the ``model`` config node (name and options).

    ``input_shape`` defaults to ``(in_channels, image_size, image_size)``.
    """
    node = {"name": spec} if isinstance(spec, str) else dict(spec)
    shape = tuple(input_shape) if input_shape is not None else (in_channels, image_size, image_size)
    return MODELS.build(
        node,
        "model",
        in_channels=in_channels,
        num_classes=num_classes,
        image_size=image_size,
        input_shape=shape,
    )


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
