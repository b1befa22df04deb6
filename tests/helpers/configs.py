"""The overrides of small, real runs (composed from the project's own configs/ like any run's)."""

from __future__ import annotations

#: No W&B files and no progress bar: what almost every test run wants.
QUIET = ["logging.wandb.mode=disabled", "logging.progress=false"]


def synthetic(train: int, test: int) -> list[str]:
    """The synthetic data set (no files needed) at ``train`` and ``test`` samples."""
    return [
        "dataset.name=synthetic",
        f"dataset.synthetic.train_size={train}",
        f"dataset.synthetic.test_size={test}",
    ]


#: A seconds-long run: 6 clients, the paper's CNN, 3 in flight, 12 updates, an evaluation every 4.
TINY = [
    *synthetic(480, 200),
    "dataset.synthetic.noise=2.0",
    "partition.num_clients=6",
    "partition.min_samples=5",
    "model.name=cnn",
    "client.local_epochs=1",
    "client.batch_size=32",
    "client.lr=0.003",
    "federation.concurrency=3",
    "federation.max_updates=12",
    "federation.eval_every=4",
    *QUIET,
]
