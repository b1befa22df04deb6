"""Train one federated run: ``python scripts/train.py [experiment=NAME] [key=value ...]`` (``afl-train``)."""

import sys

from afl.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
