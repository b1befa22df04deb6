"""Train one federated run: ``python scripts/train.py [experiment=NAME] [key=value ...]``.

Prints the run's summary; writes config.yaml, metrics.csv, summary.json (and the W&B run) in its
output_dir. Bad input exits with status 2 and one line naming the key.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from afl.cli import usage
from afl.config import load_config, to_yaml
from afl.errors import ConfigError
from afl.run import run


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(usage("scripts/train.py"))
        return 0
    show = "--show-config" in args
    args = [a for a in args if a != "--show-config"]
    try:
        cfg = load_config(args)
        if show:
            print(to_yaml(cfg), end="")
            return 0
        result = run(cfg)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result.summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
