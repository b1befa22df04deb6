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


#: What names a run's rule on a command line (afl.arms): a test that names none runs the arm ``afl``.
RULE_KEYS = ("arm=", "server.aggregator.name=", "federation.mode=")


def afl_unless_named(overrides: list[str] | tuple[str, ...]) -> list[str]:
    """``overrides`` with ``arm=afl`` first unless they name a rule: the loop's tests were written for our
    reading of the paper's AFL (one arrival per step, the paper's LR over rounds), not the defaults' arm."""
    named = any(o.lstrip("+").startswith(RULE_KEYS) for o in overrides)
    return list(overrides) if named else ["arm=afl", *overrides]
