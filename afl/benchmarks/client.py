"""``afl-bench`` key ``client_job``: one client job, a Lightning Trainer against a plain loop."""

from __future__ import annotations

from typing import Any

import torch

from afl.benchmarks.timing import interleaved, median, timed
from afl.client.runtime import ClientRuntime, batch_loader
from afl.data.datasets import load_dataset
from afl.messages import ClientJob
from afl.models import build_model


def bench_client(model: str, side: int, samples: int, epochs: int, repeat: int) -> dict[str, Any]:
    """One client job: a Lightning Trainer (:class:`~afl.client.runtime.ClientRuntime`) against a plain
    loop, same steps."""
    data = load_dataset(
        "synthetic", root="data", synthetic={"train_size": samples, "test_size": 10, "image_size": side}
    )
    x, y = data.train.x, data.train.y

    def factory() -> torch.nn.Module:
        return build_model(model, in_channels=1, num_classes=10, image_size=side)

    state = factory().state_dict()
    runtime = ClientRuntime([(x, y)], factory, num_classes=10, local_epochs=epochs, batch_size=32)

    def plain() -> None:
        m = factory()
        m.load_state_dict(state)
        opt = torch.optim.Adam(m.parameters(), lr=1e-3)
        batches = batch_loader(x, y, 32, 0)
        for _ in range(epochs):
            for xb, yb in batches:
                opt.zero_grad()
                torch.nn.functional.cross_entropy(m(xb), yb).backward()
                opt.step()
        {k: v.detach().clone() for k, v in m.state_dict().items()}

    def lightning_job() -> float:
        return timed(lambda: runtime(ClientJob(0, 0, state, 1e-3, 0)), "client job (Lightning)")[0]

    def plain_job() -> float:
        return timed(plain, "client job (plain loop)")[0]

    lightning_job(), plain_job()  # warm-up
    times = interleaved({"lightning_ms": lightning_job, "plain_ms": plain_job}, repeat)
    lt, pt = median(times["lightning_ms"]), median(times["plain_ms"])
    return {"lightning_ms": lt * 1e3, "plain_ms": pt * 1e3, "ratio": lt / pt, "extra_ms": (lt - pt) * 1e3}
