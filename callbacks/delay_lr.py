"""DelayAwareLR: the learning rate of asynchronous FL's paper, for any Trainer that can say its delay."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import lightning as L

from ._checks import check_number

INTERVALS = ("fit", "epoch", "step")


def delay_aware_lr(base_lr: float, alpha: float, delay: float, round: int | None = None) -> float:
    """The rate :class:`DelayAwareLR` sets: ``base_lr / (sqrt(r + 1) (1 + α τ))``, or ``base_lr / (1 + α τ)``
    without a round (e.g. ``delay_aware_lr(1e-3, alpha=0.5, delay=2) == 0.0005``). The simulator's
    :func:`afl.server.lr_schedules.delay_aware_lr` is the same formula with the same order of operations;
    this package states it again because it imports nothing from ``afl``."""
    decayed = base_lr if round is None else base_lr / math.sqrt(round + 1.0)
    return decayed * (1.0 / (1.0 + alpha * delay))


class DelayAwareLR(L.Callback):
    """Sets every optimizer param group's ``lr`` to ``base_lr / (1 + alpha·τ)`` with ``τ = delay_fn(...)``.

    With a ``round_fn`` the rate also decays with the round ``r``: ``base_lr / (sqrt(r + 1) (1 + α τ))``,
    the paper's full schedule. The delay (and round) is asked for, and the rate set, when training starts
    (``interval="fit"``), at each epoch start (``"epoch"``) or once per optimizer step (``"step"``, the
    default: the delay may change while training). With ``"step"`` the rate is set before the first
    training batch of each optimizer step: before every batch, or with ``accumulate_grad_batches=k``
    before the first of the k micro-batches a step accumulates (and holds for all of them). Under manual
    optimization (several optimizers) ``"step"`` means each training batch. The rate overrides the one the
    optimizer was built with, in every param group of every optimizer; do not combine it with an LR
    scheduler on the same optimizer.

    ``state_dict`` holds only a counter (how many times the rate was set); ``last_lr`` is the rate set
    last.

    Args:
        base_lr: ``γ0`` > 0.
        alpha: ``α`` >= 0 (0: the delay has no effect).
        delay_fn: ``(trainer, pl_module) -> τ``, the current delay (>= 0, e.g. versions of staleness).
        round_fn: ``(trainer, pl_module) -> r`` (>= 0), or None for no round decay.
        interval: when to set the rate: ``fit``, ``epoch`` or ``step``.

    Example:
        >>> lr = DelayAwareLR(base_lr=0.6, alpha=0.5, delay_fn=lambda trainer, pl_module: 2)
        >>> lr.rate(trainer=None, pl_module=None)  # what it sets, e.g. trainer=L.Trainer(callbacks=[lr])
        0.3
        >>> DelayAwareLR(base_lr=0.6, alpha=0.5, delay_fn=lambda t, m: 2, interval="batch")
        Traceback (most recent call last):
        ...
        ValueError: interval must be one of fit, epoch, step; got 'batch'
    """

    def __init__(
        self,
        base_lr: float,
        alpha: float,
        delay_fn: Callable[[Any, Any], float],
        round_fn: Callable[[Any, Any], int] | None = None,
        interval: str = "step",
    ) -> None:
        self.base_lr = check_number("base_lr", base_lr, 0.0, strict=True)
        self.alpha = check_number("alpha", alpha, 0.0)
        if not callable(delay_fn):
            raise ValueError(f"delay_fn must be callable (trainer, pl_module) -> delay, got {delay_fn!r}")
        if round_fn is not None and not callable(round_fn):
            raise ValueError(f"round_fn must be None or callable (trainer, pl_module) -> r, got {round_fn!r}")
        if interval not in INTERVALS:
            raise ValueError(f"interval must be one of {', '.join(INTERVALS)}; got {interval!r}")
        self.delay_fn = delay_fn
        self.round_fn = round_fn
        self.interval = interval
        self.updates = 0
        self.last_lr: float | None = None

    def rate(self, trainer: Any, pl_module: Any) -> float:
        """The rate for the delay (and round) ``delay_fn`` (and ``round_fn``) report now."""
        delay = check_number("delay_fn's result", self.delay_fn(trainer, pl_module), 0.0)
        if self.round_fn is None:
            return delay_aware_lr(self.base_lr, self.alpha, delay)
        round = self.round_fn(trainer, pl_module)
        if isinstance(round, bool) or not isinstance(round, int) or round < 0:
            raise ValueError(f"round_fn's result must be an integer >= 0, got {round!r}")
        return delay_aware_lr(self.base_lr, self.alpha, delay, round)

    def _set(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        lr = self.rate(trainer, pl_module)
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = lr
        self.last_lr = lr
        self.updates += 1

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.interval == "fit":
            self._set(trainer, pl_module)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.interval == "epoch":
            self._set(trainer, pl_module)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        # the first micro-batch of an accumulation window (the test Lightning zeroes the gradients by)
        if self.interval == "step" and batch_idx % trainer.accumulate_grad_batches == 0:
            self._set(trainer, pl_module)

    @property
    def state_key(self) -> str:
        return self._generate_state_key(base_lr=self.base_lr, alpha=self.alpha, interval=self.interval)

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.updates = int(state_dict["updates"])
