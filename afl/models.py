"""Client models: the paper's MNIST CNN, a LeNet-5, the paper's CIFAR ResNet-20 and the authors' later
ResNet-14 for MNIST and Fashion-MNIST.

Every model takes ``in_channels``, ``num_classes`` and ``image_size`` (the side of a square input), so the
data set decides them. Register a new model with ``@MODELS.register("name")``.
"""

from __future__ import annotations

import torch
from torch import nn

from afl.components import MODELS  # declared there (light) so the config lists names without torch


@MODELS.register("cnn")
class PaperCNN(nn.Module):
    """The paper's MNIST CNN: three 3×3 convolutions (32 channels, padding 1, ReLU), global average
    pooling and a linear layer. 19,146 parameters on 1×28×28 inputs with 10 classes; any input size.

    Example:
        >>> PaperCNN(1, 10)(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(self, in_channels: int, num_classes: int, image_size: int = 28, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@MODELS.register("lenet")
class LeNet5(nn.Module):
    """LeNet-5 style: conv 5×5 (6, padding 2) → max-pool → conv 5×5 (16) → max-pool → 120 → 84 → classes.

    61,706 parameters on 1×28×28 with 10 classes. Needs inputs of at least 12×12.
    """

    def __init__(self, in_channels: int, num_classes: int, image_size: int = 28) -> None:
        super().__init__()
        side = (image_size // 2 - 4) // 2
        if side < 1:
            raise ValueError(f"lenet needs inputs of at least 12×12 pixels, got {image_size}×{image_size}")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.classifier = nn.Sequential(
            nn.Linear(16 * side * side, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    """Two 3×3 conv-BN layers with a residual; a 1×1 conv-BN projection when the shape changes."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """A CIFAR-style ResNet: a 3×3 conv-BN-ReLU stem with 16 channels, then three stages of BasicBlocks
    with 16/32/64 channels (strides 1, 2, 2; 1×1 conv-BN projection shortcuts), global average pooling and
    a linear layer. ``blocks`` gives the number of blocks per stage."""

    def __init__(self, in_channels: int, num_classes: int, blocks: tuple[int, int, int]) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU()
        )
        layers: list[nn.Module] = []
        in_planes = 16
        for (planes, stride), count in zip(((16, 1), (32, 2), (64, 2)), blocks):
            for i in range(count):
                layers.append(BasicBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
        self.blocks = nn.Sequential(*layers)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.blocks(self.stem(x))))


@MODELS.register("resnet20")
class ResNet20(ResNet):
    """The paper's CIFAR ResNet: :class:`ResNet` with BasicBlocks ×[3, 3, 3] (272,474 parameters on
    3×32×32 with 10 classes)."""

    def __init__(self, in_channels: int, num_classes: int, image_size: int = 32) -> None:
        super().__init__(in_channels, num_classes, (3, 3, 3))


@MODELS.register("resnet14")
class ResNet14(ResNet):
    """The authors' later code's ResNet for MNIST and Fashion-MNIST: :class:`ResNet` with BasicBlocks
    ×[2, 2, 2] and a stem taking ``in_channels`` (174,970 parameters on 1×28×28 with 10 classes).
    ``Ali-Forootani/Robust-Asynchronous-Federated-Learning``,
    ``src/async_fdl_fashion_mnist_delay_track_lr_non_iid.py`` lines 93-118 (``ResNetFashion``, commit
    a20905b; ``ResNetMNIST`` in ``..._mnist_..._10.py`` alike). Its ``log_softmax`` + NLL loss is our
    cross-entropy on the logits.

    Example:
        >>> ResNet14(1, 10)(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(self, in_channels: int, num_classes: int, image_size: int = 28) -> None:
        super().__init__(in_channels, num_classes, (2, 2, 2))


def build_model(name: str, *, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """Build a registered model by short name (see :data:`MODELS`)."""
    return MODELS.get(name, "model.name")(
        in_channels=in_channels, num_classes=num_classes, image_size=image_size
    )


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
