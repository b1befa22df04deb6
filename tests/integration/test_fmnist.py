"""Real data: Fashion-MNIST (Debian's dataset-fashion-mnist), C=10, Dirichlet(0.5), LeNet-5.

Slow (about two minutes each on 2 cores); CI runs them. They skip, saying why, where the data is missing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from afl.config import load_config
from afl.data.torchvision_sets import DEBIAN_FASHION_MNIST_DIR
from afl.experiments.run import run

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not DEBIAN_FASHION_MNIST_DIR.is_dir(),
        reason="Debian's dataset-fashion-mnist is not installed: apt-get install dataset-fashion-mnist",
    ),
]

# Measured here (seed 0, 20k training samples less the preset's 10% validation split, 240 updates, the
# preset's γ0 = 1e-3): AFL (paper rules) 0.7302, sync 0.8566 final test accuracy (chance: 0.10). The floors
# sit three points below: on another CPU kind the float32 trajectory differs in the last bits, which moves
# these accuracies by well under that; a larger drop is a regression.
FLOORS = {"afl": 0.70, "sync": 0.83}


@pytest.mark.parametrize(
    ("arm", "overrides"),
    [
        (
            "afl",
            [
                "federation.mode=async",
                "server.aggregator.name=afl",
                "server.lr_schedule.name=paper",
            ],
        ),
        (
            "sync",
            ["federation.mode=sync", "server.aggregator.name=fedavg", "server.lr_schedule.name=constant"],
        ),
    ],
)
def test_afl_and_sync_both_learn_fashion_mnist(arm: str, overrides: list[str], tmp_path: Path) -> None:
    cfg = load_config(
        [
            "experiment=fmnist",
            f"dataset.root={tmp_path / 'data'}",
            "dataset.train_subset=20000",
            "dataset.test_subset=5000",
            "federation.max_updates=240",
            "federation.eval_every=40",
            "logging.wandb.mode=disabled",
            "logging.progress=false",
            f"output_dir={tmp_path / 'run'}",
            *overrides,
        ]
    )
    result = run(cfg)
    s = result.summary
    print(
        f"{arm}: final {s['final_test_accuracy']:.4f} best {s['best_test_accuracy']:.4f} "
        f"sim {s['sim_time']:.0f}s wall {s['wall_time_s']:.0f}s"
    )
    assert s["dataset"] == "fashion_mnist" and s["client_updates"] == 240
    assert s["final_test_accuracy"] > FLOORS[arm]
    first = result.history[0]["test_accuracy"]
    assert s["best_test_accuracy"] > first + 0.05  # it learned over the run, not only at the start
