"""``afl-sweep``: a named grid of overrides × arms × seeds (``python scripts/sweep.py`` too)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from afl.cli import USER_ERRORS, ints, report
from afl.cli.compare import add_format_option, add_launch_options, launcher_of

DESCRIPTION = """\
Run a sweep: configs/sweep/NAME.yaml (or a YAML path) gives the preset, the arms, the grid of overrides
and the seeds. Runs already complete in the output folder are skipped, runs with a checkpoint resumed:
run the same command again to continue an interrupted sweep.

Writes results.csv (one row per run), results.md (per cell: mean ± std over seeds), curves.png and
final.png in the output folder (default runs/sweeps/NAME).

examples:
  %(prog)s concurrency
  %(prog)s alpha --seeds 0 federation.max_updates=60     # a quick look
  %(prog)s baseline --results                             # the tables again, from finished runs
"""


def parser() -> argparse.ArgumentParser:
    from afl.experiments.sweep import sweeps

    p = argparse.ArgumentParser(
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"sweeps: {', '.join(sweeps())}",
    )
    p.add_argument("sweep", help="a name in configs/sweep/ or a path to a sweep YAML")
    p.add_argument(
        "overrides", nargs="*", metavar="key=value", help="overrides for every run (after the sweep's base)"
    )
    p.add_argument("--seeds", type=ints, default=None, metavar="0,1,2", help="seeds (default: the sweep's)")
    p.add_argument(
        "--out", type=Path, default=None, metavar="DIR", help="output folder (default: runs/sweeps/NAME)"
    )
    p.add_argument("--results", action="store_true", help="only write the results of the finished runs")
    p.add_argument(
        "--keep",
        type=Path,
        default=None,
        metavar="DIR",
        help="then copy the sweep's folder to DIR without models, checkpoints, W&B folders and figures "
        "(e.g. results/sweeps/NAME, under version control; --results --out DIR reads it back)",
    )
    add_launch_options(p)
    add_format_option(p)
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="list the runs (every config checked), their client steps and a time estimate here from one "
        "short calibration run; run nothing else",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_intermixed_args(argv)
    from afl.experiments.sweep import load_sweep, run_dir, run_sweep, write_results

    try:
        sweep = load_sweep(args.sweep, args.seeds, args.overrides)
        root = args.out if args.out is not None else Path("runs") / "sweeps" / sweep.name
        if args.dry_run:
            from afl.experiments.estimate import calibrate, describe

            configs = []
            for seed in sweep.seeds:
                for cell in sweep.cells:
                    print(f"{cell.name} seed {seed} -> {run_dir(root, cell, seed)}")
                    configs.append(sweep.config(cell, seed))
            print(describe({"sweep": configs}, calibrate(configs[0]), args.jobs))
            return 0
        if args.results:
            write_results(sweep, root, formats=[args.format])
        else:
            run_sweep(sweep, root, formats=[args.format], jobs=args.jobs, launcher=launcher_of(args))
    except USER_ERRORS as err:
        return report(err)
    print((root / "results.md").read_text(), end="")
    print(f"\nfolder: {root}  (results.csv, results.md, curves.png{', final.png' if sweep.axes else ''})")
    if args.keep is not None and args.keep.resolve() != root.resolve():
        from afl.experiments.metrics import keep

        written = keep(root, args.keep)
        print(f"kept: {len(written)} files in {args.keep} (no models, checkpoints, W&B or figures)")
    return 0


if __name__ == "__main__":  # python -m afl.cli.sweep
    sys.exit(main())
