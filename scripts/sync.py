"""Upload offline W&B runs: ``python scripts/sync.py PATH ...`` (``afl-sync``)."""

import sys

from afl.cli.sync import main

if __name__ == "__main__":
    sys.exit(main())
