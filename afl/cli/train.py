"""``afl-train``: one federated run (``python scripts/train.py`` is the same command)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from afl.cli import USER_ERRORS, presets_epilog, report

DESCRIPTION = """\
Train one federated run of an arm: the defaults, the preset experiment=NAME, the arm=NAME (its rule, then
the step sizes the preset selected for it), then key=value overrides. It is exactly the run that
`afl-compare experiment=NAME --arms ARM --seeds S` makes for that arm and seed.

Without arm=, the preset's arm (afl-released by default); naming a rule without arm= runs that rule's own
arm: server.aggregator.name=fedbuff is plain FedBuff (the fedbuff arm), federation.mode=sync is sync.
arm=A together with another aggregator or mode than A's is refused. `afl-compare --help` lists the arms.

Prints the run's summary; writes config.yaml, metrics.csv, summary.json (and the W&B run: job type = the
arm) in its output_dir. Bad input exits with status 2 and one line naming the key; nothing is written.

examples:
  %(prog)s                                             # the offline digits, the default arm
  %(prog)s experiment=demo arm=afl-later seed=1
  %(prog)s experiment=fmnist_small arm=fedbuff federation.concurrency=8
  %(prog)s experiment=demo arm=sync --show-config
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
        from afl.experiments.components import build_components

        components = build_components(cfg)  # light: a bad option value answers before torch is imported
        if args.show_config:
            print(to_yaml(cfg), end="")
            return 0
        from afl.experiments.run import run  # torch and Lightning: only once there is something to run

        result = run(cfg, components=components)
    except USER_ERRORS as err:
        return report(err)
    print(json.dumps(result.summary, indent=1))
    return 0


if __name__ == "__main__":  # python -m afl.cli.train
    sys.exit(main())
