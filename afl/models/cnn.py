"""The paper's MNIST CNN and a LeNet-5."""

from __future__ import annotations

import torch
from torch import nn

from afl.models import MODELS


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
