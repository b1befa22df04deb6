"""Run a named sweep: ``python scripts/sweep.py NAME ...`` (``afl-sweep``)."""

import sys

from afl.cli.sweep import main

if __name__ == "__main__":
    sys.exit(main())
