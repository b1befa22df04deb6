"""GradientNormMonitor: the squared norm of the gradient, step by step and averaged per epoch."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from typing import Any

import lightning as L
import torch

from ._checks import check_positive_int


def squared_grad_norm(parameters: Iterable[torch.nn.Parameter], norm_type: float = 2.0) -> float:
    """``‖g‖_p^p``-style total over all parameters with a gradient (``‖g‖₂²`` for ``norm_type=2``).

    Example:
        >>> p = torch.nn.Parameter(torch.zeros(2)); p.grad = torch.tensor([3.0, 4.0])
        >>> squared_grad_norm([p])
        25.0
    """
    grads = [p.grad.detach() for p in parameters if p.grad is not None]
    if not grads:
        return 0.0
    norm = torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(g, norm_type) for g in grads]), norm_type
    )
    return float(norm) ** 2


def loss_scale(trainer: L.Trainer) -> float | None:
    """The factor AMP's gradient scaler multiplies the loss by (``precision="16-mixed"``), so the gradients
    of ``on_after_backward`` carry it (they are unscaled before ``on_before_optimizer_step``); None without
    a scaler (32-bit, ``bf16-mixed``)."""
    scaler = getattr(getattr(trainer, "precision_plugin", None), "scaler", None)
    return None if scaler is None else float(scaler.get_scale())


class GradientNormMonitor(L.Callback):
    """Records ``‖∇L‖²`` after every backward pass and its mean over each training epoch.

    With ``log=True`` the epoch mean is logged as ``{prefix}/sq_norm_epoch`` through the module's logger
    (nothing happens without a logger). ``history`` keeps the last ``max_history`` epoch means for use
    without any logger; older ones are forgotten, so memory stays bounded however long the fit.
    The gradient is read in ``on_after_backward``: that of the module's loss, before any term another
    callback adds in ``on_before_optimizer_step`` (such as :class:`~afl_callbacks.ProximalTerm`). Under
    16-bit mixed precision those gradients are loss-scaled: the monitor divides by the scaler's scale, and
    leaves out the steps the scaler skips (non-finite gradients), so it reports the same quantity at every
    precision.

    ``state_dict`` holds only counters (backward passes and epochs seen), not the history.

    Args:
        norm_type: the p of the norm (2 for the Euclidean norm); must be positive or ``inf``.
        log: log the epoch mean with ``pl_module.log``.
        prefix: metric name prefix.
        max_history: how many epoch means ``history`` keeps (>= 1).

    Example:
        >>> monitor = GradientNormMonitor(max_history=2)
        >>> monitor.history, monitor.state_dict()
        ([], {'steps': 0, 'epochs': 0})
        >>> GradientNormMonitor(norm_type=-1)
        Traceback (most recent call last):
        ...
        ValueError: norm_type must be > 0 or inf, got -1
    """

    def __init__(
        self, norm_type: float = 2.0, log: bool = True, prefix: str = "grad", max_history: int = 1000
    ) -> None:
        if not (norm_type > 0 or math.isinf(norm_type)):
            raise ValueError(f"norm_type must be > 0 or inf, got {norm_type}")
        self.norm_type = float(norm_type)
        self.log = log
        self.prefix = prefix
        self.max_history = check_positive_int("max_history", max_history)
        self._history: deque[float] = deque(maxlen=self.max_history)
        self.steps = 0  # backward passes seen, over every fit
        self.epochs = 0  # epoch means recorded, over every fit
        self._sum = 0.0
        self._epoch_steps = 0

    @property
    def history(self) -> list[float]:
        """The last ``max_history`` epoch means, oldest first."""
        return list(self._history)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._sum, self._epoch_steps = 0.0, 0

    def on_after_backward(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = squared_grad_norm(pl_module.parameters(), self.norm_type)
        scale = loss_scale(trainer)
        if scale is not None:  # 16-bit mixed precision: the gradients are the scaled loss's
            if not math.isfinite(value):
                return  # the scaler skips this step: it has no gradient to report
            value /= scale**2
        self._sum += value
        self._epoch_steps += 1
        self.steps += 1

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._epoch_steps == 0:
            return
        mean = self._sum / self._epoch_steps
        self._history.append(mean)
        self.epochs += 1
        if self.log and trainer.logger is not None:
            pl_module.log(f"{self.prefix}/sq_norm_epoch", mean, on_step=False, on_epoch=True)

    @property
    def state_key(self) -> str:
        return self._generate_state_key(norm_type=self.norm_type, prefix=self.prefix)

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "epochs": self.epochs}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.steps = int(state_dict["steps"])
        self.epochs = int(state_dict["epochs"])
