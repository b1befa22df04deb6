"""ParameterDrift: how far training has moved the parameters since the fit started."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch


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
    ``history`` holds one value per epoch; with a logger it is also logged as ``{prefix}/distance``.

    Args:
        log: log the distance with ``pl_module.log`` when the Trainer has a logger.
        prefix: metric name prefix.

    Example:
        >>> ParameterDrift().history
        []
    """

    def __init__(self, log: bool = True, prefix: str = "drift") -> None:
        self.log = log
        self.prefix = prefix
        self.history: list[float] = []
        self._start: dict[str, torch.Tensor] = {}

    @staticmethod
    def _snapshot(pl_module: L.LightningModule) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in pl_module.named_parameters() if p.requires_grad}

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = self._snapshot(pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        distance = parameter_distance(self._snapshot(pl_module), self._start)
        self.history.append(distance)
        if self.log and trainer.logger is not None:
            pl_module.log(f"{self.prefix}/distance", distance, on_step=False, on_epoch=True)

    def state_dict(self) -> dict[str, Any]:
        return {"history": list(self.history)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict["history"])
