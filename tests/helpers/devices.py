"""What moves between devices while code runs: each call that can copy a tensor to another device."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class Moves:
    """The calls seen: ``crossings`` (tensor copies from one device to another, with their sizes in bytes)
    and ``module_cpu`` (``nn.Module.cpu()`` calls, each a copy of a whole model to the host on a GPU)."""

    crossings: list[tuple[str, str, int]] = field(default_factory=list)
    module_cpu: int = 0


def _target(args: tuple, kwargs: dict) -> torch.device | None:
    for value in (*args, kwargs.get("device")):
        if isinstance(value, (str, torch.device)):
            return torch.device(value)
        if isinstance(value, torch.Tensor):
            return value.device
    return None


@contextlib.contextmanager
def recorded_moves() -> Iterator[Moves]:
    """Record, in every thread, each ``Tensor.to``/``cpu``/``cuda``/``copy_`` that crosses devices and
    each ``Module.cpu``. ``cuda:0`` and ``cuda`` count as one device."""
    moves = Moves()
    to, cpu, cuda, copy_, module_cpu = (
        torch.Tensor.to,
        torch.Tensor.cpu,
        torch.Tensor.cuda,
        torch.Tensor.copy_,
        nn.Module.cpu,
    )

    def note(src: torch.Tensor, dst: torch.device | None) -> None:
        if dst is not None and dst.type != src.device.type:
            moves.crossings.append((src.device.type, dst.type, src.numel() * src.element_size()))

    def to_(self, *args, **kwargs):
        note(self, _target(args, kwargs))
        return to(self, *args, **kwargs)

    def cpu_(self, *args, **kwargs):
        note(self, torch.device("cpu"))
        return cpu(self, *args, **kwargs)

    def cuda_(self, *args, **kwargs):
        note(self, torch.device("cuda"))
        return cuda(self, *args, **kwargs)

    def copy(self, src, *args, **kwargs):
        note(src, self.device)
        return copy_(self, src, *args, **kwargs)

    def module_cpu_(self):
        moves.module_cpu += 1
        return module_cpu(self)

    torch.Tensor.to, torch.Tensor.cpu, torch.Tensor.cuda = to_, cpu_, cuda_  # type: ignore[method-assign]
    torch.Tensor.copy_ = copy  # type: ignore[method-assign]
    nn.Module.cpu = module_cpu_  # type: ignore[method-assign]
    try:
        yield moves
    finally:
        torch.Tensor.to, torch.Tensor.cpu, torch.Tensor.cuda = to, cpu, cuda  # type: ignore[method-assign]
        torch.Tensor.copy_ = copy_  # type: ignore[method-assign]
        nn.Module.cpu = module_cpu  # type: ignore[method-assign]
