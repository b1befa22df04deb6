"""``afl-bench``: benchmarks (``python scripts/bench.py`` is the same command)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

DESCRIPTION = """\
Benchmarks, measured side by side in one run (this machine is shared and noisy: compare ratios).

1. Client job: a Lightning Trainer per job vs a plain PyTorch loop doing the same steps.
2. Executors: a short federated run with 2 worker threads vs 1 vs serial (same results, other speed).
3. Torch intra-op threads for one job: 1 vs 2.
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer repeats and updates")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    import torch

    from afl.cli.benchmarks import bench_client, bench_executors, bench_torch_threads

    repeat = 2 if args.quick else 5
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} intra-op thread per job")
    bench_client("cnn", 8, 300, 2, repeat)  # a demo-sized job (digits client, I=2)
    bench_client("lenet", 28, 2000, 1, repeat)  # a Fashion-MNIST-sized job
    bench_client("cnn", 28, 500, 1, repeat)  # the paper's CNN at 28x28
    bench_executors(60 if args.quick else 150)
    bench_torch_threads(repeat)
    return 0
