"""Compare AFL with synchronous FedAvg: ``python scripts/compare.py ...`` (``afl-compare``)."""

import sys

from afl.cli.compare import main

if __name__ == "__main__":
    sys.exit(main())
