"""Compare AFL with synchronous FedAvg: ``python scripts/compare.py [experiment=NAME] [key=value ...]``.

Runs every arm (default: afl, afl-const, sync; pick with ``--arms=afl,sync``) on the same config and
seed, prints a table and writes comparison.png / comparison.json.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from afl.cli import usage
from afl.compare import ARMS, compare, format_table
from afl.errors import ConfigError


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(usage("scripts/compare.py"))
        return 0
    arms = list(ARMS)
    for a in [a for a in args if a.startswith("--arms=")]:
        arms = [x for x in a.split("=", 1)[1].split(",") if x]
        args.remove(a)
    try:
        result = compare(args, arms)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print()
    print(format_table(result.table, result.target_accuracy))
    print(f"\nplot: {result.output_dir / 'comparison.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
