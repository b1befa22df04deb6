"""``afl-bench``: benchmarks (``python scripts/bench.py`` is the same command)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

DESCRIPTION = """\
Benchmarks, measured side by side in one run, interleaved, medians over repeats (this machine is shared
and noisy: compare ratios, not seconds). Writes with --json:

  overhead_ratio       a federated run / a plain PyTorch loop doing the same local steps on the same shards
                       (same model, batch size, Adam, torch threads): LeNet on 28x28 with 600-sample shards,
                       and the demo
  per_job_overhead_ms  (federated run - plain loop) / jobs, same settings
  worker_speedup       a run on 1 worker thread / the same run on 2 (identical results)
  scale                100,000 clients, 1,000 in flight (1k, 10k, 100k clients): server-side ms per arrival
                       and peak resident memory, each point in a fresh interpreter
  startup_s            fresh interpreters: --help, a config error, importing the run machinery
  jobs                 a comparison of 8 short demo runs with --jobs 2 / the same with --jobs 1 (same results)
  client_job           one client job, a Lightning Trainer vs a plain loop

With --device cuda (or cpu), instead: device_runs, per model (ResNet-20 on 3x32x32, the paper's CNN and
LeNet on 28x28, one local epoch a job): ms per local step of whole runs on that device with 1 and 5 worker
threads (and 5 Ray actors sharing the GPU, where Ray is installed) against a plain PyTorch loop doing the
same steps there, their ratio, and the peak GPU memory; compiled_runs: whole runs with the client step
compiled (trainer.compile=reduce-overhead; default on the CPU) beside eager ones, ResNet-20 and the paper's
CNN, and the first compilation's cost; cohort: whole runs with federation.executor=cohort
against threads (paper_cifar10 on synthetic 3x32x32, sync and async, J = 5; LeNet with 100 clients in
flight), and cohort_steps: the stacked step alone by cohort size, cuDNN's autotuner off and on.
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--quick", action="store_true", help="fewer repeats and updates (about 3 minutes on a quiet machine)"
    )
    p.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default=None,
        help="run only the device benchmark, on this device",
    )
    p.add_argument(
        "--cohort", action="store_true", help="with --device: only the cohort executor's benchmarks"
    )
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="write the results to PATH")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from afl.benchmarks import run_all, run_device  # torch and Lightning: after the arguments are parsed

    results = (
        run_all(quick=args.quick) if args.device is None else run_device(args.device, args.quick, args.cohort)
    )
    text = json.dumps(results, indent=1)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
        print(f"results: {args.json}")
    else:
        print(text)
    return 0


if __name__ == "__main__":  # python -m afl.cli.bench
    sys.exit(main())
