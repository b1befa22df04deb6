"""``afl-compare``: AFL against synchronous FedAvg, arms × seeds (``python scripts/compare.py`` too)."""

from __future__ import annotations

import argparse
import shlex
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from afl.cli import USER_ERRORS, ints, presets_epilog, report
from afl.experiments.compare import ARMS, DEFAULT_ARMS, DEFAULT_TARGET_FRACTION

DESCRIPTION = """\
Compare AFL with synchronous FedAvg, fairly: arms x seeds, step sizes chosen on validation data.

Positional arguments are overrides: key=value for every arm, ARM:key=value for one arm. Writes
comparison.md / .json / .png (and selection.json with --grid) in the comparison's folder.

examples:
  %(prog)s experiment=demo --seeds 0,1,2
  %(prog)s experiment=fmnist --arms afl,afl-nolr,sync --seeds 0,1,2
  %(prog)s experiment=demo --grid client.lr=1e-3,3e-3,1e-2 \\
      --grid server.aggregator.server_lr=0.1,0.2,0.4 --select-seeds 0
"""


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def _names(text: str) -> list[str]:
    return [x for x in text.split(",") if x]


def arms_epilog() -> str:
    """The arms and the source each one's rule follows."""
    width = max(map(len, ARMS))
    indent = " " * (width + 4)
    lines = [
        textwrap.fill(arm.source, 100, initial_indent=f"  {name:<{width}}  ", subsequent_indent=indent)
        for name, arm in ARMS.items()
    ]
    return (
        "arms (afl, afl-released, afl-later: the three readings of the paper's learning rate):\n"
        + "\n".join(lines)
    )


def add_launch_options(p: argparse.ArgumentParser) -> None:
    """``--jobs`` and ``--launcher ray`` with its options: where a comparison's or sweep's runs run."""
    p.add_argument(
        "--jobs",
        type=_positive,
        default=1,
        metavar="N",
        help="runs at once, in worker processes that stay alive across runs (default: 1); the same files",
    )
    p.add_argument(
        "--launcher",
        choices=("local", "ray"),
        default="local",
        help="local: here (--jobs); ray: each run a Ray task on a cluster (docs/cluster.md)",
    )
    p.add_argument(
        "--ray-address",
        default=None,
        metavar="ADDR",
        help="the cluster (default: RAY_ADDRESS, else a local one)",
    )
    p.add_argument(
        "--run-cpus", type=float, default=1.0, metavar="C", help="CPUs each run reserves on Ray (default: 1)"
    )
    p.add_argument(
        "--run-gpus",
        type=float,
        default=0.0,
        metavar="G",
        help="GPUs each run reserves on Ray: 0.25 = four runs a GPU",
    )
    p.add_argument(
        "--retries", type=int, default=1, metavar="K", help="a run whose Ray worker died runs again K times"
    )


def add_format_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--format",
        choices=("png", "pdf", "svg"),
        default="png",
        help="the figures' file type besides PNG (default: %(default)s)",
    )


def launcher_of(args: argparse.Namespace) -> Any:
    """The Ray launcher the options ask for, or None."""
    if args.launcher != "ray":
        return None
    from afl.experiments.parallel import RayLauncher

    return RayLauncher(args.ray_address, args.run_cpus, args.run_gpus, args.retries)


def parser() -> argparse.ArgumentParser:
    """The command line of ``afl-compare``."""
    p = argparse.ArgumentParser(
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"{arms_epilog()}\n{presets_epilog()}",
    )
    _add_run_options(p)
    _add_result_options(p)
    add_launch_options(p)
    add_format_option(p)
    p.add_argument(
        "--target-fraction",
        type=float,
        default=DEFAULT_TARGET_FRACTION,
        help="without --target: this fraction of the best arm's mean final accuracy (default: %(default)s)",
    )
    return p


