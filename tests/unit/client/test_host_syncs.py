"""A client step reads nothing back from the device: every value a job reports is read once, at its end.

On a GPU each such read (``aten::_local_scalar_dense``: ``.item()``, ``bool(tensor)``) stalls the host
until the device has caught up. They are counted here on the CPU, with torch's own dispatch mode, so the
count does not need a GPU: a job of twice the steps must make exactly as many reads, besides those of
torch's optimizers, whose step counters live on the CPU for every device."""

from __future__ import annotations

import traceback
from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from afl.client.runtime import ClientRuntime
from afl.data.datasets import load_dataset
from afl.messages import ClientJob
from afl.models import build_model


class HostReads(TorchDispatchMode):
    """Counts the reads of a tensor's value back to Python, by the file that asked (torch's optimizers
    apart: their step counters are CPU tensors on every device)."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if func is torch.ops.aten._local_scalar_dense.default:
            files = [f.filename for f in traceback.extract_stack()[:-1]]
            # the innermost frame outside torch, or in its optimizers (training steps run inside them)
            caller = next(
                f for f in reversed(files) if "site-packages/torch/" not in f or "torch/optim/" in f
            )
            if "torch/optim/" not in caller:
                self.reads[caller.split("site-packages/")[-1]] += 1
        return func(*args, **(kwargs or {}))


def _reads(samples: int) -> Counter[str]:
    synthetic = {"train_size": samples, "test_size": 10, "image_size": 28}
    data = load_dataset("synthetic", root="data", synthetic=synthetic)
    factory = lambda: build_model("lenet", in_channels=1, num_classes=10, image_size=28)  # noqa: E731
    state = factory().state_dict()
    runtime = ClientRuntime(
        [(data.train.x, data.train.y)], factory, num_classes=10, local_epochs=1, batch_size=32
    )
    runtime(ClientJob(0, 0, state, 1e-3, 0))  # the first job of a thread sets its Trainer up
    with HostReads() as mode:
        runtime(ClientJob(1, 0, state, 1e-3, 0))
    return mode.reads


def test_a_job_of_twice_the_steps_reads_as_often_from_the_device() -> None:
    """5 and 10 steps: the same reads (the job's results at its end, Lightning's checks of the loader),
    none per step. torchmetrics' MeanMetric of the loss read two values a step (its NaN check: 20 more
    for 10 steps) until the loss was summed on the device instead."""
    five, ten = _reads(160), _reads(320)
    assert five == ten, (five, ten)
    assert sum(ten.values()) < 10  # fewer than one a step
