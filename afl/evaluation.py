"""Evaluation of the global model on the held-out test set (and the validation split, if any)."""

from __future__ import annotations

import torch
from torch import nn


@torch.inference_mode()
def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024, prefix: str = "test"
) -> dict[str, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``(x, y)``, in eval mode (BatchNorm uses its
    running statistics), as ``{prefix}_loss`` and ``{prefix}_accuracy``."""
    was_training = model.training
    model.eval()
    loss_sum, correct = 0.0, 0
    for start in range(0, len(y), batch_size):
        logits = model(x[start : start + batch_size])
        target = y[start : start + batch_size]
        loss_sum += float(nn.functional.cross_entropy(logits, target, reduction="sum"))
        correct += int((logits.argmax(dim=1) == target).sum())
    model.train(was_training)
    n = max(len(y), 1)
    return {f"{prefix}_loss": loss_sum / n, f"{prefix}_accuracy": correct / n}
