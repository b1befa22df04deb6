"""ProximalTerm: FedProx's proximal term ``μ/2 ‖θ − θ_start‖²`` added to the training loss."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from ._checks import check_number
from .grad_norm import GradientNormMonitor, pending_scale


class ProximalTerm(L.Callback):
    """Trains on ``loss + μ/2 ‖θ − θ_start‖²``, ``θ_start`` the trainable parameters when training starts.

    This is FedProx's local objective (Li et al., 2020): it keeps a client near the global model it was
    handed. The term is added through its gradient: before every optimizer step
    (``on_before_optimizer_step``: after the backward passes of all the micro-batches the step accumulates,
    after AMP unscaling and before gradient clipping) ``μ (θ − θ_start)`` is added, once per step, to the
    ``.grad`` of each trainable parameter of the stepping optimizer that has one. That is exactly the
    gradient of ``μ/2 ‖θ − θ_start‖²``, so the optimizer steps on the gradient of the augmented loss,
    whatever the optimizer (with ``accumulate_grad_batches=k`` the loss's part is the mean gradient of the
    k micro-batches, as Lightning divides each loss by k). The loss value the module reports does not
    include the term. Parameters without a gradient in a step (unused by that step's loss) are left alone;
    an optimizer that evaluates its closure several times per step (L-BFGS) gets the term added to each
    evaluation's fresh gradient. Under ``16-mixed`` the term is scaled like the gradients when the optimizer
    unscales them itself (``fused=True``). Before it adds the term it has every
    :class:`~afl_callbacks.GradientNormMonitor` of the Trainer read the gradient, so a monitor measures the
    module's loss alone wherever it is in the callbacks list.

    The callback keeps one copy of the trainable parameters; ``state_dict`` holds only a counter (optimizer
    steps it added the term to).

    Args:
        mu: ``μ`` >= 0 (0 adds nothing).

    Example:
        >>> ProximalTerm(mu=0.01).mu
        0.01
        >>> ProximalTerm(mu=-1)
        Traceback (most recent call last):
        ...
        ValueError: mu must be a finite number >= 0.0, got -1
    """

    def __init__(self, mu: float) -> None:
        self.mu = check_number("mu", mu, 0.0)
        self.steps = 0
        self._start: dict[torch.nn.Parameter, torch.Tensor] = {}
        self._added_at: tuple[int, int] | None = None  # (optimizer, global step) of the last addition

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = {p: p.detach().clone() for p in pl_module.parameters() if p.requires_grad}
        self._added_at = None

    @torch.no_grad()
    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if self.mu == 0.0:
            return
        for callback in trainer.callbacks:  # type: ignore[attr-defined]
            if isinstance(callback, GradientNormMonitor):
                callback.measure(trainer, optimizer)  # the module loss's gradient, before the term
        alpha = self.mu * pending_scale(trainer, optimizer)
        for group in optimizer.param_groups:
            for p in group["params"]:
                start = self._start.get(p)
                if start is not None and p.grad is not None:
                    p.grad.add_(p.detach() - start, alpha=alpha)
        at = (id(optimizer), trainer.global_step)
        if at != self._added_at:  # L-BFGS: several evaluations, one step
            self._added_at = at
            self.steps += 1

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = {}

    @property
    def state_key(self) -> str:
        return self._generate_state_key(mu=self.mu)

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.steps = int(state_dict["steps"])
