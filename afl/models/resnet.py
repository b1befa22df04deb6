"""ResNets for small images: the paper's CIFAR ResNet-20 and the authors' later ResNet-14."""

from __future__ import annotations

import torch
from torch import nn

from afl.models import MODELS


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
