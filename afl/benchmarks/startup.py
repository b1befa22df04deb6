"""``afl-bench`` key ``startup_s``: fresh interpreters, timed to the end of what they are timed for."""

from __future__ import annotations

import functools
import subprocess
import sys
from collections.abc import Callable

from afl.benchmarks.timing import median, timed

#: Fresh interpreters timed by :func:`bench_startup`: their arguments and the exit status that means
#: they did what they are timed for (a config error exits 2).
STARTUP: dict[str, tuple[list[str], int]] = {
    "help": (["-m", "afl.cli.train", "--help"], 0),
    "config_error": (["-m", "afl.cli.train", "client.lr=-1"], 2),
    # what a run imports before it starts (torch, Lightning, ...)
    "import_run": (["-c", "import afl.experiments.run"], 0),
}

Done = subprocess.CompletedProcess[str]


def _interpreter(args: list[str]) -> Done:
    """A fresh interpreter with ``args``, to its exit."""
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, check=False)


def _exits_with(expected: int) -> Callable[[Done], str | None]:
    """A check for :func:`~afl.benchmarks.timing.timed`: the interpreter exited with ``expected``."""

    def check(done: Done) -> str | None:
        if done.returncode == expected:
            return None
        last = (done.stderr.strip().splitlines() or ["(nothing on stderr)"])[-1]
        return f"exit {done.returncode}, expected {expected}: {last}"

    return check


def bench_startup(repeat: int, commands: dict[str, tuple[list[str], int]] | None = None) -> dict[str, float]:
    """Wall seconds of fresh interpreters: ``--help``, a config error, importing the run machinery.

    Raises:
        BenchmarkFailed: a command exited with another status than the one it is timed for.
    """
    commands = STARTUP if commands is None else commands
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(repeat):
        for name, (args, expected) in commands.items():
            once = functools.partial(_interpreter, args)
            times[name].append(timed(once, f"startup {name}", check=_exits_with(expected))[0])
    return {name: median(t) for name, t in times.items()}
