"""The client: a LightningModule around any model (:mod:`afl.client.module`), a cheap Trainer per worker
thread (:mod:`afl.client.trainer`), the job function that turns a :class:`~afl.messages.ClientJob` into a
:class:`~afl.messages.ClientResult` (:mod:`afl.client.runtime`) and the client callbacks from the config
(:mod:`afl.client.callbacks`).

This module imports nothing heavy: it declares the client optimizers' registry, so the config lists and
checks their names without importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from afl.registry import Registry

if TYPE_CHECKING:
    import torch


#: Client optimizers by name (``client.optimizer``): ``(parameters, lr=, momentum=, weight_decay=)``.
OPTIMIZERS: Registry[torch.optim.Optimizer] = Registry(
    "optimizer", lazy={"adam": "afl.client.module:_adam", "sgd": "afl.client.module:_sgd"}
)


#: The client optimizers cohort training (``federation.executor=cohort``, :mod:`afl.client.cohort`)
#: vectorizes: element-wise rules, J clients' states stacked.
COHORT_OPTIMIZERS = ("adam", "sgd")


#: ``client.optimizer_reset``: one client optimizer per job, or its state cleared every local epoch.
OPTIMIZER_RESETS = ("job", "epoch")


#: ``trainer.accelerator``: Lightning's names (``gpu`` and ``cuda`` are the same); resolved by
#: :func:`afl.client.device.resolve`.
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")

#: ``trainer.precision``: Lightning's names of the precisions that keep the weights in float32 (the server
#: aggregates float32 weights; ``16-true``/``bf16-true`` would hand it half-precision ones).
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")

#: ``trainer.compile``: ``none`` (eager, the default), or the ``mode`` of ``torch.compile`` for the client's
#: training step (:mod:`afl.client.compiled`).
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune")
