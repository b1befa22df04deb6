"""``afl-sync``: upload the offline W&B runs of run folders, comparisons or sweeps (``scripts/sync.py``).

Finds every ``wandb/offline-run-*`` folder under the given paths (a run folder, a comparison's or a
sweep's folder, or ``runs/`` as a whole) and hands them to ``wandb sync`` in one call, so that it works
in any shell: no ``**`` glob needed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

DESCRIPTION = """\
Upload offline W&B runs: every wandb/offline-run-* folder under the given paths (run folders, comparison
or sweep folders, or runs/ as a whole), in one `wandb sync` (log in once first: `wandb login`).

examples:
  %(prog)s runs/demo/compare-20261207-120000      # a comparison: its runs and its own summary run
  %(prog)s runs/sweeps/concurrency --dry-run      # list what would be uploaded
  %(prog)s runs                                   # everything
"""


def offline_runs(paths: Sequence[Path]) -> list[Path]:
    """The offline W&B run folders under ``paths`` (each path itself, if it is one), sorted, each once."""
    found: set[Path] = set()
    for path in paths:
        if path.name.startswith("offline-run-") and path.is_dir():
            found.add(path)
        found.update(p for p in path.rglob("offline-run-*") if p.is_dir() and p.parent.name == "wandb")
    return sorted(found)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="run, comparison or sweep folders")
    p.add_argument("--dry-run", action="store_true", help="list the offline runs found; upload nothing")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    missing = [str(p) for p in args.paths if not p.exists()]
    if missing:
        print(f"error: no such folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    runs = offline_runs(args.paths)
    if not runs:
        print(f"error: no offline W&B runs under {', '.join(map(str, args.paths))}", file=sys.stderr)
        return 2
    if args.dry_run:
        print("\n".join(map(str, runs)))
        print(f"{len(runs)} offline run(s); without --dry-run: wandb sync of each")
        return 0
    return subprocess.call([sys.executable, "-m", "wandb", "sync", *map(str, runs)])


if __name__ == "__main__":  # python -m afl.cli.sync
    sys.exit(main())
