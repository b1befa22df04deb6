"""Benchmarks: ``python scripts/bench.py [--quick] [--json PATH]`` (``afl-bench``)."""

import sys

from afl.cli.bench import main

if __name__ == "__main__":
    sys.exit(main())
