"""ParameterDrift: how far training has moved the parameters since the fit started."""

from __future__ import annotations

from collections import deque
from typing import Any

import lightning as L
import torch

from ._checks import check_positive_int


def parameter_distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Euclidean distance between two parameter sets with the same keys.

    Example:
        >>> parameter_distance({"w": torch.tensor([0.0, 0.0])}, {"w": torch.tensor([3.0, 4.0])})
        5.0
    """
    if a.keys() != b.keys():
        raise ValueError("parameter sets differ in their names")
    total = sum(float(torch.sum((a[k].double() - b[k].double()) ** 2)) for k in a)
    return total**0.5


class ParameterDrift(L.Callback):
    """Records ``‖θ - θ_start‖₂`` over the trainable parameters at the end of every training epoch.

    In federated learning this is a client's drift away from the global model it was handed.
    ``history`` holds the last ``max_history`` values, one per epoch (older ones are forgotten); with a
    logger each is also logged as ``{prefix}/distance``. The callback keeps one copy of the trainable
    parameters (``θ_start``, taken when training starts) and nothing else that grows.

    ``state_dict`` holds only a counter (epochs measured), not the history or ``θ_start``.

    Args:
        log: log the distance with ``pl_module.log`` when the Trainer has a logger.
        prefix: metric name prefix.
        max_history: how many distances ``history`` keeps (>= 1).

    Example:
        >>> ParameterDrift().history
        []
        >>> ParameterDrift(max_history=0)
        Traceback (most recent call last):
        ...
        ValueError: max_history must be an integer >= 1, got 0
    """

    def __init__(self, log: bool = True, prefix: str = "drift", max_history: int = 1000) -> None:
        self.log = log
        self.prefix = prefix
        self.max_history = check_positive_int("max_history", max_history)
        self._history: deque[float] = deque(maxlen=self.max_history)
        self.epochs = 0  # distances measured, over every fit
        self._start: dict[str, torch.Tensor] = {}

    @property
    def history(self) -> list[float]:
        """The last ``max_history`` distances, oldest first."""
        return list(self._history)

    @staticmethod
    def _snapshot(pl_module: L.LightningModule) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in pl_module.named_parameters() if p.requires_grad}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = self._snapshot(pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        distance = parameter_distance(self._snapshot(pl_module), self._start)
        self._history.append(distance)
        self.epochs += 1
        if self.log and trainer.logger is not None:
            pl_module.log(f"{self.prefix}/distance", distance, on_step=False, on_epoch=True)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = {}  # the copy of θ_start is only needed while training

    @property
    def state_key(self) -> str:
        return self._generate_state_key(prefix=self.prefix)

    def state_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.epochs = int(state_dict["epochs"])
