"""Small models for tests that train a client outside a run."""

from __future__ import annotations

from torch import nn

from afl.models import build_model


def tiny_cnn(num_classes: int = 10) -> nn.Module:
    """The paper's CNN on 1×8×8 images (the synthetic data set's default size)."""
    return build_model("cnn", in_channels=1, num_classes=num_classes, image_size=8)
