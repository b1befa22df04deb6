"""``afl-dashboard``: the AFL-vs-sync W&B dashboard of a comparison or sweep (``python scripts/dashboard.py``
is the same command)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from afl.cli import report
from afl.errors import ConfigError

DESCRIPTION = """\
Build the AFL-vs-sync dashboard of a comparison or sweep folder: a W&B workspace view and a W&B report of
its runs' group (test accuracy against simulated time and against client updates, one line per arm with
a band over seeds; test loss; ||grad L||^2 on a log scale; the server learning rate; staleness
histograms; the results table), made with wandb-workspaces.

Online (--online, or runs logged with logging.wandb.mode=online) it saves both to W&B and prints their
URLs; upload offline runs first (afl-sync FOLDER, or wandb sync). Otherwise, or when saving fails, it
writes their specification to FOLDER/dashboard.json and says so in one line. Either way it draws the
panels from the local run files into a preview beside the specification (dashboard.png).

examples:
  %(prog)s runs/demo/compare-20250101-120000
  %(prog)s runs/sweeps/concurrency --online
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", type=Path, metavar="FOLDER", help="a comparison's or a sweep's folder")
    p.add_argument("--online", action="store_true", help="save the view and the report to W&B")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="FILE",
        help="where to write the specification (default: FOLDER/dashboard.json; the preview goes beside it)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.out is not None and not args.out.parent.is_dir():
        return report(ConfigError("--out", f"no folder {args.out.parent} to write {args.out.name} in"))
    from afl.experiments.dashboard import make_dashboard

    try:
        made = make_dashboard(args.folder, online=args.online, out=args.out)
    except ConfigError as err:
        return report(err)
    if made.not_saved is not None:
        print(
            f"dashboard: not saved to W&B ({made.not_saved}); its specification is in {made.spec_path}, "
            f"a preview in {made.preview_path}"
        )
        return 0
    for what, url in made.urls.items():
        print(f"{what}: {url}")
    print(f"specification: {made.spec_path}, preview: {made.preview_path}")
    return 0


if __name__ == "__main__":  # python -m afl.cli.dashboard
    sys.exit(main())
