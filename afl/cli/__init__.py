"""The command lines: ``afl-train``, ``afl-compare``, ``afl-sweep``, ``afl-plot``, ``afl-bench``
(``[project.scripts]``).

Each submodule has ``parser()`` and ``main(argv=None) -> int``; ``scripts/X.py`` are thin wrappers
around them. ``key=value`` overrides are positional arguments and mix freely with options
(``parse_intermixed_args``). Bad input exits with status 2 and one line ``error: KEY: message``.

Printing ``--help`` stays light: only ``afl.config`` (OmegaConf) is imported to list the presets; the run
machinery (torch, Lightning) is imported inside ``main`` after the arguments are parsed. So does a config
error (about 0.3 s): the config's checks import no torch or Lightning (registries list names lazily, see
:mod:`afl.registry`); only client callbacks, when listed, import Lightning to check their options, and the
checks that need the data (files, sizes, the partition) wait until the run loads it.
"""

from __future__ import annotations

import argparse
import sys

from afl.errors import ConfigError, OutOfMemory

KEYS_HINT = "keys: configs/defaults.yaml lists every key with its default and meaning."


def presets_epilog() -> str:
    """The presets (``configs/experiment/*.yaml``) and where the keys are documented, for ``--help``."""
    from afl.config import experiments

    return f"experiments: {', '.join(experiments())}\n{KEYS_HINT}"


#: What a command answers with one line instead of a traceback: a user's mistake (exit 2), or settings
#: that do not fit the machine's memory (exit 3; the run keeps its last checkpoint).
USER_ERRORS = (ConfigError, OutOfMemory)


def report(err: ConfigError | OutOfMemory) -> int:
    """Print a user's mistake, or a job out of memory, as one line on stderr; the exit status for it
    (2, or 3 for out of memory)."""
    print(f"error: {err}", file=sys.stderr)
    return 3 if isinstance(err, OutOfMemory) else 2


def ints(text: str) -> list[int]:
    """An argparse type: comma-separated integers (``--seeds 0,1,2``)."""
    try:
        return [int(x) for x in text.split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
