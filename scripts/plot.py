"""Plot finished runs side by side: ``python scripts/plot.py RUN_DIR [RUN_DIR ...] [--out FILE]``.

Each RUN_DIR is a run's output_dir (with metrics.csv, summary.json, config.yaml), e.g. two runs of
scripts/train.py with different aggregators. Writes test accuracy against simulated time and against
client updates (default: runs.png in the current folder).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from afl.compare import describe, load_run, plot_curves


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", type=Path, help="run output folders")
    parser.add_argument("--out", type=Path, default=Path("runs.png"), help="the image to write")
    args = parser.parse_args(argv)
    curves, title = {}, ""
    try:
        for run_dir in args.runs:
            summary, history, config = load_run(run_dir)
            label = f"{summary['algorithm']} ({summary['mode']}, seed {summary['seed']})"
            while label in curves:
                label += "'"
            curves[label] = history
            title = title or describe(config)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    plot_curves(curves, args.out, title=title)
    print(f"plot: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
