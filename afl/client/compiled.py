"""The client's training step compiled with ``torch.compile`` (``trainer.compile``, off by default).

What is compiled: a batch's forward pass and its cross-entropy loss, and through AOTAutograd their
backward pass; the optimizer's step, Lightning's hooks and the metrics stay eager, and so does the
evaluation of the global model (the server's, :mod:`afl.experiments.build`).

How it stays one compilation however many jobs run:

* **One model per worker thread**, not a copy per job: :class:`CompiledSteps` builds it (and wraps it in
  ``torch.compile``) the first time a thread trains a job of the runtime, and loads every later job's
  dispatched weights into it (``load_state_dict`` copies into the same tensors, so a CUDA graph's
  static inputs keep their addresses). Models of other threads reuse the same compiled code: torch traces
  a module's parameters as inputs, not constants (``inline_inbuilt_nn_modules``, always on in torch ≥
  2.5). The first compiled call of each thread waits for any other thread's (:data:`_FIRST_CALL`), so two
  threads never compile the same graph at once.
* **One shape**: only full batches (``client.batch_size`` samples) take the compiled step, with
  ``dynamic=False``; an epoch's last, smaller batch (a size per client) runs eagerly. Compiling it too
  would cost a compilation per distinct size, or dynamic-shape graphs that torch still splits by size
  (seen here with the paper's CNN: one for a batch of 1, one for 2 to 15, another beyond), and a CUDA
  graph per size under ``reduce-overhead``.

How the names stay plain: the compiled wrapper (torch's ``OptimizedModule``, whose state dict prefixes
every name with ``_orig_mod.``) is held here, in a plain object, never as an attribute of the model or of
the :class:`~afl.client.module.ClientModule`: the weights a job returns, the server's model, checkpoints
and ``final_model.pt`` see the model's own names.

``AFL_COMPILE_BACKEND`` (an environment variable, read when a runtime is built): another
``torch.compile`` backend than inductor, for tests and debugging (``aot_eager`` traces the same graphs and
runs them without generating code: about a second, where inductor's first compilation of the paper's CNN
took 20-30 s on this project's 2-core CPU). ``trainer.compile``'s mode is inductor's and is not passed to
another backend.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

#: The environment variable naming a ``torch.compile`` backend other than inductor (tests, debugging).
BACKEND_ENV = "AFL_COMPILE_BACKEND"

#: Held around each thread's first compiled call: the first compiles, the others then find its code.
_FIRST_CALL = threading.Lock()


class _LogitsAndLoss(nn.Module):
    """``(logits, cross-entropy loss)`` of a batch: the part of the training step that is compiled."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(x)
        return logits, nn.functional.cross_entropy(logits, y)


class TrainStep:
    """A thread's training step: ``step(x, y) -> (logits, loss)``, compiled for batches of
    ``batch_size`` samples, eager for any other size (the same arithmetic, uncompiled).

    A plain object, not a module: set as an attribute of a LightningModule it registers nothing, so the
    compiled wrapper's ``_orig_mod.`` names never reach a state dict.
    """

    def __init__(self, model: nn.Module, compiled: Callable[..., Any], batch_size: int) -> None:
        self.model = model
        self.compiled = compiled
        self.batch_size = batch_size
        self.warm = False

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if len(y) != self.batch_size:
            logits = self.model(x)
            return logits, nn.functional.cross_entropy(logits, y)
        if not self.warm:
            with _FIRST_CALL:
                out = self.compiled(x, y)
            self.warm = True
            return out  # type: ignore[no-any-return]
        return self.compiled(x, y)  # type: ignore[no-any-return]


class CompiledSteps:
    """Per thread, one model from ``factory`` with its compiled :class:`TrainStep`, built at the thread's
    first job and loaded with each job's weights (:meth:`__call__`).

    Args:
        factory: builds a model of the run's architecture (on the device jobs train on).
        mode: ``torch.compile``'s mode: ``default``, ``reduce-overhead`` (CUDA graphs) or ``max-autotune``.
        batch_size: the size of the batches that take the compiled step (``client.batch_size``).
        backend: ``torch.compile``'s backend; None: ``AFL_COMPILE_BACKEND``, else ``inductor``.

    Pickled (a runtime sent to a Ray worker) without its threads' models: each process builds its own.
    """

    def __init__(
        self, factory: Callable[[], nn.Module], mode: str, batch_size: int, backend: str | None = None
    ) -> None:
        self.factory = factory
        self.mode = mode
        self.batch_size = batch_size
        self.backend = backend or os.environ.get(BACKEND_ENV) or "inductor"
        self._local = threading.local()

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_local"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    def __call__(self, state: dict[str, torch.Tensor]) -> tuple[nn.Module, TrainStep]:
        """This thread's model, holding ``state`` (no gradients left from its last job), and its step."""
        step: TrainStep | None = getattr(self._local, "step", None)
        if step is None:
            model = self.factory()
            mode = self.mode if self.backend == "inductor" else None  # (the mode is inductor's)
            compiled = torch.compile(_LogitsAndLoss(model), backend=self.backend, dynamic=False, mode=mode)
            step = self._local.step = TrainStep(model, compiled, self.batch_size)
        step.model.load_state_dict(state)
        step.model.zero_grad(set_to_none=True)
        return step.model, step
