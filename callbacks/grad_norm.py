"""GradientNormMonitor: the squared norm of the gradient at each optimizer step, and its mean per epoch."""

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
    """The factor AMP's gradient scaler multiplies the loss by (``precision="16-mixed"``); None without a
    scaler (32-bit, ``bf16-mixed``)."""
    scaler = getattr(getattr(trainer, "precision_plugin", None), "scaler", None)
    return None if scaler is None else float(scaler.get_scale())


def pending_scale(trainer: L.Trainer, optimizer: torch.optim.Optimizer) -> float:
    """The factor the gradients still carry in ``on_before_optimizer_step``: 1, except under ``16-mixed``
    with an optimizer that unscales inside its own ``step`` (``fused=True``), which Lightning does not
    unscale before the hook (it unscales every other optimizer's gradients before it)."""
    scale = loss_scale(trainer)
    # the attribute Lightning's AMP plug-in checks to leave the unscaling to the optimizer
    if scale is None or not getattr(optimizer, "_step_supports_amp_scaling", False):
        return 1.0
    return scale


def optimizer_parameters(optimizer: torch.optim.Optimizer) -> list[torch.nn.Parameter]:
    """The parameters ``optimizer`` steps, over all its param groups."""
    return [p for group in optimizer.param_groups for p in group["params"]]


class GradientNormMonitor(L.Callback):
    """Records ``‖g‖²`` at every optimizer step, ``g`` the gradient the step is about to use, and its mean
    over each training epoch.

    The gradient is read once per optimizer step, in ``on_before_optimizer_step``: after the backward
    passes of all the micro-batches a step accumulates (``accumulate_grad_batches``; Lightning divides each
    micro-batch's loss by that count, so ``g`` is their mean gradient, and a last window cut short by the
    end of the epoch is stepped too, each of its losses still divided by the full count) and after AMP
    unscaling. It is the gradient of the module's loss only: a callback that adds a term to the gradients
    in the same hook (:class:`~afl_callbacks.ProximalTerm`) first asks the monitor to read (:meth:`measure`),
    so the term is left out whatever the order of the callbacks list. Under ``16-mixed`` a step the
    gradient scaler skips (non-finite gradients) is left out, so every precision reports the same quantity.
    With several optimizers (manual optimization) each ``optimizer.step()`` is one step of its own, over
    the parameters of that optimizer.

    With ``log=True`` the epoch mean is logged as ``{prefix}/sq_norm_epoch`` through the module's logger
    (nothing happens without a logger). ``history`` keeps the last ``max_history`` epoch means for use
    without any logger; older ones are forgotten, so memory stays bounded however long the fit. ``last`` is
    the value of the latest step recorded.

    ``state_dict`` holds only counters (optimizer steps and epochs recorded), not the history.

    Args:
        norm_type: the p of the norm (2 for the Euclidean norm); must be positive or ``inf``.
        log: log the epoch mean with ``pl_module.log``.
        prefix: metric name prefix.
        max_history: how many epoch means ``history`` keeps (>= 1).

    Example:
        >>> monitor = GradientNormMonitor(max_history=2)
        >>> monitor.history, monitor.last, monitor.state_dict()
        ([], None, {'steps': 0, 'epochs': 0})
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
        self.steps = 0  # optimizer steps recorded, over every fit
        self.epochs = 0  # epoch means recorded, over every fit
        self.last: float | None = None  # the latest step's value
        self._sum = 0.0
        self._epoch_steps = 0
        self._read_at: tuple[int, int] | None = None  # (optimizer, global step) read last

    @property
    def history(self) -> list[float]:
        """The last ``max_history`` epoch means, oldest first."""
        return list(self._history)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._read_at = None  # a new fit counts its global steps from its own start

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._sum, self._epoch_steps = 0.0, 0

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        self.measure(trainer, optimizer)

    def measure(self, trainer: L.Trainer, optimizer: torch.optim.Optimizer) -> None:
        """Record the gradient of ``optimizer``'s parameters for the step it is about to take, once per step.

        Called from ``on_before_optimizer_step``, and from that hook of a callback about to change the
        gradients, before it changes them: the step is identified by the optimizer and
        ``trainer.global_step`` (which Lightning advances after the step), so the later call is a no-op.
        """
        at = (id(optimizer), trainer.global_step)
        if at == self._read_at:
            return
        self._read_at = at
        parameters = optimizer_parameters(optimizer)
        if all(p.grad is None for p in parameters):
            return  # no backward pass fed this step (the training step returned None)
        value = squared_grad_norm(parameters, self.norm_type) / pending_scale(trainer, optimizer) ** 2
        if loss_scale(trainer) is not None and not math.isfinite(value):
            return  # 16-mixed: the scaler skips this step, which has no gradient to report
        self.last = value
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
