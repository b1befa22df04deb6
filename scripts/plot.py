"""Plot finished runs, one curve per arm (mean over seeds, ± 1 std): ``python scripts/plot.py RUN_DIR ...``
(``afl-plot``)."""

import sys

from afl.cli.plot import main

if __name__ == "__main__":
    sys.exit(main())
