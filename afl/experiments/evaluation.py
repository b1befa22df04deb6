"""Evaluation of the global model: test (and validation) loss and accuracy, and the theory's gradient
quantities (‖∇L(θ)‖², client heterogeneity ν²) on fixed client samples."""

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


def gradient_statistics(
    model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]], weights: list[float]
) -> dict[str, float]:
    """The theory's quantities at the model's parameters θ, from one fixed sample per client.

    With ``g_c = ∇L_c(θ)`` the gradient of the mean cross-entropy on client c's sample and
    ``g = Σ p_c g_c`` (``p_c`` = ``weights`` normalised: the clients' shares of the training data), returns
    ``grad_norm_sq = ‖g‖²`` (the paper's convergence criterion ``‖∇L(θ)‖²``) and
    ``heterogeneity = mean_c ‖g_c − g‖²`` (ν², the clients' gradient dissimilarity). Gradients are taken
    in eval mode (BatchNorm on its running statistics: the function the server's model computes) and
    accumulated in float64. The model's ``.grad`` fields are left as they were found (None).

    Example:
        >>> model = nn.Linear(2, 2)
        >>> x, y = torch.zeros(4, 2), torch.tensor([0, 1, 0, 1])
        >>> stats = gradient_statistics(model, [(x, y), (x, y)], [1.0, 1.0])
        >>> stats["heterogeneity"]  # identical clients
        0.0
    """
    if not batches or len(batches) != len(weights):
        raise ValueError("need one weight per client sample, and at least one client")
    params = [p for p in model.parameters() if p.requires_grad]
    was_training = model.training
    model.eval()
    grads = []
    with torch.enable_grad():
        for x, y in batches:
            loss = nn.functional.cross_entropy(model(x), y)
            grads.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)]).double())
    model.train(was_training)
    stacked = torch.stack(grads)
    p = torch.tensor(weights, dtype=torch.float64, device=stacked.device)
    mean = (p / p.sum()) @ stacked
    return {
        "grad_norm_sq": float(mean.square().sum()),
        "heterogeneity": float((stacked - mean).square().sum(dim=1).mean()),
    }
