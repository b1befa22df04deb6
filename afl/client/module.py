"""The LightningModule of client training, around any model, and the client optimizers."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import lightning as L
import torch
import torchmetrics
from torch import nn

from afl.client import OPTIMIZER_RESETS, OPTIMIZERS


@OPTIMIZERS.register("adam")
def _adam(
    params: Iterable[nn.Parameter], *, lr: float, momentum: float, weight_decay: float
) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)  # momentum: Adam's own betas


@OPTIMIZERS.register("sgd")
def _sgd(
    params: Iterable[nn.Parameter], *, lr: float, momentum: float, weight_decay: float
) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


class ClientModule(L.LightningModule):
    """Local training of one client: cross-entropy, Adam (default) or SGD at the LR the server handed
    out, tracking the loss (:meth:`mean_train_loss`) and, with torchmetrics, the accuracy over the job.

    Two rules of the code released with the paper (``Ali-Forootani/AFL_non_convex_non_iid``,
    ``src/async_fdl_fashion_mnist_delay_track_lr_non_iid.py`` lines 247-248, commit d9a5d21, which builds
    a new Adam at ``γ0 / (sqrt(e + 1) (1 + α τ))`` at the start of every local epoch ``e``):

    * ``epoch_lrs``: the rate of each local epoch, set on the optimizer when the epoch starts (None:
      ``lr`` throughout);
    * ``optimizer_reset="epoch"``: the optimizer's state (Adam's moments and step count, SGD's momentum)
      is cleared when every epoch after the first starts: the same steps as a new optimizer per epoch.
      ``"job"`` (default): one optimizer for the whole job.

    ``train_step``: what computes a batch's ``(logits, loss)`` in training, in place of the model and the
    cross-entropy here (a compiled step, ``trainer.compile``: :class:`~afl.client.compiled.TrainStep`,
    over this module's ``model``); None (default): the model, eagerly.

    Example:
        >>> from afl.models.cnn import PaperCNN
        >>> module = ClientModule(PaperCNN(1, 10), num_classes=10, lr=1e-3)
        >>> module.lr
        0.001
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        num_classes: int,
        lr: float,
        optimizer: str | Callable[..., torch.optim.Optimizer] = "adam",
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        epoch_lrs: Sequence[float] | None = None,
        optimizer_reset: str = "job",
        train_step: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> None:
        super().__init__()
        if optimizer_reset not in OPTIMIZER_RESETS:
            allowed = ", ".join(OPTIMIZER_RESETS)
            raise ValueError(f"optimizer_reset must be one of {allowed}, got {optimizer_reset!r}")
        # a name (client.optimizer), or the factory itself (what a runtime shipped to a worker holds)
        self.make_optimizer = (
            OPTIMIZERS.get(optimizer, "client.optimizer") if isinstance(optimizer, str) else optimizer
        )
        self.model = model
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.epoch_lrs = None if epoch_lrs is None else list(epoch_lrs)
        self.optimizer_reset = optimizer_reset
        self.train_step = train_step  # a plain callable, never a module: it adds no names to state dicts
        # the loss's sum over samples, on the device: torchmetrics' MeanMetric reads two values back from
        # the device at every update (its NaN check: a GPU → CPU synchronisation a step), and with that
        # check off it drops the weights (torchmetrics 1.9); read once, when the job reports it
        self._loss_sum: torch.Tensor | None = None
        self._samples = 0
        self.train_accuracy = torchmetrics.classification.MulticlassAccuracy(num_classes, average="micro")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        if self.train_step is None:
            logits = self.model(x)
            loss = nn.functional.cross_entropy(logits, y)
        else:
            logits, loss = self.train_step(x, y)
        weighted = loss.detach() * len(y)
        self._loss_sum = weighted if self._loss_sum is None else self._loss_sum + weighted
        self._samples += len(y)
        self.train_accuracy.update(logits.detach(), y)
        return loss

    def mean_train_loss(self) -> float:
        """The job's training loss, the mean over every sample it trained on (NaN before any step)."""
        return float(self._loss_sum) / self._samples if self._loss_sum is not None else float("nan")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.make_optimizer(
            self.model.parameters(), lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay
        )

    def on_train_epoch_start(self) -> None:
        epoch = self.current_epoch
        for optimizer in self.trainer.optimizers:
            if self.optimizer_reset == "epoch" and epoch > 0:
                optimizer.state.clear()  # a new optimizer: its state is created again at the next step
            if self.epoch_lrs is not None:
                for group in optimizer.param_groups:
                    group["lr"] = self.epoch_lrs[epoch]  # one rate per local epoch
