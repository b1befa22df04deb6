"""The W&B dashboard of a comparison or sweep: ``python scripts/dashboard.py FOLDER`` (``afl-dashboard``)."""

import sys

from afl.cli.dashboard import main

if __name__ == "__main__":
    sys.exit(main())
