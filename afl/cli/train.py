"""``afl-train``: one federated run (``python scripts/train.py`` is the same command)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from afl.cli import USER_ERRORS, presets_epilog, report

DESCRIPTION = """\
Train one federated run: the defaults, then the preset experiment=NAME, then key=value overrides.

Prints the run's summary; writes config.yaml, metrics.csv, summary.json (and the W&B run) in its
output_dir. Bad input exits with status 2 and one line naming the key; nothing is written.

examples:
  %(prog)s experiment=demo
  %(prog)s experiment=fmnist server.aggregator.name=fedbuff federation.concurrency=8
  %(prog)s experiment=demo --show-config federation.concurrency=3
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=presets_epilog(),
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="config overrides, e.g. experiment=demo client.lr=3e-4 (see configs/defaults.yaml)",
    )
    p.add_argument("--show-config", action="store_true", help="print the resolved config and exit")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_intermixed_args(argv)
    from afl.config import load_config, to_yaml

    try:
        cfg = load_config(args.overrides)
        if args.show_config:
            print(to_yaml(cfg), end="")
            return 0
        from afl.experiments.run import run  # torch and Lightning: only once there is something to run

        result = run(cfg)
    except USER_ERRORS as err:
        return report(err)
    print(json.dumps(result.summary, indent=1))
    return 0


if __name__ == "__main__":  # python -m afl.cli.train
    sys.exit(main())