def _add_run_options(p: argparse.ArgumentParser) -> None:
    """The overrides and the options that choose the runs: arms, seeds, and the step-size grid."""
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="key=value (every arm) or ARM:key=value (one arm); keys in configs/defaults.yaml",
    )
    p.add_argument(
        "--arms",
        type=_names,
        default=None,
        metavar="A,B",
        help=f"comma-separated arms to run (default: {','.join(DEFAULT_ARMS)}, and the preset's own arms)",
    )
    p.add_argument("--seeds", type=ints, default=[0], metavar="0,1,2", help="seeds (default: 0)")
    p.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="[ARM:]KEY=V1,V2",
        help="a step-size axis to select on validation accuracy (repeatable); needs dataset.val_fraction > 0",
    )
    p.add_argument(
        "--select-seeds",
        type=ints,
        default=None,
        metavar="0,1",
        help="seeds for selection (default: the first of --seeds)",
    )


def _add_result_options(p: argparse.ArgumentParser) -> None:
    """The options on the results: the target, reading a finished folder again, a dry run, keeping a copy."""
    p.add_argument("--target", type=float, default=None, help="target test accuracy for time-to-target")
    p.add_argument(
        "--from",
        dest="from_dir",
        default=None,
        metavar="DIR",
        help="print the table of a finished comparison folder again (another --target); runs nothing",
    )
    p.add_argument(
        "--budgets",
        type=ints,
        default=None,
        metavar="300,600,900",
        help="with --from: the plateau rule on a comparison of long runs, each cut at these budgets "
        "(client updates): headline and late rise per arm and budget, and the budget the rule chooses",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="the runs, their client steps and a time estimate here (one short calibration run); run nothing",
    )
    p.add_argument(
        "--keep",
        default=None,
        metavar="DIR",
        help="then copy the comparison's folder to DIR without models, checkpoints, W&B folders and figures "
        "(e.g. results/NAME, kept under version control; --from DIR reads it back); with --from, a "
        "comparison stopped part-way is kept too (its finished runs: running it into DIR continues it)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    given = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_intermixed_args(given)
    from afl.experiments.compare import compare, format_table, preset_snippet, resummarise  # torch: lazily

    if args.from_dir is not None:
        stopped = Path(args.from_dir) / "plan.json"
        if args.keep and stopped.is_file() and not stopped.with_name("comparison.json").is_file():
            return _keep(args.from_dir, args.keep)  # stopped part-way: its finished runs, to continue later
        try:
            again = resummarise(args.from_dir, target=args.target, target_fraction=args.target_fraction)
        except USER_ERRORS as err:
            return report(err)
        print(format_table(again))
        if args.budgets:
            from afl.experiments.compare import finished_runs, format_budgets

            print("\n" + format_budgets(finished_runs(args.from_dir), args.budgets))
        return _keep(args.from_dir, args.keep)
    common = {"grid": args.grid, "select_seeds": args.select_seeds, "jobs": args.jobs}
    if args.dry_run:
        from afl.experiments.compare import dry_run

        try:
            print(dry_run(args.overrides, args.arms, args.seeds, **common))
        except USER_ERRORS as err:
            return report(err)
        return 0
    try:
        result, selection = compare(
            args.overrides,
            args.arms,
            args.seeds,
            **common,
            target=args.target,
            target_fraction=args.target_fraction,
            formats=[args.format],
            launcher=launcher_of(args),
        )
    except USER_ERRORS as err:
        return report(err)
    if selection is not None:
        command = "afl-compare " + shlex.join(given)
        print("\nSelected by validation accuracy (paste into the preset to reuse):\n")
        print(preset_snippet(selection, command))
    print()
    print(format_table(result))
    print(f"\nfolder: {result.output_dir}  (comparison.md, comparison.json, comparison.png)")
    return _keep(result.output_dir, args.keep)


def _keep(folder: str | Path, dest: str | None) -> int:
    """``--keep DEST``: the folder's small files copied there (0), or nothing to do."""
    if dest is None:
        return 0
    from afl.experiments.metrics import keep

    written = keep(folder, dest)
    print(f"kept: {len(written)} files in {dest} (no models, checkpoints, W&B folders or figures)")
    return 0


if __name__ == "__main__":  # python -m afl.cli.compare
    sys.exit(main())
