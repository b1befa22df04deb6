"""A user's plug-in module (an aggregator, a model with an option, a data set with an option), as source
to write into a folder of the user's own, and the overrides that run it."""

from __future__ import annotations

from helpers.configs import QUIET

#: ``my_components.py``: what a researcher would write, outside the package.
PLUGIN = '''"""A user's components, in a module of their own."""
import numpy as np
import torch
from torch import nn

from afl.data import DATASET_LOADERS
from afl.data.datasets import ArrayData, DatasetSplits
from afl.messages import ClientUpdate, State
from afl.models import MODELS
from afl.server.aggregators import AGGREGATORS, Aggregator


@AGGREGATORS.register("halfway")
class Halfway(Aggregator):
    """Moves the global model a share of the way along each arrival's delta."""

    def __init__(self, *, share: float = 0.5) -> None:
        self.share = share

    def on_arrival(self, update: ClientUpdate, global_state: State) -> bool:
        for key, delta in update.delta.items():
            global_state[key].add_(delta, alpha=self.share)
        return True


@MODELS.register("tiny_mlp")
class TinyMLP(nn.Module):
    def __init__(self, *, input_shape: tuple[int, int, int], num_classes: int, hidden: int = 16) -> None:
        super().__init__()
        c, h, w = input_shape
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(c * h * w, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@DATASET_LOADERS.register("blobs")
def load_blobs(root, download, *, size: int = 200) -> DatasetSplits:
    """Two classes of 1×4×6 images (not square), pixel means -1 and +1."""
    rng = np.random.default_rng(0)

    def draw(n: int) -> ArrayData:
        y = rng.integers(0, 2, n)
        x = (2.0 * y - 1.0)[:, None, None, None] + rng.standard_normal((n, 1, 4, 6))
        return ArrayData(torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.int64))

    return DatasetSplits(draw(size), draw(size // 4), 2, "blobs", None)
'''

#: A run of 6 updates on 4 clients, 2 in flight.
SMALL = [
    "partition.num_clients=4",
    "partition.min_samples=5",
    "federation.concurrency=2",
    "federation.max_updates=6",
    "federation.eval_every=3",
    *QUIET,
]
#: The plug-ins of PLUGIN, with options.
MINE = [
    "dataset.name=blobs",
    "dataset.options.size=120",
    "model.name=tiny_mlp",
    "model.hidden=4",
    "server.aggregator.name=halfway",
    "server.aggregator.share=0.25",
    "server.lr_schedule.name=constant",
]
