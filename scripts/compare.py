"""Compare AFL with synchronous FedAvg, fairly: arms × seeds, step sizes chosen on validation data.

    python scripts/compare.py experiment=demo --seeds 0,1,2
    python scripts/compare.py experiment=fmnist --arms afl,afl-nolr,sync --seeds 0,1,2
    python scripts/compare.py experiment=demo --grid client.lr=1e-3,3e-3,1e-2 \\
        --grid server.aggregator.server_lr=0.1,0.2,0.4 --select-seeds 0

Positional arguments are overrides: ``key=value`` for every arm, ``ARM:key=value`` for one arm. Writes
comparison.md / .json / .png (and selection.json with --grid) in the comparison's folder.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from afl.compare import ARMS, DEFAULT_ARMS, DEFAULT_TARGET_FRACTION, compare, format_table, preset_snippet
from afl.config import experiments
from afl.errors import ConfigError


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _names(text: str) -> list[str]:
    return [x for x in text.split(",") if x]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="compare.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"experiments: {', '.join(experiments())}\narms: {', '.join(ARMS)}\n"
        "keys: configs/defaults.yaml lists every key with its default and meaning.",
    )
    p.add_argument("overrides", nargs="*", help="key=value (every arm) or ARM:key=value (one arm)")
    p.add_argument(
        "--arms", type=_names, default=list(DEFAULT_ARMS), help="arms to run (default: %(default)s)"
    )
    p.add_argument("--seeds", type=_ints, default=[0], help="seeds, e.g. 0,1,2 (default: 0)")
    p.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="[ARM:]KEY=V1,V2",
        help="a step-size axis to select on validation accuracy (repeatable); needs dataset.val_fraction > 0",
    )
    p.add_argument(
        "--select-seeds", type=_ints, default=None, help="seeds for selection (default: the first)"
    )
    p.add_argument("--target", type=float, default=None, help="target test accuracy for time-to-target")
    p.add_argument(
        "--target-fraction",
        type=float,
        default=DEFAULT_TARGET_FRACTION,
        help="without --target: this fraction of the best arm's mean final accuracy (default: %(default)s)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_intermixed_args(argv)
    try:
        result, selection = compare(
            args.overrides,
            args.arms,
            args.seeds,
            grid=args.grid,
            select_seeds=args.select_seeds,
            target=args.target,
            target_fraction=args.target_fraction,
        )
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if selection is not None:
        command = "python scripts/compare.py " + " ".join(sys.argv[1:] if argv is None else argv)
        print("\nSelected by validation accuracy (paste into the preset to reuse):\n")
        print(preset_snippet(selection, command))
    print()
    print(format_table(result))
    print(f"\nfolder: {result.output_dir}  (comparison.md, comparison.json, comparison.png)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
